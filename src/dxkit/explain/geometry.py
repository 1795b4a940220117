"""Where a heatmap lies: from the model input's grid back onto the scan as it was read.

``Preprocessing.apply`` resizes every scan to the model's square size, and a head-CT recipe
first crops to the head; a map is only useful on the scan the user has, so it is resized
(and, for the head crop, pasted into its box) back to the scan's own grid. The grey image
under an overlay is the scan in the model's own first window or intensity scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dxkit.errors import InvalidScanError
from dxkit.preprocess.crop import head_box
from dxkit.preprocess.spec import Preprocessing


def upsample_maps(maps: np.ndarray | torch.Tensor, size: tuple[int, ...]) -> np.ndarray:
    """Resize ``(N, *spatial)`` maps to ``size`` (bilinear in 2-D, trilinear in 3-D)."""
    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))[:, None]
    if tuple(t.shape[2:]) != tuple(size):
        mode = "bilinear" if len(size) == 2 else "trilinear"
        t = F.interpolate(t, size=tuple(size), mode=mode, align_corners=False)
    return t[:, 0].numpy()


def normalise(raw: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """``raw / vmax`` clipped to 0–1 (``vmax`` defaults to the map's own maximum)."""
    top = float(np.max(raw)) if vmax is None else float(vmax)
    if top <= 0:
        return np.zeros_like(raw, dtype=np.float32)
    return np.clip(raw / top, 0.0, 1.0).astype(np.float32)


def describe_expected(pre: Preprocessing) -> str:
    """What a checkpoint accepts, in words, for error messages."""
    shape = "(C, H, W) or (H, W)" if pre.spatial_dims == 2 else "(C, D, H, W) or (D, H, W)"
    if pre.ct is not None:
        names = pre.ct.window_names or [f"{c:g}/{w:g}" for c, w in pre.ct.windows]
        return (
            f"one head-CT slice in Hounsfield units (H, W) or (1, H, W) (windows "
            f"{', '.join(names)}, cropped to the head, resized to {pre.ct.size} px), or a "
            f"prepared uint8 slice ({pre.ct.channels}, {pre.ct.size}, {pre.ct.size})"
        )
    if pre.windows:
        names = pre.window_names or [f"{c:g}/{w:g}" for c, w in pre.windows]
        values = f"1 channel of Hounsfield units (CT windows {', '.join(names)})"
    elif pre.input_kind == "uint8":
        chans = "1 (grey; colour is averaged)" if pre.in_chans == 1 else f"{pre.in_chans} or 1"
        values = f"{chans} channel(s) of 0–255 intensities"
    else:
        values = f"{pre.in_chans} or 1 channel(s) of float values"
    size = f", resized to {pre.size} px" if pre.size else ""
    return f"a {pre.spatial_dims}-D scan {shape} with {values}{size}"


def prepare_scan(pre: Preprocessing, array: np.ndarray, source: str) -> torch.Tensor:
    """``Preprocessing.apply`` (the one path used in training and serving), with what the
    checkpoint expects added to any error."""
    try:
        return pre.apply(array, source)
    except InvalidScanError as err:
        raise InvalidScanError(
            f"{err} — this checkpoint expects {describe_expected(pre)}"
        ) from None


def _ct_slices(pre: Preprocessing, array: np.ndarray) -> np.ndarray | None:
    """The raw HU slices ``(k, H, W)`` a head-CT recipe will prepare, or None when there is
    no recipe or the array is already prepared."""
    if pre.ct is None:
        return None
    x = np.asarray(array)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or pre.ct.is_prepared(x):
        return None
    return x


def map_to_scan(pre: Preprocessing, array: np.ndarray, model_map: np.ndarray) -> np.ndarray:
    """A map on the model input's grid → the scan's grid ``(H, W)`` / ``(D, H, W)``.

    For a head-CT recipe the map covers the head box only: it is resized to the box and
    pasted into an all-zero map of the slice (the model never saw outside the box).
    """
    slices = _ct_slices(pre, array)
    if slices is None or pre.ct is None or not pre.ct.crop_head:
        shape = tuple(np.shape(array)[-pre.spatial_dims :])
        return np.maximum(upsample_maps(model_map[None], shape)[0], 0.0)
    centre = np.asarray(slices[len(slices) // 2], dtype=np.float32)
    h, w = centre.shape
    top, bottom, left, right = head_box(centre)
    boxed = np.maximum(upsample_maps(model_map[None], (bottom - top, right - left))[0], 0.0)
    out = np.zeros((h, w), dtype=np.float32)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(bottom, h), min(right, w)
    out[r0:r1, c0:c1] = boxed[r0 - top : r1 - top, c0 - left : c1 - left]
    return out


def display_image(pre: Preprocessing, array: np.ndarray) -> np.ndarray:
    """The scan in grey 0–1 on the scan's grid (``(H, W)`` or ``(D, H, W)``), as a reader
    would look at it: the model's first CT window, or its intensity scale; colour → grey."""
    x = np.asarray(array, dtype=np.float32)
    slices = _ct_slices(pre, x)
    if slices is not None and pre.ct is not None:
        centre, width = pre.ct.windows[0]
        grey = slices[len(slices) // 2]
        return np.clip((grey - (centre - width / 2)) / width, 0.0, 1.0)
    if pre.ct is not None:  # a prepared uint8 slice: show its first window
        x = pre.ct.prepare(x)
        return np.clip(x[0] / 255.0, 0.0, 1.0)
    if x.ndim == pre.spatial_dims:
        x = x[None]
    if pre.windows:
        centre, width = pre.windows[0]
        grey = x[0]
        return np.clip((grey - (centre - width / 2)) / width, 0.0, 1.0)
    grey = x[:3].mean(axis=0)
    if pre.input_kind == "uint8":
        return np.clip(grey / pre.scale, 0.0, 1.0)
    lo, hi = np.percentile(grey, [0.5, 99.5])
    return np.clip((grey - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
