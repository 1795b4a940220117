"""CPU-efficient residual networks for tiny scans (28–64 px in 2D, 28–64 voxels in 3D).

timm and MONAI networks are shaped for 224 px photographs or 96+ voxel volumes: a stride-4
stem throws away most of a 28 px image before the first block, and a ResNet-18 spends its
compute on 512-channel stages that a 7×7 map cannot use. MedMNIST-sized inputs need the
opposite trade-off — full resolution early, few channels, a short network — and no library
ships that for both 2D and 3D, so this file writes one (a plain BasicBlock ResNet, the same
building block as torchvision's, with dimension-generic layers).

The models expose timm's feature interface (``forward_features``, ``forward_head``,
``num_features``, ``reset_classifier``) so the slice-stack model and Grad-CAM treat them like
any timm backbone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from dxkit.errors import ConfigError

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _norm_factory(kind: str, spatial_dims: int) -> Callable[[int], nn.Module]:
    """Batch norm (default) or group norm: the latter does not depend on the batch, so a
    model trains the same whatever the per-process batch (DDP on CPUs, where PyTorch has no
    SyncBatchNorm)."""
    if kind == "batch":
        return _NORM[spatial_dims]
    if kind == "group":
        return lambda width: nn.GroupNorm(min(8, width), width)
    raise ConfigError(f"SmallResNet: norm={kind!r}; use 'batch' or 'group'")


# Defaults per number of spatial dimensions, picked by validation AUC per CPU-second on the
# MedMNIST sets (single-seed runs on the val splits, never test). 2D keeps the stem and first
# stage at full resolution (a 28 px lesion is a few pixels wide): 28 -> 28 -> 14 -> 7. 3D
# halves the grid in the stem (28 -> 14 -> 14 -> 7 -> 4): a stride-1 stem at 28³ made training
# 2.3× slower, while this network reached val AUC 0.876 on AdrenalMNIST3D in 20 epochs.
WIDTHS = {2: (32, 64, 128), 3: (16, 32, 64)}
DEPTHS = {2: (1, 1, 1), 3: (1, 1, 1)}
STRIDES = {2: (1, 2, 2), 3: (1, 2, 2)}
STEM_STRIDE = {2: 1, 3: 2}


class BasicBlock(nn.Module):
    """Two 3×3(×3) convolutions with batch norm and an identity (or 1×1 projection) shortcut."""

    def __init__(
        self, in_width: int, width: int, stride: int, spatial_dims: int, norm_kind: str = "batch"
    ) -> None:
        super().__init__()
        conv, norm = _CONV[spatial_dims], _norm_factory(norm_kind, spatial_dims)
        self.conv1 = conv(in_width, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = conv(width, width, 3, padding=1, bias=False)
        self.bn2 = norm(width)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_width != width:
            self.shortcut = nn.Sequential(
                conv(in_width, width, 1, stride=stride, bias=False), norm(width)
            )
        # Zero-init the last norm so every block starts as the identity: faster, steadier
        # training from scratch (Goyal et al. 2017), which is all we do on a CPU.
        nn.init.zeros_(self.bn2.weight)  # type: ignore[arg-type]  # BN and GN both have one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A compact ResNet for 2D or 3D tiny scans: stem, a few residual stages, pooling, head.

    ``widths``/``depths``/``strides`` give one entry per stage (defaults above, per
    ``spatial_dims``); ``stem_stride=2`` suits 64 px images.
    ``channels_last`` keeps the weights in the CPU-fast memory layout.
    Returns logits ``(N, num_classes)``; ``num_classes=0`` returns pooled features.
    """

    def __init__(
        self,
        in_chans: int,
        num_classes: int,
        spatial_dims: int = 2,
        widths: Sequence[int] | None = None,
        depths: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        stem_stride: int | None = None,
        dropout: float = 0.2,
        channels_last: bool = True,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ConfigError(f"SmallResNet: spatial_dims={spatial_dims!r}; use 2 or 3")
        widths = tuple(widths if widths is not None else WIDTHS[spatial_dims])
        depths = tuple(depths if depths is not None else DEPTHS[spatial_dims])
        strides = tuple(strides if strides is not None else STRIDES[spatial_dims])
        stem_stride = STEM_STRIDE[spatial_dims] if stem_stride is None else int(stem_stride)
        if not (len(widths) == len(depths) == len(strides)) or not widths:
            raise ConfigError(
                f"SmallResNet: widths {widths}, depths {depths} and strides {strides} need one "
                "entry per stage and the same length"
            )
        if min(widths) < 1 or min(depths) < 1 or min(strides) < 1 or stem_stride < 1:
            raise ConfigError(
                f"SmallResNet: widths {widths}, depths {depths}, strides {strides} and "
                f"stem_stride {stem_stride} must all be positive"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"SmallResNet: dropout={dropout}; use a value in [0, 1)")
        norm_kind = norm
        conv, norm_layer = _CONV[spatial_dims], _norm_factory(norm_kind, spatial_dims)
        self.spatial_dims = spatial_dims
        # The resolved architecture: save it with a checkpoint so a later change of the
        # defaults cannot silently rebuild a different network around the same weights
        # (the stride does not change any weight's shape).
        self.arch = {
            "widths": list(widths),
            "depths": list(depths),
            "strides": list(strides),
            "stem_stride": stem_stride,
            "norm": norm_kind,
        }
        self.stem = nn.Sequential(
            conv(in_chans, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            norm_layer(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_width = widths[0]
        for width, depth, stride in zip(widths, depths, strides, strict=True):
            blocks = [BasicBlock(in_width, width, stride, spatial_dims, norm_kind)]
            blocks += [
                BasicBlock(width, width, 1, spatial_dims, norm_kind) for _ in range(depth - 1)
            ]
            stages.append(nn.Sequential(*blocks))
            in_width = width
        self.stages = nn.Sequential(*stages)
        self.num_features = in_width
        self.drop_rate = dropout
        self.dropout = nn.Dropout(dropout)
        self.head: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # oneDNN's channels-last kernels are 1.4× (2D) to 1.7× (3D) faster for training on a
        # CPU than the default layout (measured, fwd+bwd at 28 px / 28³); the plain 3D
        # backward pass is particularly slow. Channels-last weights alone select those kernels
        # (the input need not be converted, which also keeps ONNX export working), and they
        # stay channels-last through load_state_dict (copy_ keeps strides).
        # With channel counts that are not multiples of 16 (widths 4, 8, 12 measured) the
        # channels-last backward pass corrupts the heap on some CPUs (torch 2.14.1: "double
        # free or corruption", then abort); multiples of 16 are fine, so narrow test-sized
        # nets keep the default layout.
        self.channels_last = channels_last and all(w % 16 == 0 for w in widths)
        if self.channels_last:
            self.to(memory_format=self._memory_format())

    def _memory_format(self) -> torch.memory_format:
        if not self.channels_last:
            return torch.contiguous_format
        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the linear head (``0`` removes it, as in timm)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map of the last stage: ``(N, num_features, *spatial)``."""
        return self.stages(self.stem(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, dropout and the linear head."""
        pooled = features.flatten(2).mean(dim=2)
        return pooled if pre_logits else self.head(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
