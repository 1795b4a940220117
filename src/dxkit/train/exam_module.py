"""Exam networks as they are trained and run: the Lightning module of one slice-stack network,
batched inference over exams, and the exam-model bundle they travel in.

One ``ExamModule`` trains one network of an exam model: the multi-task network of a plane
(one head per finding) or the network of one (finding, plane) pair as in Bien et al. 2018.
The bundle (``checkpoints/bundle.ckpt``) holds every network's state dict beside the plane
fusion, the intensity normalisation and the thresholds, only as tensors and plain Python
values, so ``torch.load(weights_only=True)`` reads it (kind ``"exam"``).

(Bundle loading lives here rather than in ``dxkit.serve`` because ``dxkit.evaluate`` needs it
and imports never flow upward.)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.functional import auroc

from dxkit import __version__
from dxkit.data.exam import Exam, ExamDataset, IntensityNormalization, collate_exams
from dxkit.data.source import Task
from dxkit.errors import CheckpointError
from dxkit.models.fusion import PlaneFusion
from dxkit.models.slicestack import ExamNetworks, SliceStackNet
from dxkit.train.checkpoint import read_checkpoint
from dxkit.train.config import RunConfig, TrainConfig
from dxkit.train.module import ClassifierModule

log = logging.getLogger(__name__)
BUNDLE_FORMAT = "dxkit-exam-bundle/1"


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


# --------------------------------------------------------------------------- inference


def _loader(
    exams: Sequence[Exam],
    planes: Sequence[str],
    normalization: IntensityNormalization,
    size: int | None,
    batch_size: int,
) -> DataLoader:
    dataset = ExamDataset(exams, findings=[], planes=planes, normalization=normalization, size=size)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_exams)


@torch.no_grad()
def network_probabilities(
    net: nn.Module,
    exams: Sequence[Exam],
    plane: str,
    normalization: IntensityNormalization,
    size: int | None,
    *,
    batch_size: int = 2,
    tta: bool = False,
) -> np.ndarray:
    """Probabilities ``(N, net findings)`` of one network on one plane of ``exams``
    (with ``tta``, averaged with the horizontally mirrored series, a training augmentation)."""
    net.eval()
    out = []
    for batch in _loader(exams, [plane], normalization, size, batch_size):
        series = batch["planes"][plane]
        probs = net(series).float().sigmoid()
        if tta:
            probs = (probs + net([s.flip(-1) for s in series]).float().sigmoid()) / 2
        out.append(probs)
    return torch.cat(out).numpy().astype(np.float64)


def exam_plane_probabilities(
    networks: ExamNetworks,
    exams: Sequence[Exam],
    normalization: IntensityNormalization,
    size: int | None,
    *,
    batch_size: int = 2,
    tta: bool = False,
) -> np.ndarray:
    """Plane-level probabilities ``(N, planes, findings)``: what ``PlaneFusion`` combines."""
    n_p, n_f = len(networks.planes), len(networks.findings)
    out = np.full((len(exams), n_p, n_f), np.nan)
    for p, plane in enumerate(networks.planes):
        if networks.variant == "multitask":
            out[:, p, :] = network_probabilities(
                networks.nets[plane], exams, plane, normalization, size,
                batch_size=batch_size, tta=tta,
            )  # fmt: skip
        else:
            for f, finding in enumerate(networks.findings):
                out[:, p, f] = network_probabilities(
                    networks.nets[f"{finding}__{plane}"], exams, plane, normalization, size,
                    batch_size=batch_size, tta=tta,
                )[:, 0]  # fmt: skip
    return out


# --------------------------------------------------------------------------- fusion inputs


def log_odds(probs: np.ndarray) -> np.ndarray:
    """Logits of probabilities (clipped away from 0 and 1)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def standardize(scores: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Z-scores of ``(N, P, F)`` scores per plane and finding, within each group (fold)."""
    out = np.empty_like(scores, dtype=np.float64)
    keys = np.zeros(len(scores), dtype=int) if groups is None else np.asarray(groups)
    for key in np.unique(keys):
        rows = keys == key
        mean, std = scores[rows].mean(axis=0), scores[rows].std(axis=0)
        out[rows] = (scores[rows] - mean) / np.where(std > 1e-8, std, 1.0)
    return out


@dataclass(frozen=True)
class FusionInputs:
    """How plane probabilities ``(N, P, F)`` become the fusion regression's inputs.

    ``probability``: as they are (Bien et al.). ``standardized_logit``: each network's
    log-odds minus ``mean``, over ``std`` — statistics of that network's outputs on exams it
    never trained on. Every network (each fold's, and the shipped ones) has its own offset
    and scale; out-of-fold outputs pooled raw mix those offsets, which can rank exams worse
    than any single plane (seen on small folds), and the shipped networks, trained on more
    exams, are more confident than the fold networks the regression learnt from.
    Standardising each network on held-out exams puts them all on one scale.
    """

    kind: str = "probability"
    mean: np.ndarray | None = None  # (P, F)
    std: np.ndarray | None = None

    def __call__(self, plane_probs: np.ndarray) -> np.ndarray:
        if self.kind == "probability":
            return np.asarray(plane_probs, dtype=np.float64)
        if self.mean is None or self.std is None:
            raise CheckpointError("standardized_logit fusion inputs lack their mean/std")
        return (log_odds(plane_probs) - self.mean) / np.where(self.std > 1e-8, self.std, 1.0)

    @classmethod
    def from_held_out(cls, kind: str, plane_probs: np.ndarray) -> FusionInputs:
        """Statistics of the shipped networks on held-out (tuning) exams."""
        if kind == "probability":
            return cls(kind)
        scores = log_odds(plane_probs)
        return cls(kind, scores.mean(axis=0), scores.std(axis=0))

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": self.kind}
        if self.mean is not None and self.std is not None:
            state |= {"mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std)}
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> FusionInputs:
        if not state or state.get("kind", "probability") == "probability":
            return cls("probability")
        if state["kind"] != "standardized_logit" or "mean" not in state or "std" not in state:
            raise CheckpointError(f"unknown fusion inputs {state.get('kind')!r} in the bundle")
        return cls(state["kind"], state["mean"].double().numpy(), state["std"].double().numpy())


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
) -> dict[str, Any]:
    """The bundle's ``"dxkit"`` entry: everything but the weights, weights_only-safe.

    ``tuning`` names the held-out exams (``exam_ids``, ``fit_exam_ids``, ``auc``);
    ``oof`` records what the fusion was fitted on: ``exam_ids``, ``fold_of_exam``
    (the fold whose networks predicted each exam; they trained on the other folds),
    ``oof_plane_probs`` ``(N, P, F)`` and ``labels`` ``(N, F)``.
    """
    ev = cfg.evaluate
    return {
        "format": BUNDLE_FORMAT,
        "kind": "exam",
        "dxkit_version": __version__,
        "config": cfg.model_dump(mode="json"),
        "dataset": "mrnet",
        "findings": list(cfg.exam.findings),
        "planes": list(cfg.exam.planes),
        "model": model_meta(cfg),
        "networks": dict(networks or {}),
        "normalization": normalization.to_dict(),
        "size": cfg.preprocess.size,
        "thresholds": [float(t) for t in thresholds],
        "threshold_method": ev.threshold,
        "thresholds_from": f"tuning set: {len(tuning['exam_ids'])} held-out MRNet train exams",
        "tuning": tuning,
        "fusion": {
            "state": fusion.to_state(),
            "folds": int(cfg.exam.fusion_folds),
            "inputs": fusion_inputs.to_state(),
            **oof,
        },
    }


def build_networks(model_meta: Mapping[str, Any]) -> ExamNetworks:
    """The (untrained) networks described by a bundle's ``model`` entry."""
    return ExamNetworks(
        model_meta["backbone"],
        model_meta["planes"],
        model_meta["findings"],
        variant=model_meta["variant"],
        in_chans=int(model_meta.get("in_chans", 1)),
        pooling=model_meta["pooling"],
        **dict(model_meta.get("options", {})),
    )


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


@dataclass
class ExamModel:
    """A trained exam model: networks, plane fusion, input normalisation and thresholds."""

    networks: ExamNetworks
    fusion: PlaneFusion
    fusion_inputs: FusionInputs
    normalization: IntensityNormalization
    size: int | None
    thresholds: list[float]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def findings(self) -> list[str]:
        return list(self.networks.findings)

    @property
    def planes(self) -> list[str]:
        return list(self.networks.planes)

    def plane_probabilities(
        self, exams: Sequence[Exam], tta: bool = False, batch_size: int = 2
    ) -> np.ndarray:
        """``(N, planes, findings)`` probabilities of the plane networks."""
        return exam_plane_probabilities(
            self.networks, exams, self.normalization, self.size, batch_size=batch_size, tta=tta
        )

    def predict(
        self, exams: Sequence[Exam], tta: bool = False, batch_size: int = 2
    ) -> tuple[np.ndarray, np.ndarray]:
        """Plane probabilities ``(N, P, F)`` and fused exam probabilities ``(N, F)``."""
        planes = self.plane_probabilities(exams, tta=tta, batch_size=batch_size)
        return planes, self.fusion.predict_proba(self.fusion_inputs(planes))


def load_exam_bundle(path: str | Path) -> ExamModel:
    """Rebuild an exam model from ``bundle.ckpt`` (read with ``weights_only=True``)."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    meta = ckpt["dxkit"]
    if meta.get("kind") != "exam" or meta.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(
            f"{path}: kind {meta.get('kind')!r}, format {meta.get('format')!r} is not an exam "
            f"bundle ({BUNDLE_FORMAT}); pass checkpoints/bundle.ckpt of an exam run"
        )
    networks = build_networks(meta["model"])
    states = ckpt.get("state_dicts", {})
    missing = sorted(set(networks.nets) - set(states))
    if missing:
        raise CheckpointError(f"{path}: the bundle lacks the weights of networks {missing}")
    for key, net in networks.nets.items():
        try:
            net.load_state_dict(states[key])
        except RuntimeError as err:
            raise CheckpointError(f"{path}: weights of network {key!r} do not fit: {err}") from None
    networks.eval()
    thresholds = [float(t) for t in meta.get("thresholds") or [0.5] * len(networks.findings)]
    if len(thresholds) != len(networks.findings) or not all(map(math.isfinite, thresholds)):
        raise CheckpointError(f"{path}: thresholds {thresholds} do not match the findings")
    return ExamModel(
        networks=networks,
        fusion=PlaneFusion.from_state(meta["fusion"]["state"]),
        fusion_inputs=FusionInputs.from_state(meta["fusion"].get("inputs")),
        normalization=IntensityNormalization.from_dict(meta["normalization"]),
        size=meta.get("size"),
        thresholds=thresholds,
        meta=meta,
        path=path,
    )
