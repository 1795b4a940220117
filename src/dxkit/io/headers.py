"""What a scan file holds without decoding its pixels: shape, channels, colour mode, modality.

Surveys of whole folders (``dxkit init``, the folder source's size choice) read thousands of
files; decoding each would take minutes, while Pillow, pydicom (``stop_before_pixels``) and
NumPy (``mmap_mode``) read only the header.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dxkit.errors import InvalidScanError, UnsupportedFormatError
from dxkit.io import SCAN_SUFFIXES, sniff_format

# Pillow modes that read_raster returns as 3 channels (alpha dropped, palettes expanded).
COLOUR_MODES = frozenset({"RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA", "RGBX"})


@dataclass(frozen=True)
class ScanHeader:
    """One file's layout as ``read_scan`` will return it (channel axis separate)."""

    path: Path
    kind: str  # dicom | numpy | raster
    spatial: tuple[int, ...]  # (H, W) or (D, H, W)
    channels: int
    mode: str  # Pillow mode, DICOM photometric interpretation or NumPy dtype
    modality: str | None = None  # DICOM Modality (CT, CR, MR...)
    has_patient_id: bool | None = None  # DICOM only: a non-empty PatientID
    patient_key: str | None = None  # one-way hash of a non-empty PatientID (never the id)

    @property
    def largest_side(self) -> int:
        return int(max(self.spatial))


def read_header(path: Path | str) -> ScanHeader:
    """The header of one scan file (PNG/JPEG/TIFF, DICOM, ``.npy``)."""
    path = Path(path)
    kind = SCAN_SUFFIXES.get(path.suffix.lower()) or sniff_format(path)
    if kind == "raster":
        try:
            with Image.open(path) as img:
                w, h = img.size
                mode = img.mode
        except (UnidentifiedImageError, OSError) as exc:
            raise InvalidScanError(f"{path}: not a readable image ({exc})") from exc
        return ScanHeader(path, kind, (h, w), 3 if mode in COLOUR_MODES else 1, mode)
    if kind == "dicom":
        from dxkit.io.dicom import open_dataset

        ds = open_dataset(path, stop_before_pixels=True)
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        spatial = (frames, rows, cols) if frames > 1 else (rows, cols)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        patient = str(ds.get("PatientID", "") or "").strip()
        return ScanHeader(
            path,
            kind,
            spatial,
            samples,
            str(ds.get("PhotometricInterpretation", "")),
            modality=str(ds.get("Modality", "")) or None,
            has_patient_id=bool(patient),
            patient_key=hashlib.sha256(patient.encode()).hexdigest()[:16] if patient else None,
        )
    if kind == "numpy" and path.suffix.lower() != ".npz":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InvalidScanError(f"{path}: not a readable .npy file ({exc})") from exc
        shape = tuple(int(s) for s in array.shape)
        if len(shape) == 4:
            return ScanHeader(path, kind, shape[1:], shape[0], str(array.dtype))
        return ScanHeader(path, kind, shape, 1, str(array.dtype))
    raise UnsupportedFormatError(
        f"{path}: unknown scan format (suffix {path.suffix!r}); dxkit reads DICOM, .npy and "
        "PNG/JPEG"
    )
