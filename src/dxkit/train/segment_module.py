"""The Lightning module that trains a U-Net segmenter, optionally with an image-level head.

Two image-level decisions are supported (``segment.decision``):

- ``segmenter``: from the mask itself — a probability threshold and a minimum area chosen on
  validation after training (``dxkit.infer.segment_decision.choose_seg_thresholds``).
- ``classifier``: smp's ``aux_params`` head (global pooling + linear on the encoder's deepest
  features) trained jointly with BCE on "has pneumothorax". It is a classifier on the *same*
  encoder — one network, one forward pass — rather than a second network: the encoder's
  features already see the lesion, the head costs a few hundred parameters, and the
  segmentation loss keeps the shared features localised. ``both`` trains the head and keeps
  both decisions, so evaluation can report which one wins.

Validation (always at the full size): mean per-image Dice at probability 0.5 with the SIIM
empty rule (``val_dice``, the monitored score), Dice on positive images (``val_dice_pos``) and
image-level AUC (``val_auc``: the classifier's when ``decision: classifier``, otherwise the
mask's maximum probability; both are logged as ``val_auc_mask`` / ``val_auc_classifier``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional import auroc

from dxkit.data.sources.siim import SegmentationDataset
from dxkit.train.config import TrainConfig
from dxkit.train.config_segment import SegmentConfig
from dxkit.train.module import ClassifierModule
from dxkit.train.seg_losses import SegmentationLoss


def dice_empty_rule(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image Dice ``(N,)`` of binary masks ``(N, 1, H, W)``; 1 when both are empty.

    The same rule as ``dxkit.infer.segment_decision.dice_per_image`` (tested against it),
    in torch so the training module does not import the evaluation package.
    """
    p, t = pred.flatten(1).bool(), truth.flatten(1).bool()
    inter = (p & t).sum(1).double()
    total = (p.sum(1) + t.sum(1)).double()
    return torch.where(total == 0, torch.ones_like(total), 2 * inter / total.clamp_min(1))


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if not 0 < int(labels.sum()) < len(labels):
        return torch.tensor(float("nan"))  # one class only: no AUC
    return auroc(scores, labels.long(), task="binary")  # type: ignore[return-value]


class SegmentModule(ClassifierModule):
    """Loss, validation Dice/AUC for a segmenter; optimiser, resizing hook and checkpoint
    metadata come from ``ClassifierModule`` (the head is the classifier's linear, if any)."""

    def __init__(
        self,
        model: nn.Module,
        train: TrainConfig,
        segment: SegmentConfig,
        dxkit_meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, "binary", train, None, dxkit_meta)
        self.segment = segment
        self.with_classifier = segment.decision in ("classifier", "both")
        self.seg_loss = SegmentationLoss(
            segment.bce_weight, segment.dice_weight, segment.focal_weight
        )
        self._val: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:  # type: ignore[override]
        out = self.model(x)
        if isinstance(out, tuple):
            return out[0], out[1]
        return out, None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch  # progressive resizing happens in the dataset, for image and mask alike

    def on_train_epoch_start(self) -> None:
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)  # type: ignore[union-attr]
        if hasattr(dataset, "set_size"):
            full = self.dxkit_meta.get("preprocessing", {}).get("size")
            dataset.set_size(self.train_size or full)  # type: ignore[union-attr]
        elif isinstance(dataset, SegmentationDataset):
            dataset.set_epoch(self.current_epoch)

    def losses(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted total and its parts for one batch."""
        mask_logits, image_logits = self(x)
        parts = {"seg": self.seg_loss(mask_logits.float(), mask)}
        total = parts["seg"]
        if self.with_classifier and image_logits is not None:
            present = mask.flatten(1).amax(1, keepdim=True)
            parts["cls"] = F.binary_cross_entropy_with_logits(image_logits.float(), present)
            total = total + self.segment.classifier_weight * parts["cls"]
        parts["total"] = total
        return parts

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, mask = batch
        parts = self.losses(x, mask)
        kw: dict[str, Any] = {"on_step": False, "on_epoch": True, "batch_size": len(x)}
        self.log("train_loss", parts["total"], prog_bar=True, sync_dist=True, **kw)
        if "cls" in parts:
            self.log("train_cls_loss", parts["cls"], sync_dist=True, **kw)
        return parts["total"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, mask = batch
        mask_logits, image_logits = self(x)
        prob = mask_logits.float().sigmoid()
        self.log("val_loss", self.seg_loss(mask_logits.float(), mask), batch_size=len(x))
        if image_logits is not None:
            cls = image_logits.float().sigmoid()[:, 0]
        else:
            cls = torch.full((len(x),), float("nan"), device=x.device)
        row = [
            dice_empty_rule(prob > 0.5, mask > 0.5).float(),
            (mask.flatten(1).amax(1) > 0.5).float(),
            prob.flatten(1).amax(1),
            cls,
        ]
        self._val.append(torch.stack(row, dim=1).detach())

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        rows = torch.cat(self._val)
        self._val.clear()
        if self.trainer.world_size > 1:
            rows = torch.as_tensor(self.all_gather(rows)).flatten(0, 1)
        dice, present, peak, cls = rows.unbind(1)
        self.log("val_dice", dice.mean(), prog_bar=True)
        positive = present > 0.5
        pos_dice = dice[positive].mean() if positive.any() else torch.tensor(float("nan"))
        self.log("val_dice_pos", pos_dice)
        auc_mask = _auc(peak, present)
        self.log("val_auc_mask", auc_mask)
        auc = auc_mask
        if self.with_classifier:
            auc_cls = _auc(cls, present)
            self.log("val_auc_classifier", auc_cls)
            if self.segment.decision == "classifier":
                auc = auc_cls
        self.log("val_auc", auc, prog_bar=True)
