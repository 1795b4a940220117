"""What a model was trained on, and whether a new scan looks like it (the input guard).

A chest X-ray model trained on 0–255 PNGs, given a head-CT slice in Hounsfield units
(−1012…1735), still answers — confidently and wrongly. The checkpoint therefore records
its training input (``profile_inputs``: modality, channel count, value range and a few
quantiles of the scans as read, before any preprocessing), and ``check_input`` flags a
scan that falls outside it. Pure NumPy: the predictor, the server and the explainer call
it on the array they read — a classifier's scan, a segmenter's radiograph in [0, 1], and
each plane of an exam against that plane's own profile (``check_planes``).

The rule (stated once, here): with ``span = p99.9 − p0.1`` of the training values, a scan
is flagged when its 1st or 99th percentile lies more than ``MARGIN × span`` outside the
training ``[p0.1, p99.9]``, when its channel count is not one the model takes (1 or the
training count), or when a DICOM's Modality differs from the training modality. Flagged
scans are still predicted (with the warning) unless the caller asks for strict inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

QUANTILES = (0.001, 0.01, 0.5, 0.99, 0.999)
MARGIN = 0.25
SAMPLE_PER_SCAN = 4096  # values kept from each training scan for the quantiles


def profile_inputs(
    arrays: Iterable[np.ndarray], modality: str | None = None, seed: int = 0
) -> dict[str, Any]:
    """The value range, quantiles and channel count of training scans (as read)."""
    rng = np.random.default_rng(seed)
    samples, channels, lo, hi, count = [], set(), np.inf, -np.inf, 0
    for array in arrays:
        a = np.asarray(array, dtype=np.float32)
        channels.add(int(a.shape[0]) if a.ndim >= 3 else 1)
        flat = a.reshape(-1)
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            continue
        lo, hi = min(lo, float(flat.min())), max(hi, float(flat.max()))
        take = min(flat.size, SAMPLE_PER_SCAN)
        samples.append(flat[rng.choice(flat.size, take, replace=False)])
        count += 1
    if not samples:
        return {}
    values = np.concatenate(samples)
    q = np.quantile(values, QUANTILES)
    return {
        "modality": modality,
        "channels": sorted(channels),
        "min": lo,
        "max": hi,
        "quantiles": {str(k): float(v) for k, v in zip(QUANTILES, q, strict=True)},
        "scans": count,
    }


def check_input(
    profile: dict[str, Any] | None, array: np.ndarray, modality: str | None = None
) -> str | None:
    """A one-line warning when ``array`` lies outside the training profile, else None."""
    if not profile:
        return None
    problems = []
    a = np.asarray(array, dtype=np.float32)
    trained = profile.get("modality")
    if modality and trained and modality != trained:
        problems.append(f"modality {modality}, trained on {trained}")
    channels = int(a.shape[0]) if a.ndim >= 3 else 1
    allowed = {1, *profile.get("channels", [])}
    if channels not in allowed and not (channels == 4 and 3 in allowed):
        problems.append(f"{channels} channels, trained on {profile['channels']}")
    q = profile["quantiles"]
    low, high = float(q[str(QUANTILES[0])]), float(q[str(QUANTILES[-1])])
    span = max(high - low, 1e-6)
    flat = a.reshape(-1)
    flat = flat[np.isfinite(flat)]
    if flat.size:
        p1, p99 = (float(v) for v in np.quantile(flat, (0.01, 0.99)))
        if p1 < low - MARGIN * span or p99 > high + MARGIN * span:
            problems.append(
                f"values {p1:.4g}…{p99:.4g} (1st–99th percentile), trained on {low:.4g}…{high:.4g}"
            )
    if not problems:
        return None
    return "input unlike the training data: " + "; ".join(problems)


def check_inputs(
    profile: dict[str, Any] | None,
    arrays: Sequence[np.ndarray],
    modalities: Sequence[str | None] | None = None,
) -> list[str | None]:
    """``check_input`` for each scan of a batch: what every predictor (eager or ONNX,
    classifier or segmenter) attaches to its predictions as ``input_warning``."""
    return [
        check_input(profile, array, modalities[i] if modalities else None)
        for i, array in enumerate(arrays)
    ]


def volume_input(volume: np.ndarray) -> np.ndarray:
    """An exam plane's ``(slices, H, W)`` volume as one single-channel scan
    ``(1, slices, H, W)`` (a channel-first ``(C, slices, H, W)`` one stays as it is): how
    exam profiles are recorded and checked (slices are not channels)."""
    volume = np.asarray(volume)
    return volume if volume.ndim == 4 else volume[None]


def check_planes(
    profiles: dict[str, dict[str, Any]] | None, volumes: dict[str, np.ndarray]
) -> str | None:
    """An exam's warning: each plane's volume against that plane's training profile
    (``{plane: profile}``), the flagged planes named; None when every plane is like its
    training data or nothing was recorded."""
    found = [
        (plane, check_input((profiles or {}).get(plane), volume_input(volume)))
        for plane, volume in volumes.items()
    ]
    flagged = [
        f"{plane}: {w.removeprefix('input unlike the training data: ')}" for plane, w in found if w
    ]
    return "input unlike the training data: " + " | ".join(flagged) if flagged else None
