"""Read PNG/JPEG (any Pillow format) into float32 ``(C, H, W)`` in 0–255."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dxkit.errors import InvalidScanError, MissingFileError, UnsupportedFormatError


def read_raster(path: Path | str) -> np.ndarray:
    """Grey images → ``(1, H, W)``, colour → ``(3, H, W)``, float32 in 0–255.

    Alpha is dropped, palettes expanded, 16-bit grey rescaled to 0–255 (divided by 257).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such image file; check the path")
    try:
        with Image.open(path) as opened:
            opened.load()
            img: Image.Image = opened
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(img, dtype=np.float32)
                if array.max(initial=0) > 65535 or array.min(initial=0) < 0:
                    raise UnsupportedFormatError(
                        f"{path}: 32-bit integer image with values outside 0–65535"
                    )
                # 16-bit grey (Pillow may open it as "I"): 65535 → 255.
                return (array / 257.0)[None].astype(np.float32)
            if mode == "F":
                raise UnsupportedFormatError(
                    f"{path}: floating-point image (mode F); save it as .npy instead"
                )
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif mode in ("1", "LA"):
                img = img.convert("L")
            elif mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            array = np.asarray(img.convert("RGB") if img.mode == "RGBA" else img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidScanError(f"{path}: not a readable image ({exc})") from exc
    if array.ndim == 2:
        return array[None].astype(np.float32)
    return np.moveaxis(array, -1, 0).astype(np.float32)
