"""One head-CT slice → the uint8 window channels of the training cache.

The single implementation of a cached slice, shared by the cache writer
(``dxkit.data.ct_cache``) and serving (``dxkit.preprocess.spec.CTRecipe.prepare``), so a
raw DICOM at serving time becomes exactly the array the model was trained on. NumPy and
OpenCV only (no torch), so cache workers start light.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from dxkit.preprocess.crop import Box, crop, resize, resize_area
from dxkit.preprocess.window import windows_uint8

Resize = Literal["area", "pillow"]


def ct_window_channels(
    hu: np.ndarray,
    box: Box,
    windows: list[tuple[float, float]],
    size: int,
    resize_with: Resize = "area",
) -> np.ndarray:
    """One HU slice → uint8 ``(len(windows), size, size)``: crop to ``box``, resize, window.

    The one implementation of a cached slice: the cache writer
    (``dxkit.data.ct_cache.window_crop_resize``) and serving (``CTRecipe.prepare``) both
    call it. One antialiased resize of the float32 HU crop, then each window scaled to
    0–255 and rounded half up. ``resize_with`` names the filter the cache was made with:
    ``"area"`` (``resize_area``: OpenCV area averaging, what ``dxkit prepare rsna`` writes
    now) or ``"pillow"`` (Pillow bilinear: the first caches, whose prepare.json has no
    ``resize``; kept so models trained on them are served exactly as trained).
    """
    region = crop(np.asarray(hu, dtype=np.float32), box)
    if resize_with == "area":
        if region.ndim != 2:
            raise ValueError(f"expected one HU plane (H, W), got shape {region.shape}")
        small = resize_area(region, size)
    else:
        small = resize(region, size)
    return windows_uint8(small, windows)
