"""Read a projection radiograph (CR/DX) DICOM into display-ready float32 pixels in [0, 1].

Unlike CT, a radiograph's stored values have no physical unit a model could rely on, so the
reader brings every file to one convention: 0 = least attenuation (black, as in MONOCHROME2),
1 = most. Decoding (JPEG baseline and the other compressed syntaxes) goes through pydicom's
installed pylibjpeg / Pillow plugins, via ``dxkit.io.dicom``.

Two scalings (``scaling=``):

- ``"bits"`` (default): stored value / (2**BitsStored − 1). The same physical file always maps
  the same way, 8-, 12- and 16-bit files of one image land on the same values, and nothing
  depends on tags that vendors fill in differently. Chosen as the default because the SIIM
  images (8-bit, no window) and most curated sets are already display-processed.
- ``"voi"``: the file's own VOI LUT sequence or WindowCenter/WindowWidth (first view) after
  its modality LUT, through pydicom; falls back to ``"bits"`` when the file has neither. Use it
  for "for processing" DX files whose raw range is much wider than the useful one.

MONOCHROME1 (bright = low) is inverted last, as the DICOM display pipeline does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

from dxkit.errors import InvalidScanError, UnsupportedFormatError
from dxkit.io.dicom import _decode as decode_stored_pixels
from dxkit.io.dicom import dataset_meta, open_dataset

logger = logging.getLogger(__name__)

Scaling = Literal["bits", "voi"]

# What a radiograph study needs, and no patient identity: no names, dates, sex, age or IDs
# (PatientID included — SIIM stores the same pseudonym in PatientName and PatientID).
RADIOGRAPH_META: tuple[str, ...] = (
    "SOPInstanceUID",
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "PresentationIntentType",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "LossyImageCompression",
    "NumberOfFrames",
)


@dataclass
class Radiograph:
    """One decoded radiograph: ``pixels`` float32 ``(H, W)`` in [0, 1] and PHI-free ``meta``.

    ``meta`` holds the ``RADIOGRAPH_META`` tags present in the file, ``TransferSyntaxUID`` and
    ``scaling`` (the scaling actually applied: ``"bits"`` or ``"voi"``).
    """

    pixels: np.ndarray
    meta: dict[str, Any]
    path: Path


def scale_by_bits(stored: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Stored values → [0, 1] over the full range that ``bits_stored`` allows."""
    top = float((1 << bits_stored) - 1)
    x = stored.astype(np.float32)
    if signed:
        x += np.float32(1 << (bits_stored - 1))
    # Values outside BitsStored (stray high bits) are clipped rather than wrapped.
    return np.clip(x / np.float32(top), 0.0, 1.0)


def scale_by_voi(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Stored values → [0, 1] through the file's VOI LUT or window; ``None`` when it has none."""
    if ds.get("VOILUTSequence"):
        # The LUT's output range is set by its descriptor's bit depth (PS3.3 C.11.2.1.1).
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        out = apply_voi(np.rint(apply_modality_lut(stored, ds)).astype(np.int64), ds)
        low, high = 0.0, float((1 << depth) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        out = apply_windowing(values, ds)
        # pydicom maps the window onto an output range that depends on the tags; sending
        # −∞ and +∞ through the same call gives that range for LINEAR, LINEAR_EXACT and SIGMOID.
        low, high = (float(v) for v in apply_windowing(np.array([-np.inf, np.inf]), ds))
    else:
        return None
    if not high > low:
        return np.zeros(stored.shape, dtype=np.float32)
    return np.clip((np.asarray(out, dtype=np.float32) - low) / np.float32(high - low), 0.0, 1.0)


def _check_layout(ds: Dataset, stored: np.ndarray, path: Path) -> None:
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UnsupportedFormatError(
            f"{path}: a radiograph must be greyscale, but SamplesPerPixel is "
            f"{ds.get('SamplesPerPixel')} ({ds.get('PhotometricInterpretation')}); convert it "
            "to MONOCHROME2 or read it with dxkit.io.dicom.read_dicom"
        )
    if stored.ndim != 2:
        raise UnsupportedFormatError(
            f"{path}: expected one 2-D frame, got pixel data of shape {stored.shape} "
            f"(NumberOfFrames {ds.get('NumberOfFrames', 1)}); split the frames first"
        )
    if ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedFormatError(
            f"{path}: PhotometricInterpretation {ds.get('PhotometricInterpretation')!r} is not a "
            "greyscale radiograph (MONOCHROME1/MONOCHROME2)"
        )


def read_radiograph(path: Path | str, *, scaling: Scaling = "bits") -> Radiograph:
    """Read a CR/DX DICOM file into float32 ``(H, W)`` pixels in [0, 1] and PHI-free metadata.

    Errors (``dxkit.errors``) name the file: missing, not DICOM, undecodable transfer syntax,
    colour or multi-frame data, non-finite values.
    """
    path = Path(path)
    if scaling not in ("bits", "voi"):
        raise InvalidScanError(f"{path}: unknown scaling {scaling!r}; use 'bits' or 'voi'")
    ds = open_dataset(path)
    stored = decode_stored_pixels(ds, path)
    _check_layout(ds, stored, path)
    meta = dataset_meta(ds, RADIOGRAPH_META)
    bits = int(ds.get("BitsStored") or stored.dtype.itemsize * 8)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    pixels = scale_by_voi(stored, ds) if scaling == "voi" else None
    if pixels is None:
        if scaling == "voi":
            logger.debug("%s: no VOI LUT or window; scaling by BitsStored", path.name)
        pixels = scale_by_bits(stored, bits, signed)
        meta["scaling"] = "bits"
    else:
        meta["scaling"] = "voi"
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = 1.0 - pixels
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise InvalidScanError(f"{path}: pixel data holds NaN or infinite values")
    return Radiograph(pixels=pixels, meta=meta, path=path)
