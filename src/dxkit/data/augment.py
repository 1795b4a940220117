"""Training-time augmentation and test-time views for 2-D scans and 3-D volumes.

Geometry (left-right flip, small rotation, shift and zoom) is one bilinear resampling with
a cached grid (``warp_slices``), checked against torchvision's ``transforms.v2.functional``
flip + affine, which it replaces for speed (see there); random erasing uses torchvision's
``erase``. Every random number comes from our own ``torch.Generator``: torchvision's and
MONAI's random classes draw from global or per-object RNGs that DataLoader workers would
share or repeat.

A volume ``(C, D, H, W)`` is resampled as a stack of slices on one grid, so every slice
gets the same in-plane transform: slice stacks stay aligned and anisotropic CT/MRI voxels
are never rotated out of plane. (MONAI's 3-D ``RandAffine`` also resamples across slices
and measured ~5 ms of CPU per 28³ volume here against ~0.15 ms.)

Intensity jitter (contrast, brightness, gamma) is our own few lines because torchvision's
float versions clamp to [0, 1], and dxkit augments normalised tensors (z-scores): every
change here is relative to the image's own mean, spread and range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torch.utils.data import get_worker_info

from dxkit.errors import ConfigError, InvalidScanError

Strength = Literal["none", "light", "medium"]


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges of one augmentation recipe (angles in degrees, shifts as image fractions)."""

    flip_p: float = 0.5
    degrees: float = 10.0
    translate: float = 0.06
    scale: tuple[float, float] = (0.92, 1.08)
    contrast: float = 0.1  # factor in 1 ± contrast
    brightness: float = 0.1  # shift in units of the image's standard deviation
    gamma: float = 0.0  # exponent in exp(± gamma); 0 = off
    erase_p: float = 0.0
    erase_area: tuple[float, float] = (0.02, 0.12)


STRENGTHS: dict[str, AugmentSpec] = {
    "light": AugmentSpec(),
    "medium": AugmentSpec(
        degrees=15.0,
        translate=0.1,
        scale=(0.85, 1.15),
        contrast=0.2,
        brightness=0.2,
        gamma=0.25,
        erase_p=0.25,
    ),
}

# Uniform draws per scan: flip, angle, tx, ty, zoom, contrast, brightness, gamma,
# erase?, erase area, erase aspect, erase top, erase left.
_DRAWS = 13
Number = float | Tensor


@dataclass(frozen=True)
class Draw:
    """One scan's random parameters (floats), or a batch's (``(B,)`` tensors)."""

    flip: bool | Tensor
    angle: Number  # degrees
    tx: Number  # pixels
    ty: Number
    zoom: Number
    contrast: Number  # factor
    brightness: Number  # in image standard deviations
    gamma: Number
    erase: bool | Tensor
    erase_box: tuple[Number, Number, Number, Number]  # top, left, height, width


@lru_cache(maxsize=16)
def _pixel_grid(h: int, w: int) -> Tensor:
    """Output pixel centres ``(x, y, 1)`` relative to the image centre, ``(H * W, 3)``."""
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).reshape(h * w, 3)


def _sampling_matrix(
    angle: Number, tx: Number, ty: Number, zoom: Number, flip: bool | Tensor, h: int, w: int
) -> list[Number]:
    """Inverse map (output pixel → input pixel, in grid_sample's [-1, 1] units) as six
    entries, from floats or ``(B,)`` tensors alike. A flip before the warp mirrors the
    input x coordinate, i.e. negates the x column."""
    rot: Number
    cos: Number
    sin: Number
    sx: Number
    if isinstance(angle, Tensor):
        rot = torch.deg2rad(angle)
        cos, sin = torch.cos(rot) / zoom, torch.sin(rot) / zoom
        sx = torch.where(torch.as_tensor(flip), -2.0 / w, 2.0 / w)
    else:
        rot = math.radians(angle)
        cos, sin = math.cos(rot) / zoom, math.sin(rot) / zoom
        sx = (-2.0 if flip else 2.0) / w
    sy = 2.0 / h
    return [cos * sx, -sin * sy, sin * sx, cos * sy,
            -(cos * tx + sin * ty) * sx, (sin * tx - cos * ty) * sy]  # fmt: skip


