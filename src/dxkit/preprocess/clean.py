"""Drop useless CT slices: those with too few pixels inside the brain window.

Slices through the vertex or the skull base show almost no brain; RSNA solutions found
that skipping them in training costs nothing and saves time. The share is measured on
Hounsfield units, over the whole slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dxkit.preprocess.window import WINDOWS, WindowSpec, resolve_window

DEFAULT_MIN_BRAIN_SHARE = 0.01


def brain_share(hu: np.ndarray, window: WindowSpec = WINDOWS["brain"]) -> float:
    """Fraction of pixels whose HU lies inside ``window`` (brain 40/80 → 0 … 80 HU)."""
    center, width = resolve_window(window)
    array = np.asarray(hu)
    inside = (array >= center - width / 2) & (array <= center + width / 2)
    return float(np.count_nonzero(inside)) / max(array.size, 1)


def keep_slice(hu: np.ndarray, min_share: float = DEFAULT_MIN_BRAIN_SHARE) -> bool:
    """True when the slice shows at least ``min_share`` brain-window pixels."""
    return brain_share(hu) >= min_share


def select_slices(
    slices: Sequence[np.ndarray] | np.ndarray, min_share: float = DEFAULT_MIN_BRAIN_SHARE
) -> np.ndarray:
    """Boolean keep-mask over a stack of HU slices ``(D, H, W)``."""
    return np.array([keep_slice(s, min_share) for s in slices], dtype=bool)
