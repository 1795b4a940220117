"""Scans and heatmaps as compact arrays the web page draws on a canvas.

The page renders client-side so that CT window presets and the slice slider work without
another request (the server keeps nothing after a request). Slices are downsampled to at
most ``max_side`` pixels (fewer for long series, to bound the response) and sent as base64:
int16 Hounsfield units for CT (the page applies the window), uint8 otherwise; heatmaps as
uint8 0–255 at the same display size.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

MAX_SIDE = 384
MAX_VALUES = 6_000_000  # per plane: ~8 MB of base64 for int16


def display_side(height: int, width: int, slices: int, channels: int = 1) -> tuple[int, int]:
    """The displayed (height, width): at most ``MAX_SIDE``, smaller for long stacks."""
    longest = max(height, width)
    side = min(MAX_SIDE, longest)
    by_budget = int(math.sqrt(MAX_VALUES / max(1, slices * channels)))
    side = max(32, min(side, by_budget))
    if longest <= side:
        return height, width
    scale = side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink(stack: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(N, C, H, W)`` to ``size`` (antialiased bilinear; a copy when unchanged)."""
    if tuple(stack.shape[-2:]) == tuple(size):
        return np.array(stack, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.numpy()


def _encode(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def plane_view(array: np.ndarray, hounsfield: bool) -> dict[str, Any]:
    """One plane (``(C, H, W)`` image or ``(1, D, H, W)`` stack) for the page's canvas."""
    stack = array[None] if array.ndim == 3 else np.moveaxis(array, 1, 0)  # (D, C, H, W)
    d, c, h, w = stack.shape
    size = display_side(h, w, d, c)
    small = shrink(stack, size)
    info: dict[str, Any] = {"slices": d, "channels": c, "height": size[0], "width": size[1]}
    if hounsfield:
        info |= {"dtype": "int16", "values": "hounsfield"}
        data = np.clip(np.rint(small), -32768, 32767).astype("<i2")
        info["range"] = [float(data.min()), float(data.max())]
    else:
        lo, hi = float(small.min()), float(small.max())
        if lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0
        scaled = (small - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(small)
        data = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        info |= {"dtype": "uint8", "values": "intensity", "range": [lo, hi]}
    info["data"] = _encode(data)
    return info


def heatmap_view(
    maps: np.ndarray, slices: list[int], size: tuple[int, int], scale: float, weight: float = 1.0
) -> dict[str, Any]:
    """Heatmaps ``(N, H, W)`` (for the listed slice indices) divided by ``scale`` (their
    common maximum, so slices compare) and drawn at ``weight`` (``evidence_weight``) as
    uint8 at the display ``size``: 255 is full heat."""
    small = shrink(maps[:, None], size)[:, 0]
    unit = np.clip(small * (weight / scale), 0.0, 1.0) if scale > 0 else np.zeros_like(small)
    data = np.rint(unit * 255).astype(np.uint8)
    return {
        "slices": slices,
        "height": size[0],
        "width": size[1],
        "dtype": "uint8",
        "data": _encode(data),
    }
