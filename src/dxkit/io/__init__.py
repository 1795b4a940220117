"""Read scans from disk: ``read_scan`` dispatches DICOM, NumPy and PNG/JPEG files.

Every reader returns float32, channel first, and raises ``dxkit.errors`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dxkit.errors import MissingFileError, UnsupportedFormatError

__all__ = ["SCAN_SUFFIXES", "read_scan", "sniff_format"]

SCAN_SUFFIXES = {
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".npy": "numpy",
    ".npz": "numpy",
    ".png": "raster",
    ".jpg": "raster",
    ".jpeg": "raster",
    ".tif": "raster",
    ".tiff": "raster",
    ".bmp": "raster",
}


def sniff_format(path: Path) -> str | None:
    """The format from the file's first bytes: 'dicom', 'numpy', 'raster' or None."""
    with path.open("rb") as fh:
        head = fh.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x93NUMPY") or head.startswith(b"PK\x03\x04"):
        return "numpy"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")):
        return "raster"
    return None


def read_scan(path: Path | str) -> np.ndarray:
    """One scan as float32 channel-first: ``(C, H, W)`` or ``(1, D, H, W)``.

    PNG/JPEG → ``(C, H, W)`` in 0–255; DICOM → ``(1, H, W)`` in modality units (HU for CT),
    ``(1, F, H, W)`` for multi-frame, ``(3, H, W)`` for colour; ``.npy`` 2-D → ``(1, H, W)``,
    3-D → ``(1, D, H, W)``, 4-D kept as ``(C, D, H, W)``. The suffix decides, the file's
    magic bytes decide for unknown suffixes.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such scan file; check the path")
    kind = SCAN_SUFFIXES.get(path.suffix.lower()) or sniff_format(path)
    if kind is None:
        raise UnsupportedFormatError(
            f"{path}: unknown scan format (suffix {path.suffix!r}); dxkit reads DICOM, "
            ".npy/.npz and PNG/JPEG"
        )
    if kind == "dicom":
        from dxkit.io.dicom import read_dicom

        image = read_dicom(path)
        if int(image.meta.get("SamplesPerPixel", 1)) > 1:
            return image.pixels  # colour (3, H, W)
        return image.pixels[None]  # (1, H, W), or (1, F, H, W) for multi-frame
    if kind == "numpy":
        from dxkit.io.arrays import read_npy

        array = read_npy(path).astype(np.float32, copy=False)
        return array if array.ndim == 4 else array[None]
    from dxkit.io.raster import read_raster

    return read_raster(path)
