"""Segmentation loss: weighted BCE + soft Dice (+ optional focal), on logits.

BCE gives every pixel a gradient; soft Dice counters the tiny foreground (a pneumothorax
covers 0.2–3 % of the image in the SIIM sample); focal down-weights the many easy background
pixels. The pieces come from the libraries — ``F.binary_cross_entropy_with_logits``, MONAI's
``DiceLoss``, torchvision's ``sigmoid_focal_loss`` — only their weighted sum is ours.

Dice is pooled over the batch by default (``dice_batch=True``): one soft Dice of all the
batch's pixels, so empty images only add their false-positive mass to the denominator. The
per-image alternative (``dice_batch=False``, smoothing 1) mirrors the competition's empty
rule exactly, but on an empty image its loss stays near 1 until *every* pixel's probability
is ~0 (the predicted mass must drop below the smoothing term), so on SIIM, where most
images are empty, that term pushes every pixel towards background and drowns the positives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from dxkit.errors import ConfigError, InvalidScanError


class SegmentationLoss(nn.Module):
    """``bce_weight·BCE + dice_weight·(1 − soft Dice) + focal_weight·focal`` on logits."""

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        focal_weight: float = 0.0,
        *,
        focal_gamma: float = 2.0,
        focal_alpha: float = 0.25,
        smooth: float = 1.0,
        dice_batch: bool = True,
        pos_weight: float | None = None,
    ) -> None:
        super().__init__()
        weights = {
            "bce_weight": bce_weight,
            "dice_weight": dice_weight,
            "focal_weight": focal_weight,
        }
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ConfigError(f"loss weights must be ≥ 0 and not all zero, got {weights}")
        self.bce_weight, self.dice_weight, self.focal_weight = bce_weight, dice_weight, focal_weight
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.dice = DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth, batch=dice_batch)
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.tensor([float(pos_weight)])
        )

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each enabled term, unweighted (for logging), plus the weighted ``total``."""
        if logits.shape != target.shape:
            raise InvalidScanError(
                f"segmentation loss: logits {tuple(logits.shape)} and mask "
                f"{tuple(target.shape)} must have the same (N, C, H, W) shape"
            )
        target = target.to(logits.dtype)
        parts: dict[str, torch.Tensor] = {}
        total = logits.new_zeros(())
        if self.bce_weight:
            pos_weight = self.pos_weight if isinstance(self.pos_weight, torch.Tensor) else None
            parts["bce"] = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
            total = total + self.bce_weight * parts["bce"]
        if self.dice_weight:
            parts["dice"] = self.dice(logits, target)
            total = total + self.dice_weight * parts["dice"]
        if self.focal_weight:
            parts["focal"] = sigmoid_focal_loss(
                logits, target, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="mean"
            )
            total = total + self.focal_weight * parts["focal"]
        parts["total"] = total
        return parts

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.components(logits, target)["total"]
