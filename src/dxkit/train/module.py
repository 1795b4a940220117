"""The Lightning module that trains any registered classifier (2-D or 3-D).

Lightning owns the loop, devices, precision, DDP and checkpointing; this module only says
what a step is, how validation is scored (AUC, as MedMNIST and the clinical papers report)
and which parameters get which learning rate.
"""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import binary_auroc, multiclass_auroc

from dxkit.data.source import Task
from dxkit.infer.probabilities import probabilities
from dxkit.models.ensemble import DeepEnsemble, classifier_head
from dxkit.train.config import TrainConfig
from dxkit.train.schedule import build_scheduler


def split_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(body, head) parameters: the classifier head is timm's ``get_classifier()`` or the
    last ``nn.Linear`` (every member's, for an ensemble); everything else is the body that
    pretrained weights would cover."""
    try:
        head_ids = {id(p) for p in classifier_head(model).parameters()}
    except ValueError:  # no linear head at all
        head_ids = set()
    body = [p for p in model.parameters() if id(p) not in head_ids]
    heads = [p for p in model.parameters() if id(p) in head_ids]
    return body, heads


def network(pl_module: L.LightningModule) -> nn.Module:
    """The network a dxkit Lightning module trains (its ``model`` attribute)."""
    model = pl_module.model
    if not isinstance(model, nn.Module):
        raise TypeError(f"{type(pl_module).__name__}.model is not an nn.Module")
    return model


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): each scan blended with another of the batch, labels alike.

    λ ~ Beta(α, α), folded to λ ≥ 0.5 so every mixed scan keeps its own scan dominant (as
    fastai's MixUp does); one λ per batch. Uses torch's global RNG, which the run's seed sets.
    Written here because it is five lines on the engine's own batches (timm's ``Mixup``
    assumes integer multi-class targets, not binary or multi-label rows).
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    lam = max(lam, 1.0 - lam)
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def val_auc(probs: torch.Tensor, targets: torch.Tensor, task: Task) -> torch.Tensor:
    """AUC as MedMNIST reports it (one-vs-rest averaged for several classes/labels).

    Labels or classes with only one outcome in the validation split have no AUC; they are
    left out of the average instead of counting as 0 (torchmetrics' macro behaviour), which
    would otherwise make checkpoint selection depend on label prevalence.
    """
    if task == "multiclass":
        y = targets.argmax(1)
        present = [k for k in range(probs.shape[1]) if 0 < int((y == k).sum()) < len(y)]
        if len(present) == probs.shape[1]:
            k = probs.shape[1]
            return multiclass_auroc(probs, y, num_classes=k, average="macro")
        scores = [binary_auroc(probs[:, k], (y == k).long()) for k in present]
    else:
        cols = [j for j in range(probs.shape[1]) if 0 < int(targets[:, j].sum()) < len(targets)]
        scores = [binary_auroc(probs[:, j], targets[:, j].long()) for j in cols]
    if not scores:
        return torch.tensor(float("nan"), device=probs.device)
    return torch.stack(scores).mean()


class ClassifierModule(L.LightningModule):
    """Loss, validation AUC and optimiser for a classifier; ``dxkit_meta`` rides along in
    every checkpoint so a checkpoint alone rebuilds the model and its preprocessing."""

    class_weight: torch.Tensor | None  # a registered buffer, set in __init__

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        train: TrainConfig,
        class_weight: torch.Tensor | None = None,
        dxkit_meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.cfg = train
        self.lr = train.lr  # read and written by Lightning's learning-rate finder
        self.train_size: int | None = None  # set by the progressive-resize callback
        self.dxkit_meta = dxkit_meta or {}
        self.register_buffer("class_weight", class_weight, persistent=False)
        self._val_probs: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    # -- steps ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.task == "multiclass":
            # One-hot rows as class indices; mixed (soft) rows as class probabilities.
            target = y.argmax(1) if not self.cfg.mixup else y
            return F.cross_entropy(logits, target, weight=self.class_weight)
        return F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.class_weight)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        if self.training and self.train_size and x.shape[-1] != self.train_size:
            mode = "bilinear" if x.dim() == 4 else "trilinear"
            size = (self.train_size,) * (x.dim() - 2)
            x = F.interpolate(x, size=size, mode=mode, align_corners=False)
        return x, y

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to minimise, loss to show) for one training batch (mixup, ensemble aware)."""
        if self.cfg.mixup:
            x, y = mixup(x, y, self.cfg.mixup)
        if isinstance(self.model, DeepEnsemble):
            # Summed, each member receives the gradient it would get alone; shown as the
            # members' mean so the curve compares with a single network's.
            losses = [self.loss(logits, y) for logits in self.model.member_logits(x)]
            loss = torch.stack(losses).sum()
            return loss, loss.detach() / len(losses)
        loss = self.loss(self(x), y)
        return loss, loss.detach()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, shown = self.training_loss(*batch)
        self.log("train_loss", shown, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self._val_probs.append(probabilities(logits.float(), self.task).detach())
        self._val_targets.append(y.detach())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        probs = torch.cat(self._val_probs)
        targets = torch.cat(self._val_targets)
        self._val_probs.clear()
        self._val_targets.clear()
        if self.trainer.world_size > 1:
            # all_gather of one tensor returns one tensor (its stub also allows collections)
            probs = cast(torch.Tensor, self.all_gather(probs)).flatten(0, 1)
            targets = cast(torch.Tensor, self.all_gather(targets)).flatten(0, 1)
        eps = 1e-7
        if self.task == "multiclass":
            vloss = F.nll_loss(probs.clamp_min(eps).log(), targets.argmax(1))
            acc = (probs.argmax(1) == targets.argmax(1)).float().mean()
        else:
            vloss = F.binary_cross_entropy(probs.clamp(eps, 1 - eps), targets)
            acc = ((probs >= 0.5).float() == targets).float().mean()
        self.log("val_loss", vloss, prog_bar=False)
        self.log("val_auc", val_auc(probs, targets, self.task), prog_bar=True)
        self.log("val_acc", acc, prog_bar=True)

    # -- optimisation -----------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        body, head = split_head(self.model)
        groups: list[dict[str, Any]] = [
            {"params": body, "lr": self.lr * self.cfg.body_lr_factor, "name": "body"},
            {"params": head, "lr": self.lr, "name": "head"},
        ]
        groups = [g for g in groups if g["params"]]
        wd = self.cfg.weight_decay
        if self.cfg.optimizer == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(groups, weight_decay=wd)
        elif self.cfg.optimizer == "adam":
            opt = torch.optim.Adam(groups, weight_decay=wd)
        else:
            opt = torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=wd)
        if self.cfg.schedule == "constant":
            return opt
        sched = build_scheduler(
            opt,
            self.cfg.schedule,
            float(self.trainer.estimated_stepping_batches),
            self.cfg.warmup_fraction,
            [g["lr"] for g in groups],
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["dxkit"] = self.dxkit_meta