def _resample(x: Tensor, theta: Tensor) -> Tensor:
    """Bilinear resampling of ``(B, ..., H, W)`` with ``(B, 3, 2)`` maps, one per scan and
    shared by all its channels and slices, padding with each scan's minimum."""
    b, (h, w) = x.shape[0], x.shape[-2:]
    grid = (_pixel_grid(h, w) @ theta).reshape(b, h, w, 2)
    # Pad with the scan's own minimum (its background), not with 0, which after
    # normalisation is mid-grey; bilinear resampling is linear, so shifting is exact.
    low = x.reshape(b, -1).amin(1).reshape((b,) + (1,) * (x.ndim - 1))
    slices = (x - low).reshape(b, -1, h, w)
    out = F.grid_sample(slices, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(x.shape).add_(low)


def warp_slices(
    x: Tensor,
    angle: float,
    shift: tuple[float, float] = (0.0, 0.0),
    zoom: float = 1.0,
    flip: bool = False,
) -> Tensor:
    """Left-right flip, then rotate (degrees), zoom and shift (pixels) every ``(H, W)`` slice.

    The same transform as ``torchvision.transforms.v2.functional.affine`` after
    ``horizontal_flip`` (tested against it), with bilinear resampling and padding by the
    image's minimum. Our own few lines because torchvision rebuilds the sampling grid and
    checks its arguments on every call: ~220 µs per 28-px image here against ~70 µs with
    a cached grid, which decides whether augmentation or the model bounds a MedMNIST
    epoch on 2 cores.
    """
    if angle == 0 and shift == (0.0, 0.0) and zoom == 1 and not flip:
        return x
    h, w = x.shape[-2:]
    theta = torch.tensor(_sampling_matrix(angle, *shift, zoom, flip, h, w)).reshape(1, 3, 2)
    return _resample(x[None], theta)[0]


class Augment:
    """Random augmentation of a ``(C, H, W)`` scan / ``(C, D, H, W)`` volume, or a batch.

    ``aug(x)`` transforms one scan (for a Dataset); ``aug.batch(x)`` transforms a
    ``(B, C, ...)`` batch with independent draws per scan at a fraction of the cost (for a
    training step), and gives the same result as calling ``aug`` on each scan in turn.
    Randomness comes from ``generator`` when given, else from an internal generator seeded
    with ``seed``; inside a DataLoader worker it is reseeded from the worker's seed, so
    workers do not repeat each other and a seeded run repeats exactly.
    """

    def __init__(self, spec: AugmentSpec, spatial_dims: int, seed: int = 0) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spec = spec
        self.spatial_dims = spatial_dims
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._worker: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"Augment({self.spec}, spatial_dims={self.spatial_dims}, seed={self.seed})"

    def _own_generator(self) -> torch.Generator:
        info = get_worker_info()
        if info is not None and (info.id, info.seed) != self._worker:
            self._worker = (info.id, info.seed)
            self.generator.manual_seed((info.seed + self.seed) % (2**63))
        return self.generator

    def _check(self, x: Tensor, batched: bool) -> None:
        if x.ndim != self.spatial_dims + 1 + batched or not x.is_floating_point():
            layout = "(C, H, W)" if self.spatial_dims == 2 else "(C, D, H, W)"
            layout = f"(B, {layout[1:]}" if batched else layout
            raise InvalidScanError(
                f"augment expects a float {layout} tensor, got {tuple(x.shape)} {x.dtype}"
            )

    def draw(self, u: Sequence[Number], h: int, w: int) -> Draw:
        """Parameters from uniform draws: floats for one scan, ``(B,)`` tensors for a batch."""
        s = self.spec
        area = (s.erase_area[0] + u[9] * (s.erase_area[1] - s.erase_area[0])) * h * w
        aspect = 3.0 ** (2 * u[10] - 1)  # 1/3 .. 3, as torchvision's RandomErasing
        box: tuple[Number, Number, Number, Number]
        if isinstance(area, Tensor):
            eh_t = (area * aspect).sqrt().round().clamp(1, h)
            ew_t = (area / aspect).sqrt().round().clamp(1, w)
            top_t, left_t = (u[11] * (h - eh_t + 1)).floor(), (u[12] * (w - ew_t + 1)).floor()
            box = (top_t, left_t, eh_t, ew_t)
        else:
            eh = max(1, min(h, round(math.sqrt(area * float(aspect)))))
            ew = max(1, min(w, round(math.sqrt(area / float(aspect)))))
            box = (int(u[11] * (h - eh + 1)), int(u[12] * (w - ew + 1)), eh, ew)
        return Draw(
            flip=u[0] < s.flip_p,
            angle=(2 * u[1] - 1) * s.degrees,
            tx=(2 * u[2] - 1) * s.translate * w,
            ty=(2 * u[3] - 1) * s.translate * h,
            zoom=s.scale[0] + u[4] * (s.scale[1] - s.scale[0]),
            contrast=1.0 + (2 * u[5] - 1) * s.contrast,
            brightness=(2 * u[6] - 1) * s.brightness,
            gamma=math.e ** ((2 * u[7] - 1) * s.gamma),
            erase=u[8] < s.erase_p,
            erase_box=box,
        )

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self._check(x, batched=False)
        g = generator if generator is not None else self._own_generator()
        u = torch.rand(_DRAWS, generator=g, dtype=torch.float64).tolist()
        d = self.draw(u, *x.shape[-2:])
        s = self.spec
        x = warp_slices(x, float(d.angle), (float(d.tx), float(d.ty)), float(d.zoom), bool(d.flip))
        if s.gamma:
            low, high = torch.aminmax(x)
            span = high - low
            if span > 0:
                x = ((x - low) / span).pow_(float(d.gamma)).mul_(span).add_(low)
        if s.contrast or s.brightness:
            std, mean = (float(v) for v in torch.std_mean(x))
            c = float(d.contrast)
            # (x - mean) * contrast + mean + brightness * std, as one multiply-add
            x = x * c + (mean * (1.0 - c) + float(d.brightness) * std)
        if d.erase:
            top, left, eh, ew = (int(v) for v in d.erase_box)
            x = TF.erase(x, top, left, eh, ew, x.mean())
        return x

    def batch(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment each scan of a ``(B, C, ...)`` batch with its own draw."""
        self._check(x, batched=True)
        g = generator if generator is not None else self._own_generator()
        b, (h, w) = x.shape[0], x.shape[-2:]
        u = torch.rand(b, _DRAWS, generator=g, dtype=torch.float64)
        d = self.draw(list(u.T), h, w)
        s = self.spec
        entries = _sampling_matrix(d.angle, d.tx, d.ty, d.zoom, d.flip, h, w)
        theta = torch.stack([torch.as_tensor(e) for e in entries], 1)
        x = _resample(x, theta.to(torch.float32).reshape(b, 3, 2))
        shape = (b,) + (1,) * (x.ndim - 1)

        def per_scan(v: Number) -> Tensor:
            return torch.as_tensor(v).to(x.dtype).reshape(shape)

        flat = x.reshape(b, -1)
        if s.gamma:
            low, high = (v.reshape(shape) for v in torch.aminmax(flat, dim=1))
            span = (high - low).clamp_min(torch.finfo(x.dtype).tiny)
            x = ((x - low) / span).pow_(per_scan(d.gamma)).mul_(high - low).add_(low)
            flat = x.reshape(b, -1)
        if s.contrast or s.brightness:
            std, mean = (v.reshape(shape) for v in torch.std_mean(flat, dim=1))
            c = per_scan(d.contrast)
            x = x * c + (mean * (1.0 - c) + per_scan(d.brightness) * std)
        if s.erase_p:
            top, left, eh, ew = (per_scan(v) for v in d.erase_box)
            rows = torch.arange(h, dtype=x.dtype).reshape(h, 1)
            cols = torch.arange(w, dtype=x.dtype)
            box = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
            box &= per_scan(d.erase).bool()
            x = torch.where(box, x.reshape(b, -1).mean(1).reshape(shape), x)
        return x


def build_augment(
    spatial_dims: int, strength: Strength = "light", flip: bool = True, seed: int = 0
) -> Augment | None:
    """The augmentation for a recipe strength, or None for ``"none"`` (no augmentation).

    ``flip`` allows left-right flips; turn it off where laterality matters to the label.
    """
    if strength == "none":
        return None
    if strength not in STRENGTHS:
        raise ConfigError(
            f"augment strength {strength!r} unknown; use one of none, {', '.join(STRENGTHS)}"
        )
    spec = STRENGTHS[strength]
    if not flip:
        spec = replace(spec, flip_p=0.0)
    return Augment(spec, spatial_dims, seed)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator fixed by (seed, epoch, scan index): the same draw whatever the workers."""
    mixed = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index) % (2**63)
    return torch.Generator().manual_seed(mixed)


def _flip_dims(x: Tensor, spatial_dims: int, flip_axes: Sequence[int]) -> list[tuple[int, ...]]:
    if x.ndim not in (spatial_dims + 1, spatial_dims + 2):
        raise InvalidScanError(
            f"test-time views expect (C, ...) or (B, C, ...) with {spatial_dims} spatial "
            f"axes, got shape {tuple(x.shape)}"
        )
    for a in flip_axes:
        if not -spatial_dims <= a < 0:
            raise ConfigError(f"flip axis {a} is not one of the last {spatial_dims} axes")
    return [(), *[(a,) for a in flip_axes]]


def tta_views(x: Tensor, spatial_dims: int, flip_axes: Sequence[int] = (-1,)) -> list[Tensor]:
    """Test-time views of a scan or batch: the scan itself, then one flip per axis.

    Average the predicted probabilities over the views; maps predicted on them are brought
    back into the scan's frame with ``tta_invert``.
    """
    return [x if not d else torch.flip(x, d) for d in _flip_dims(x, spatial_dims, flip_axes)]


def tta_invert(
    maps: Sequence[Tensor], spatial_dims: int, flip_axes: Sequence[int] = (-1,)
) -> list[Tensor]:
    """Undo each view's flip on maps (heatmaps, masks) predicted on ``tta_views`` outputs."""
    if not maps:
        return []
    dims = _flip_dims(maps[0], spatial_dims, flip_axes)
    if len(maps) != len(dims):
        raise ConfigError(f"got {len(maps)} maps for {len(dims)} test-time views")
    return [m if not d else torch.flip(m, d) for m, d in zip(maps, dims, strict=True)]
