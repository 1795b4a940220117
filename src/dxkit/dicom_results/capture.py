"""Heatmaps as Secondary Capture images a PACS viewer can show, marked as what they are.

The overlay is drawn at a readable size with a band below it: the colour scale with its
ends labelled and what the scale means, and "NOT FOR DIAGNOSIS" burned into the pixels
(viewers drop header text; burned-in text survives every export). The header says so too
(BurnedInAnnotation, ImageComments, SeriesDescription).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dxkit.dicom_results.identity import MANUFACTURER, ModelIdentity, result_uid
from dxkit.dicom_results.sources import DicomOutputError, SourceRefs

# Dark-to-bright stops (inferno-like), the same as the web page's heatmap colours.
HEAT_STOPS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)
WARNING = "NOT FOR DIAGNOSIS"
MIN_WIDTH = 256  # small scans are enlarged (nearest neighbour) so the text stays legible
SERIES_NUMBER = 9901


def heat_colours(t: np.ndarray) -> np.ndarray:
    """0–1 values → RGB float32 ``(..., 3)`` along ``HEAT_STOPS``."""
    x = np.clip(t, 0.0, 1.0) * (len(HEAT_STOPS) - 1)
    i = np.minimum(x.astype(int), len(HEAT_STOPS) - 2)
    f = (x - i)[..., None]
    return HEAT_STOPS[i] * (1 - f) + HEAT_STOPS[i + 1] * f


def overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Grey uint8 ``(H, W)`` + 0–1 heatmap → RGB uint8 ``(H, W, 3)`` (weak evidence clear)."""
    alpha = (opacity * np.clip((heat - 0.2) / 0.8, 0.0, 1.0))[..., None]
    grey = np.repeat(image[..., None].astype(np.float32), 3, axis=-1)
    return np.rint((1 - alpha) * grey + alpha * heat_colours(heat)).astype(np.uint8)


def display_grey(slice_: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """One slice → uint8 grey: through a window (center, width), else its own range."""
    if window is not None:
        center, width = window
        unit = (slice_ - (center - width / 2)) / width
    else:
        lo, hi = float(slice_.min()), float(slice_.max())
        unit = (slice_ - lo) / (hi - lo) if hi > lo else np.zeros_like(slice_)
    return np.rint(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)


def orientation(iop: Sequence[float] | None) -> tuple[str, str] | None:
    """PatientOrientation letters from ImageOrientationPatient (dominant axis of each)."""
    if iop is None or len(iop) != 6:
        return None
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    out = []
    for vector in (iop[:3], iop[3:]):
        axis = int(np.argmax(np.abs(vector)))
        out.append(letters[axis][0] if vector[axis] > 0 else letters[axis][1])
    return out[0], out[1]


def with_scale(rgb: np.ndarray, scale_note: str) -> np.ndarray:
    """The overlay enlarged to at least ``MIN_WIDTH`` wide, above a band with the colour
    bar (0 … 1), ``scale_note`` and the warning."""
    factor = max(1, -(-MIN_WIDTH // rgb.shape[1]))
    big = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    width = big.shape[1]
    font = ImageFont.load_default()
    band = Image.new("RGB", (width, 44), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    bar = heat_colours(np.linspace(0.0, 1.0, width - 40))[None].repeat(10, axis=0)
    band.paste(Image.fromarray(np.rint(bar).astype(np.uint8)), (20, 4))
    draw.text((2, 3), "0", fill=(255, 255, 255), font=font)
    draw.text((width - 16, 3), "1", fill=(255, 255, 255), font=font)
    draw.text((4, 16), scale_note[: width // 6], fill=(255, 255, 255), font=font)
    draw.text((4, 29), WARNING, fill=(255, 64, 64), font=font)
    return np.concatenate([big, np.asarray(band)], axis=0)


def build_heatmap_capture(
    hd: Any,
    refs: SourceRefs,
    index: int,
    grey: np.ndarray,
    heat: np.ndarray,
    finding: str,
    method: str,
    scale_note: str,
    identity: ModelIdentity,
) -> Any:
    """A Secondary Capture of ``heat`` (0–1) over ``grey`` (uint8, one slice), in the study
    of ``refs.headers[index]`` (the slice it shows), as an RGB image."""
    ref = refs.headers[index]
    rgb = with_scale(overlay(grey, heat), scale_note)
    study = refs.study_uid
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ref,
            pixel_array=rgb,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=result_uid(identity, study, "heatmap-series"),
            series_number=SERIES_NUMBER,
            sop_instance_uid=result_uid(identity, study, "heatmap", finding, method),
            instance_number=1,
            manufacturer=MANUFACTURER,
            patient_orientation=orientation(ref.get("ImageOrientationPatient")) or ("L", "P"),
            series_description=f"dxkit heatmap {finding} - {WARNING}"[:64],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise DicomOutputError(f"the heatmap could not be written as DICOM: {err}") from None
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = (
        f"{WARNING}. {method} heatmap of {finding}; {scale_note}; {identity.label()}"[:10240]
    )
    return sc
