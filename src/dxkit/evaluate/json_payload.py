"""Helpers that keep report and explorer payloads small and plain JSON."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_safe(obj: Any) -> Any:
    """Plain JSON types all the way down: NumPy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def thin_curve(*arrays: np.ndarray, max_points: int = 500) -> list[np.ndarray]:
    """Evenly keep at most ``max_points`` points (first and last kept) of parallel arrays,
    so a curve over 100 000 cases stays a few kB in the report."""
    n = len(arrays[0])
    if n <= max_points:
        return list(arrays)
    keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return [a[keep] for a in arrays]
