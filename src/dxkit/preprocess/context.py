"""2.5D context: each slice stacked with its neighbours (s−1, s, s+1) as channels.

The trick most top RSNA head-CT solutions used: a 2D network sees a little of the third
dimension. Slices must already be in patient order (``dxkit.io.dicom.read_series``);
at the ends of a series the missing neighbour is the edge slice repeated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def neighbour_indices(depth: int, offsets: Sequence[int] = (-1, 0, 1)) -> np.ndarray:
    """``(depth, len(offsets))`` slice indices, clamped at the ends of the series."""
    if depth < 1:
        raise ValueError("a series needs at least one slice")
    idx = np.arange(depth)[:, None] + np.asarray(offsets, dtype=int)[None, :]
    return np.clip(idx, 0, depth - 1)


def stack_context(volume: np.ndarray, offsets: Sequence[int] = (-1, 0, 1)) -> np.ndarray:
    """``(D, H, W)`` → ``(D, K, H, W)``; ``(D, C, H, W)`` → ``(D, K*C, H, W)`` (neighbour-major).

    Channel ``k*C + c`` of output slice ``s`` is channel ``c`` of slice ``s + offsets[k]``.
    """
    array = np.asarray(volume)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise ValueError(f"stack_context expects (D, H, W) or (D, C, H, W), got {volume.shape}")
    depth, chans = array.shape[:2]
    idx = neighbour_indices(depth, offsets)
    return array[idx].reshape(depth, len(offsets) * chans, *array.shape[2:])
