"""Crop a CT slice to the head (found from the pixels, not a fixed centre crop) and resize.

The head is the largest connected region of tissue (HU above a threshold); the scanner
table, headrest and padding outside the field of view are not part of it. Labelling runs
on every 4th pixel, which keeps it cheap on 512² slices (scipy.ndimage does the work).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

AIR_HU = -1024.0


class Box(NamedTuple):
    """Pixel rows ``[top, bottom)`` and columns ``[left, right)``; may extend past the image."""

    top: int
    bottom: int
    left: int
    right: int


def head_mask(hu: np.ndarray, *, threshold_hu: float = -300.0, step: int = 4) -> np.ndarray:
    """Boolean mask of the head on the ``step``-subsampled grid (largest tissue component)."""
    small = np.asarray(hu)[::step, ::step] > threshold_hu
    labels, count = ndimage.label(small)
    if count <= 1:
        return small
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def head_box(
    hu: np.ndarray, *, threshold_hu: float = -300.0, margin: float = 0.04, square: bool = True
) -> Box:
    """Bounding box of the head, widened by ``margin`` (of the image size) and made square.

    The mask is found on every 4th pixel (cheap on 512² slices); the box is widened by that
    step so the head's edge between samples stays inside. A slice without tissue gives the
    whole image.
    """
    h, w = hu.shape[-2:]
    step = 4 if min(h, w) >= 128 else 1
    mask = head_mask(hu.reshape(hu.shape[-2:]), threshold_hu=threshold_hu, step=step)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return Box(0, h, 0, w)
    pad = round(margin * max(h, w)) + step
    top, bottom = rows[0] * step - pad, min(h, rows[-1] * step + 1 + pad)
    left, right = cols[0] * step - pad, min(w, cols[-1] * step + 1 + pad)
    if square:
        side = max(bottom - top, right - left)
        cy, cx = (top + bottom) // 2, (left + right) // 2
        top, left = cy - side // 2, cx - side // 2
        bottom, right = top + side, left + side
    return Box(int(top), int(bottom), int(left), int(right))


def crop(array: np.ndarray, box: Box, fill: float = AIR_HU) -> np.ndarray:
    """Crop the last two axes to ``box``; parts outside the image are filled with ``fill``."""
    h, w = array.shape[-2:]
    top, bottom, left, right = box
    inside = array[..., max(top, 0) : min(bottom, h), max(left, 0) : min(right, w)]
    if top >= 0 and left >= 0 and bottom <= h and right <= w:
        return inside
    pads = [(0, 0)] * (array.ndim - 2) + [
        (max(0, -top), max(0, bottom - h)),
        (max(0, -left), max(0, right - w)),
    ]
    return np.pad(inside, pads, constant_values=fill)


def resize(array: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize the last two axes (bilinear, antialiased when shrinking) keeping the dtype.

    Pillow's resampler is used because it is fast on uint8 and float32 planes and
    antialiases, which plain strided or nearest-neighbour shrinking does not.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if array.shape[-2:] == (out_h, out_w):
        return array
    dtype = array.dtype
    work_dtype = dtype if dtype in (np.uint8, np.float32) else np.dtype(np.float32)

    def one(plane: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(plane, dtype=work_dtype))
        return np.asarray(image.resize((out_w, out_h), Image.Resampling.BILINEAR))

    if array.ndim == 2:
        return one(array).astype(dtype, copy=False)
    planes = array.reshape(-1, *array.shape[-2:])
    out = np.stack([one(plane) for plane in planes])
    return out.reshape(*array.shape[:-2], out_h, out_w).astype(dtype, copy=False)


def crop_to_head(hu: np.ndarray, size: int | None = None, **box_kwargs: float) -> np.ndarray:
    """Crop an HU slice ``(H, W)`` or ``(C, H, W)`` to the head and optionally resize it."""
    box = head_box(hu if hu.ndim == 2 else hu[0], **box_kwargs)  # type: ignore[arg-type]
    out = crop(hu, box)
    return resize(out, size) if size is not None else out
