"""CT windows: map a Hounsfield range onto [0, 1] and stack several windows as channels.

A window (center, width) shows HU in ``[center - width/2, center + width/2]`` as black to
white, everything below black and above white. Radiologists read head CT through several
windows (brain, subdural, bone); stacking them as channels gives a network the same views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dxkit.errors import ConfigError

WindowSpec = str | tuple[float, float] | Sequence[float]

# Presets {name: (center, width)} in HU, as used for head, chest and body CT reading.
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "stroke": (40.0, 40.0),
    "bone": (600.0, 2800.0),
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
}


def resolve_window(spec: WindowSpec) -> tuple[float, float]:
    """A preset name or a ``(center, width)`` pair → ``(center, width)``; width must be > 0."""
    if isinstance(spec, str):
        key = spec.strip().lower().replace("-", "_")
        if key not in WINDOWS:
            raise ConfigError(
                f"unknown window {spec!r}; use one of {sorted(WINDOWS)} or a (center, width) pair"
            )
        return WINDOWS[key]
    try:
        center, width = (float(v) for v in spec)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"window {spec!r} is not a name or a (center, width) pair") from exc
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise ConfigError(f"window {spec!r}: width must be a positive finite number")
    return center, width


def parse_windows(text: str) -> list[WindowSpec]:
    """Command-line form ``"brain,subdural,40:80"`` → ``["brain", "subdural", (40.0, 80.0)]``."""
    specs: list[WindowSpec] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if ":" in part:
            center, _, width = part.partition(":")
            try:
                specs.append(resolve_window((float(center), float(width))))
            except ValueError as exc:
                raise ConfigError(f"window {part!r}: use center:width, e.g. 40:80") from exc
        else:
            resolve_window(part)
            specs.append(part)
    if not specs:
        raise ConfigError(f"no windows in {text!r}; e.g. brain,subdural,bone")
    return specs


def apply_window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """HU → float32 in [0, 1]: ``(hu - (center - width/2)) / width``, clipped."""
    center, width = resolve_window((center, width))
    out = (np.asarray(hu, dtype=np.float32) - np.float32(center - width / 2)) / np.float32(width)
    return np.clip(out, 0.0, 1.0, out=out)


def window_uint8(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Same mapping as ``apply_window`` scaled to 0–255 and rounded, for compact caches."""
    center, width = resolve_window((center, width))
    # In place on one float32 buffer: this runs for every cached slice and window.
    scaled = np.subtract(hu, np.float32(center - width / 2), dtype=np.float32)
    scaled *= np.float32(255.0 / width)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += 0.5
    return scaled.astype(np.uint8)


def windows_uint8(plane: np.ndarray, windows: Sequence[tuple[float, float]]) -> np.ndarray:
    """Several windows of one float32 plane ``(H, W)`` → uint8 ``(C, H, W)``.

    Exactly ``np.stack([window_uint8(plane, c, w) for c, w in windows])`` (the same float32
    operations in the same order, elementwise), broadcast over all windows at once.
    """
    resolved = [resolve_window(w) for w in windows]
    shape = (-1,) + (1,) * np.ndim(plane)
    low = np.array([np.float32(c - w / 2) for c, w in resolved], np.float32).reshape(shape)
    gain = np.array([np.float32(255.0 / w) for _, w in resolved], np.float32).reshape(shape)
    out = np.subtract(np.asarray(plane, dtype=np.float32)[None], low)
    out *= gain
    np.clip(out, 0.0, 255.0, out=out)
    out += 0.5
    return out.astype(np.uint8)


def stack_windows(hu: np.ndarray, windows: Sequence[WindowSpec]) -> np.ndarray:
    """Several windows of one scan as channels: ``(H, W)``/``(1, H, W)`` → ``(C, H, W)``.

    Volumes ``(D, H, W)`` (D > 1) or ``(1, D, H, W)`` give ``(C, D, H, W)``.
    """
    array = np.asarray(hu, dtype=np.float32)
    if array.ndim in (3, 4) and array.shape[0] == 1:
        array = array[0]
    if array.ndim not in (2, 3):
        raise ValueError(f"stack_windows expects (H, W) or (D, H, W) HU, got shape {hu.shape}")
    if len(windows) == 0:
        raise ConfigError("stack_windows needs at least one window")
    return np.stack([apply_window(array, *resolve_window(w)) for w in windows])


def file_windows(meta: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The DICOM file's own WindowCenter/WindowWidth pairs (one or several) from its metadata."""
    centers, widths = meta.get("WindowCenter"), meta.get("WindowWidth")
    if centers is None or widths is None:
        return []
    centers = centers if isinstance(centers, list | tuple) else [centers]
    widths = widths if isinstance(widths, list | tuple) else [widths]
    pairs = []
    for c, w in zip(centers, widths, strict=False):
        if float(w) > 0:
            pairs.append((float(c), float(w)))
    return pairs


class WindowTransform:
    """Callable dataset transform: HU array → stacked windows ``(C, ...)`` float32 in [0, 1]."""

    def __init__(self, windows: Sequence[WindowSpec] = ("brain", "subdural", "bone")) -> None:
        self.windows = [resolve_window(w) for w in windows]
        self.names = [w if isinstance(w, str) else f"{w[0]:g}:{w[1]:g}" for w in windows]

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        return stack_windows(hu, self.windows)

    def __repr__(self) -> str:
        return f"WindowTransform({self.names})"
