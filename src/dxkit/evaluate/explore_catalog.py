"""What the explorer reads a source into: a ``Catalog`` of entries (split, labels, patient
id per scan, plus a reader) and the ``Scan`` that reader returns, with a display tile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dxkit.errors import MissingFileError

UNIT_HU, UNIT_8BIT, UNIT_RAW = "HU", "pixel value (0-255)", "stored value"
VIEW_SIDE = 160  # montage tiles are at most this many pixels on a side


@dataclass
class Scan:
    """One read scan: intensities in ``unit`` (any shape), a display tile, PHI-free metadata."""

    values: np.ndarray
    unit: str
    view: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Catalog:
    """A source reduced to what the explorer needs: one entry per scan (image, file, exam)."""

    kind: str
    name: str
    path: Path
    item: str  # what one entry is: "image", "scan", "file", "exam"
    task: str | None
    label_names: list[str]
    class_names: list[str]
    splits: np.ndarray  # (N,) split name per entry
    labels: np.ndarray  # (N, L) float32, L = 0 without labels
    read: Callable[[int], Scan]
    groups: np.ndarray | None = None  # patient (or exam) ids; never written out as they are
    group_kind: str = "patient"
    fingerprints: Callable[[], np.ndarray] | None = None  # content keys for the duplicate check
    fingerprint_by: str = ""
    slices: dict[str, list[int]] = field(default_factory=dict)  # per plane: slices per series
    table: pd.DataFrame | None = None  # metadata table, PHI columns already dropped
    display: dict[str, np.ndarray] | None = None  # groups for histograms/montage (else labels)
    refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading scans


def plane_image(array: np.ndarray) -> np.ndarray:
    """The 2-D picture of a channel-first scan: middle slice of a volume, colour as (H, W, 3)."""
    a = np.asarray(array)
    if a.ndim == 4:
        a = a[:, a.shape[1] // 2]
    if a.ndim == 3:
        return np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a[0]
    return a


def view_tile(
    image: np.ndarray, unit: str, window: tuple[float, float] | None = None
) -> np.ndarray:
    """A uint8 display tile: 0-255 data as stored, CT through its window, anything else
    stretched between its 0.5 and 99.5 percentiles; shrunk to at most ``VIEW_SIDE`` px."""
    img = np.asarray(image, dtype=np.float32)
    if unit == UNIT_8BIT:
        lo, hi = 0.0, 255.0
    elif window is not None:
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:
        lo, hi = (float(v) for v in np.percentile(img, [0.5, 99.5]))
    tile = (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)
    scale = VIEW_SIDE / max(tile.shape[:2])
    if scale < 1:
        pil = Image.fromarray(tile)
        size = (max(1, round(tile.shape[1] * scale)), max(1, round(tile.shape[0] * scale)))
        tile = np.asarray(pil.resize(size, Image.Resampling.BILINEAR))
    return tile


def first_value(value: Any) -> float | None:
    if value is None:
        return None
    flat = np.atleast_1d(np.asarray(value, dtype=object))
    try:
        return float(flat[0]) if len(flat) else None
    except (TypeError, ValueError):
        return None


def read_dicom_scan(path: Path) -> Scan:
    """A DICOM file in modality units (HU for CT), shown through its own window when CT."""
    from dxkit.io.dicom import read_dicom
    from dxkit.preprocess.window import WINDOWS

    image = read_dicom(path)
    meta = image.meta
    colour = int(first_value(meta.get("SamplesPerPixel")) or 1) > 1
    array = image.pixels if colour else image.pixels[None]
    ct = str(meta.get("Modality", "")).upper() == "CT"
    window: tuple[float, float] | None = None
    if ct:
        center, width = first_value(meta.get("WindowCenter")), first_value(meta.get("WindowWidth"))
        window = WINDOWS["soft_tissue"]  # when the file names no usable window
        if center is not None and width is not None and width > 0:
            window = (center, width)
    unit = UNIT_HU if ct else UNIT_RAW
    return Scan(array, unit, view_tile(plane_image(array), unit, window), meta)


def read_file_scan(path: Path) -> Scan:
    """Any scan file ``read_scan`` knows; DICOM keeps its metadata and window."""
    from dxkit.io import SCAN_SUFFIXES, read_scan, sniff_format

    if not path.is_file():
        raise MissingFileError(f"{path}: listed scan does not exist; fix the table or the root")
    kind = SCAN_SUFFIXES.get(path.suffix.lower()) or sniff_format(path)
    if kind == "dicom":
        return read_dicom_scan(path)
    array = read_scan(path)
    unit = UNIT_8BIT if kind == "raster" else UNIT_RAW
    return Scan(array, unit, view_tile(plane_image(array), unit))


def file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
