"""Exam networks as they are trained: the Lightning module of one slice-stack network, and
the bundle's metadata and writer (``checkpoints/bundle.ckpt``, kind ``"exam"``).

One ``ExamModule`` trains one network of an exam model: the multi-task network of a plane
(one head per finding) or the network of one (finding, plane) pair as in Bien et al. 2018.
How the bundle runs (plane probabilities, fusion, loading) is ``dxkit.infer.exam_model``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional import auroc

from dxkit import __version__
from dxkit.data.exam import ExamDataset, IntensityNormalization
from dxkit.data.source import Task
from dxkit.infer.contract import ExamMetadata, ExamRecipe, InferenceRecipe
from dxkit.infer.exam_model import (
    FusionInputs,
    build_networks,
    log_odds,
    standardize,
)
from dxkit.models.fusion import PlaneFusion
from dxkit.models.slicestack import ExamNetworks, SliceStackNet
from dxkit.train.config import RunConfig, TrainConfig
from dxkit.train.module import ClassifierModule

log = logging.getLogger(__name__)
__all__ = [
    "ExamModule",
    "FusionInputs",
    "build_networks",
    "bundle_meta",
    "fusion_training_inputs",
    "model_meta",
    "save_exam_bundle",
]  # fmt: skip


class ExamModule(ClassifierModule):
    """Class-weighted BCE and tuning-set AUC for one slice-stack network of one plane.

    ``label_index`` picks the network's findings out of the batch's label vector (all of them
    for a multi-task network, one for the paper's per-finding networks). Optimiser, schedule,
    freeze/unfreeze and checkpoint metadata come from ``ClassifierModule``.
    """

    def __init__(
        self,
        net: SliceStackNet,
        plane: str,
        label_index: Sequence[int],
        train: TrainConfig,
        pos_weight: torch.Tensor | None = None,
        dxkit_meta: dict[str, Any] | None = None,
    ) -> None:
        task: Task = "binary" if len(label_index) == 1 else "multilabel"
        super().__init__(net, task, train, pos_weight, dxkit_meta)
        self.plane = plane
        self.label_index = list(label_index)

    def forward(self, series: Any, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(series, lengths)

    def _inputs(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        series = batch["planes"][self.plane]
        lengths = batch["lengths"][self.plane] if isinstance(series, torch.Tensor) else None
        return self(series, lengths), batch["labels"][:, self.label_index]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch  # exam batches are dicts; the image-resizing hook does not apply

    def on_train_epoch_start(self) -> None:
        # New (still seeded) series augmentations every epoch; workers are re-created per
        # epoch (not persistent), so they see the new epoch too.
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if isinstance(dataset, ExamDataset):
            dataset.set_epoch(self.current_epoch)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        logits, y = self._inputs(batch)
        loss = self.loss(logits, y)
        self.log("train_loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=len(y))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        logits, y = self._inputs(batch)
        self._val_probs.append(logits.float().sigmoid().detach())
        self._val_targets.append(y.detach())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        probs, targets = torch.cat(self._val_probs), torch.cat(self._val_targets)
        self._val_probs.clear()
        self._val_targets.clear()
        # Mean AUC over the findings whose tuning labels hold both classes (a finding with
        # one class has no AUC; torchmetrics would report 0 for it).
        aucs: list[torch.Tensor] = [
            auroc(probs[:, j], targets[:, j].long(), task="binary")  # type: ignore[misc]
            for j in range(probs.shape[1])
            if 0 < float(targets[:, j].sum()) < len(targets)
        ]
        score = torch.stack(aucs).mean() if aucs else torch.tensor(float("nan"))
        vloss = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), targets)
        self.log("val_loss", vloss)
        self.log("val_auc", score, prog_bar=True)


def fusion_training_inputs(kind: str, oof_probs: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """The regression's training inputs: out-of-fold probabilities, or log-odds standardised
    within each fold (each fold's networks on their own held-out fold)."""
    return oof_probs if kind == "probability" else standardize(log_odds(oof_probs), folds)


# --------------------------------------------------------------------------- the bundle


def model_meta(cfg: RunConfig) -> dict[str, Any]:
    """The networks' recipe: enough to rebuild them with ``build_networks``."""
    return {
        "backbone": cfg.model.name,
        "in_chans": 1,
        "pooling": cfg.exam.pooling,
        "variant": cfg.exam.variant,
        "planes": list(cfg.exam.planes),
        "findings": list(cfg.exam.findings),
        "options": dict(cfg.model.options),
    }


def bundle_meta(
    cfg: RunConfig,
    *,
    normalization: IntensityNormalization,
    fusion: PlaneFusion,
    fusion_inputs: FusionInputs,
    thresholds: list[float],
    tuning: dict[str, Any],
    oof: dict[str, Any],
    networks: dict[str, Any] | None = None,
    tta: bool = False,
    input_profile: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The bundle's ``"dxkit"`` entry: everything but the weights, weights_only-safe.

    ``tuning`` names the held-out exams (``exam_ids``, ``fit_exam_ids``, ``auc``);
    ``oof`` records what the fusion was fitted on: ``exam_ids``, ``fold_of_exam``
    (the fold whose networks predicted each exam; they trained on the other folds),
    ``oof_plane_probs`` ``(N, P, F)`` and ``labels`` ``(N, F)``.
    """
    ev = cfg.evaluate
    return ExamMetadata(
        dxkit_version=__version__,
        config=cfg.model_dump(mode="json"),
        dataset="mrnet",
        findings=list(cfg.exam.findings),
        planes=list(cfg.exam.planes),
        model=ExamRecipe.model_validate(model_meta(cfg)),
        networks=dict(networks or {}),
        normalization=normalization.to_dict(),
        size=cfg.preprocess.size,
        thresholds=[float(t) for t in thresholds],
        threshold_method=ev.threshold,
        thresholds_from=f"tuning set: {len(tuning['exam_ids'])} held-out MRNet train exams",
        tuning=tuning,
        fusion={
            "state": fusion.to_state(),
            "folds": int(cfg.exam.fusion_folds),
            "inputs": fusion_inputs.to_state(),
            **oof,
        },
        inference=InferenceRecipe(tta=tta),
        input_profile=input_profile,
    ).dump()


def save_exam_bundle(path: Path, meta: dict[str, Any], networks: ExamNetworks) -> Path:
    """Write the bundle atomically (temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: {n: t.detach().cpu() for n, t in v.state_dict().items()}
        for k, v in networks.nets.items()
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"dxkit": meta, "state_dicts": state}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
