"""The exact input recipe of a model, saved in its checkpoint and replayed at serving time.

``Preprocessing.apply`` is the single path from a read scan (``dxkit.io.read_scan``) to a
model input. Datasets, the Predictor, the explainer, the server and ONNX export all call
it, so training and serving cannot drift apart.

A model trained on a head-CT cache (``dxkit prepare rsna``: HU → crop to the head →
resize → uint8 windows) carries that recipe as ``ct``: a raw Hounsfield slice read from
DICOM is turned into exactly the array the cache stored, with the same functions, while
arrays already prepared (the cached slices themselves) pass through unchanged.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dxkit.errors import InvalidScanError
from dxkit.preprocess.crop import Box, head_box
from dxkit.preprocess.ct_slice import Resize, ct_window_channels

log = logging.getLogger(__name__)
__all__ = ["CTRecipe", "Preprocessing", "Resize", "ct_window_channels"]


class CTRecipe(BaseModel):
    """How raw head-CT slices became the uint8 arrays a model was trained on (the cache)."""

    model_config = ConfigDict(extra="forbid")

    windows: list[tuple[float, float]] = Field(..., min_length=1)
    window_names: list[str] | None = None
    size: int = Field(..., ge=8, description="side of the prepared (cached) slices")
    crop_head: bool = True
    context: bool = Field(False, description="2.5D: slices s-1, s, s+1 stacked as channels")
    # Checkpoints from before the field existed were trained on Pillow-resized caches.
    resize: Resize = Field("pillow", description="the cache's resize filter: area or pillow")

    @property
    def channels(self) -> int:
        """Channels of a prepared slice: one per window, times three neighbours with context."""
        return len(self.windows) * (3 if self.context else 1)

    def is_prepared(self, x: np.ndarray) -> bool:
        """True for an array shaped and valued like a cached slice ``(channels, size, size)``.

        Raw head CT has air (≈ −1000 HU) and bone (> 255 HU), so a float array of the cache's
        shape whose values all lie in 0–255 is taken as already prepared.
        """
        if x.shape != (self.channels, self.size, self.size):
            return False
        return x.dtype == np.uint8 or bool(x.min() >= 0 and x.max() <= 255)

    def prepare(self, array: np.ndarray, source: str = "scan") -> np.ndarray:
        """A raw HU slice ``(H, W)``/``(1, H, W)`` (with context: also ``(3, H, W)``, the
        neighbours s−1, s, s+1) → the cached ``(channels, size, size)`` array; a prepared
        array is returned as it is."""
        x = np.asarray(array)
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]  # read_scan puts a (C, H, W) .npy into (1, C, H, W)
        if x.ndim == 2:
            x = x[None]
        if x.ndim == 3 and self.is_prepared(x):
            return x
        if (
            x.ndim != 3
            or x.dtype == np.uint8
            or x.shape[0] not in ((1, 3) if self.context else (1,))
        ):
            raise InvalidScanError(
                f"{source}: got shape {tuple(np.shape(array))} ({x.dtype}); this model takes one "
                f"head-CT slice in Hounsfield units (1, H, W)"
                + (" or its neighbours s-1, s, s+1 as (3, H, W)" if self.context else "")
                + f", or a prepared uint8 slice ({self.channels}, {self.size}, {self.size})"
            )
        x = np.asarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InvalidScanError(f"{source}: contains NaN or infinite values; clean the scan")
        slices = list(x)
        if self.context and len(slices) == 1:
            log.warning(
                "%s: one slice given to a 2.5D model; it stands in for its own neighbours, as "
                "at the ends of a series (pass (3, H, W) with s-1, s, s+1 for full context)",
                source,
            )
            slices = slices * 3
        centre = slices[len(slices) // 2]
        h, w = centre.shape
        box = head_box(centre) if self.crop_head else Box(0, h, 0, w)
        return np.concatenate(
            [ct_window_channels(s, box, self.windows, self.size, self.resize) for s in slices]
        )


class Preprocessing(BaseModel):
    """Channel handling, CT windows, resizing and normalisation for one model."""

    model_config = ConfigDict(extra="forbid")

    spatial_dims: Literal[2, 3] = 2
    in_chans: int = Field(1, ge=1)
    size: int | None = None
    input_kind: Literal["uint8", "hounsfield", "float"] = "uint8"
    windows: list[tuple[float, float]] | None = None
    window_names: list[str] | None = None
    scale: float = 255.0
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])
    ct: CTRecipe | None = Field(default=None, description="head-CT cache recipe replayed on raw HU")

    @model_validator(mode="after")
    def _ct_consistent(self) -> Preprocessing:
        if self.ct is not None and (self.windows or self.input_kind != "uint8"):
            raise ValueError(
                "a ct recipe already holds the windows: set windows=None and input_kind='uint8'"
            )
        return self

    def to_unit_range(self, array: np.ndarray, source: str = "scan") -> torch.Tensor:
        """Windows (CT) or scaling (uint8) to a channel-first float tensor, before resizing."""
        x = self.ct.prepare(array, source) if self.ct is not None else np.asarray(array)
        if x.ndim == self.spatial_dims:
            x = x[None]
        if x.ndim != self.spatial_dims + 1:
            raise InvalidScanError(
                f"{source}: expected a {self.spatial_dims}-D scan (optionally channel-first), "
                f"got shape {tuple(np.shape(array))}; this model takes "
                f"{'(C, H, W)' if self.spatial_dims == 2 else '(C, D, H, W)'} input"
            )
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not torch.isfinite(t).all():
            raise InvalidScanError(f"{source}: contains NaN or infinite values; clean the scan")
        if self.windows:
            if t.shape[0] != 1:
                raise InvalidScanError(
                    f"{source}: CT windows need a single-channel scan in Hounsfield units, "
                    f"got {t.shape[0]} channels; pass the DICOM or a 1-channel HU array"
                )
            layers = [((t[0] - (c - w / 2)) / w).clamp_(0.0, 1.0) for c, w in self.windows]
            t = torch.stack(layers)
        elif self.input_kind == "uint8":
            t = t / self.scale
        return t

    def adapt_channels(self, t: torch.Tensor, source: str = "scan") -> torch.Tensor:
        """Grey → repeated channels; colour → grey when the model wants one channel."""
        c = t.shape[0]
        if c == self.in_chans:
            return t
        if c == 1:
            return t.expand(self.in_chans, *t.shape[1:]).clone()
        if self.in_chans == 1 and c in (3, 4):
            return t[:3].mean(dim=0, keepdim=True)
        raise InvalidScanError(
            f"{source}: has {c} channels but the model expects {self.in_chans}; "
            "check that the scan matches the checkpoint's preprocessing"
        )

    def resize(self, t: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Resize a channel-first tensor (2-D or 3-D) to ``size`` on every spatial axis."""
        size = size or self.size
        if size is None or all(s == size for s in t.shape[1:]):
            return t
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        target = (size,) * self.spatial_dims
        antialias = self.spatial_dims == 2 and any(s > size for s in t.shape[1:])
        kwargs = {"antialias": True} if antialias else {}
        return F.interpolate(t[None], size=target, mode=mode, align_corners=False, **kwargs)[0]

    def normalize(self, t: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * self.spatial_dims
        mean = torch.tensor(self.mean, dtype=t.dtype).reshape(shape)
        std = torch.tensor(self.std, dtype=t.dtype).reshape(shape)
        return (t - mean) / std

    def apply(self, array: np.ndarray, source: str = "scan") -> torch.Tensor:
        """Read scan → model input tensor ``(C, H, W)`` or ``(C, D, H, W)``."""
        t = self.to_unit_range(array, source)
        t = self.adapt_channels(t, source)
        return self.normalize(self.resize(t))
