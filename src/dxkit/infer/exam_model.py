"""A trained exam model as it runs: the plane networks over exams, the plane fusion, and the
bundle that carries them (``checkpoints/bundle.ckpt``, kind ``"exam"``).

The bundle holds every network's state dict beside the plane fusion, the intensity
normalisation and the thresholds, only as tensors and plain Python values, so
``torch.load(weights_only=True)`` reads it. Training (``dxkit.train.exam_fit``) fits the
fusion and the thresholds on these functions' outputs; evaluation, ``dxkit predict``, the
explainer and the server load the bundle here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dxkit.data.exam import Exam, ExamDataset, IntensityNormalization, collate_exams
from dxkit.errors import CheckpointError
from dxkit.infer.checkpoint import read_checkpoint, recorded_tta
from dxkit.infer.contract import EXAM_FORMAT, parse_metadata
from dxkit.infer.device import ProgressCallback, Runtime, runtime_for
from dxkit.models.fusion import PlaneFusion
from dxkit.models.slicestack import ExamNetworks

BUNDLE_FORMAT = EXAM_FORMAT


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
    runtime: Runtime | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Probabilities ``(N, net findings)`` of one network on one plane of ``exams``
    (with ``tta``, averaged with the horizontally mirrored series, a training augmentation),
    on ``runtime`` (default: the CPU in fp32); ``progress(n)`` after each batch of n exams."""
    rt = runtime or Runtime(torch.device("cpu"))
    net.to(rt.device).eval()
    out = []
    for batch in _loader(exams, [plane], normalization, size, batch_size):
        series = _to(batch["planes"][plane], rt.device)
        with rt.amp():
            probs = net(series).float().sigmoid()
            if tta:
                probs = (probs + net([s.flip(-1) for s in series]).float().sigmoid()) / 2
        out.append(probs.cpu())
        if progress is not None:
            progress(len(probs))
    return torch.cat(out).numpy().astype(np.float64)


def _to(series: Any, device: torch.device) -> Any:
    """A collated plane (a padded tensor or a list of per-exam tensors) on ``device``."""
    if isinstance(series, torch.Tensor):
        return series.to(device)
    return [s.to(device) for s in series]


def exam_plane_probabilities(
    networks: ExamNetworks,
    exams: Sequence[Exam],
    normalization: IntensityNormalization,
    size: int | None,
    *,
    batch_size: int = 2,
    tta: bool = False,
    runtime: Runtime | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Plane-level probabilities ``(N, planes, findings)``: what ``PlaneFusion`` combines;
    ``progress(done, total)`` counts exams through every network."""
    n_p, n_f = len(networks.planes), len(networks.findings)
    out = np.full((len(exams), n_p, n_f), np.nan)
    total, done = len(exams) * len(networks.nets), [0]

    def step(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    for p, plane in enumerate(networks.planes):
        if networks.variant == "multitask":
            out[:, p, :] = network_probabilities(
                networks.nets[plane], exams, plane, normalization, size,
                batch_size=batch_size, tta=tta, runtime=runtime, progress=step,
            )  # fmt: skip
        else:
            for f, finding in enumerate(networks.findings):
                out[:, p, f] = network_probabilities(
                    networks.nets[f"{finding}__{plane}"], exams, plane, normalization, size,
                    batch_size=batch_size, tta=tta, runtime=runtime, progress=step,
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

    @property
    def input_profile(self) -> dict[str, Any] | None:
        """Per plane, the training volumes' profile (``preprocess.input_profile``; None in
        bundles written before the input guard)."""
        return self.meta.get("input_profile")

    @property
    def tta(self) -> bool:
        """The recipe the thresholds were fitted with (``inference.tta``, else the config's
        ``evaluate.tta``): what evaluate, predict, explain and the server all apply."""
        return recorded_tta(self.meta)

    def plane_probabilities(
        self,
        exams: Sequence[Exam],
        tta: bool | None = None,
        batch_size: int = 2,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """``(N, planes, findings)`` probabilities of the plane networks (``tta`` defaults to
        the recipe), where training would run them (CUDA when present, fp32 on the CPU)."""
        return exam_plane_probabilities(
            self.networks, exams, self.normalization, self.size, batch_size=batch_size,
            tta=self.tta if tta is None else tta, runtime=runtime_for(self.meta.get("config")),
            progress=progress,
        )  # fmt: skip

    def predict(
        self,
        exams: Sequence[Exam],
        tta: bool | None = None,
        batch_size: int = 2,
        progress: ProgressCallback | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Plane probabilities ``(N, P, F)`` and fused exam probabilities ``(N, F)``."""
        planes = self.plane_probabilities(exams, tta, batch_size, progress)
        return planes, self.fusion.predict_proba(self.fusion_inputs(planes))


def load_exam_bundle(path: str | Path) -> ExamModel:
    """Rebuild an exam model from ``bundle.ckpt`` (read with ``weights_only=True``)."""
    path = Path(path)
    ckpt = read_checkpoint(path, check=False)
    meta = ckpt["dxkit"]
    if meta.get("kind") != "exam":
        raise CheckpointError(
            f"{path}: kind {meta.get('kind', 'classify')!r}, format {meta.get('format')!r} is not "
            f"an exam bundle ({BUNDLE_FORMAT}); pass checkpoints/bundle.ckpt of an exam run"
        )
    parse_metadata(meta, path)  # the contract of its kind and format version
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
    return exam_model_from(networks, meta, path)


def exam_model_from(networks: Any, meta: dict[str, Any], path: Path) -> ExamModel:
    """An ``ExamModel`` of loaded ``networks`` (PyTorch, or ONNX Runtime sessions) and the
    bundle's fusion, normalisation and thresholds (its ``meta``)."""
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
