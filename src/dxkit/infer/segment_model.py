"""A trained segmenter rebuilt from its checkpoint, and how its maps become decisions.

The checkpoint's ``"dxkit"`` entry (kind ``segment``) carries everything evaluation and
prediction need: the network recipe, the preprocessing (input size, radiograph scaling),
the label, the config, the split's ImageIds and the operating points chosen on validation.

Mask → image decision. The mask path calls an image positive when more than ``min_area``
pixels of the model-size map exceed ``threshold`` (``dxkit.infer.segment_decision``). Its
image-level *score* is the ``k``-th largest pixel probability with ``k = max(min_area, 1)``:
"score > threshold" is exactly that decision, so one number gives both the AUC and the calls
(before ``min_area`` is chosen, ``k = 1``: the map's maximum).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dxkit.errors import CheckpointError
from dxkit.infer.checkpoint import read_checkpoint, recorded_tta
from dxkit.infer.contract import SEGMENT_FORMAT, parse_metadata
from dxkit.infer.device import ProgressCallback, runtime_for
from dxkit.io.radiograph import Scaling
from dxkit.models.segment import create_segmenter

FORMAT = SEGMENT_FORMAT
LABEL = "pneumothorax"


def build_segmenter(model_meta: dict[str, Any]) -> nn.Module:
    """The (untrained) network described by a checkpoint's ``model`` entry."""
    return create_segmenter(
        model_meta["architecture"],
        model_meta["encoder"],
        in_chans=int(model_meta.get("in_chans", 1)),
        num_classes=1,
        classifier=bool(model_meta.get("classifier", False)),
    )


def to_input(pixels: np.ndarray, size: int) -> torch.Tensor:
    """A radiograph ``(H, W)`` in [0, 1] → ``(1, size, size)``, resized as the training
    images were (``dxkit.data.sources.siim.resize_pair``: antialiased bilinear)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x[0].clamp_(0.0, 1.0)


def mask_scores(maps: np.ndarray, min_area: int) -> np.ndarray:
    """Image-level score of the mask path: the ``max(min_area, 1)``-th largest probability."""
    flat = np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)
    k = max(int(min_area), 1)
    if k > flat.shape[1]:  # no mask can be that large: never positive
        return np.zeros(len(flat), dtype=np.float64)
    return np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k].astype(np.float64)


def score_threshold(threshold: float) -> float:
    """The report's ``p >= t`` convention for the mask path's ``score > threshold`` rule:
    the smallest float32 above ``threshold`` (probabilities are float32)."""
    t32 = np.float32(threshold)
    return float(t32 if float(t32) > threshold else np.nextafter(t32, np.float32(np.inf)))


def full_resolution_mask(
    prob_map: np.ndarray, shape: tuple[int, int], threshold: float, min_area: int
) -> np.ndarray:
    """The ``uint8`` 0/1 mask at the original resolution: empty unless the model-size map has
    at least ``max(min_area, 1)`` pixels above ``threshold``, else the bilinearly upsampled
    map above ``threshold``."""
    prob = np.asarray(prob_map, dtype=np.float32)
    if int((prob > threshold).sum()) < max(int(min_area), 1):
        return np.zeros(shape, dtype=np.uint8)
    up = F.interpolate(torch.from_numpy(prob)[None, None], size=shape, mode="bilinear")
    return (up[0, 0].numpy() > threshold).astype(np.uint8)


class SegmenterRecipe:
    """What a segmenter's metadata says about serving it, shared by the eager model and its
    ONNX export: the deciding path, the training input profile and the TTA recipe."""

    meta: dict[str, Any]

    @property
    def decision(self) -> str:
        return str(self.meta.get("decision", "segmenter"))

    @property
    def input_profile(self) -> dict[str, Any] | None:
        """The training radiographs' profile (``preprocess.input_profile``; None in old files)."""
        return self.meta.get("input_profile")

    @property
    def tta(self) -> bool:
        """The recipe the thresholds were chosen with (``inference.tta``, else the config's
        ``evaluate.tta``): what evaluate, predict, explain and the server all apply."""
        return recorded_tta(self.meta)


@dataclass
class SegmentModel(SegmenterRecipe):
    """A segmenter in eval mode with its input size, scaling and validation thresholds."""

    model: nn.Module
    size: int
    scaling: Scaling
    thresholds: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def has_classifier(self) -> bool:
        return bool(self.meta["model"].get("classifier", False))

    @torch.no_grad()
    def predict(
        self,
        images: Sequence[np.ndarray],
        tta: bool | None = None,
        batch_size: int = 4,
        progress: ProgressCallback | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probability maps ``(N, size, size)`` and classifier probabilities ``(N,)`` (None
        without a head); with ``tta`` (default: the recipe) averaged with the horizontally
        flipped image. Runs where training would (CUDA when present, fp32 on the CPU)."""
        use_tta = self.tta if tta is None else tta
        rt = runtime_for(self.meta.get("config"))
        model = self.model.to(rt.device).eval()
        maps, cls = [], []
        for start in range(0, len(images), batch_size):
            x = torch.stack([to_input(p, self.size) for p in images[start : start + batch_size]])
            with rt.amp():
                prob, head = segment_probabilities(model, x.to(rt.device), use_tta)
            maps.append(prob[:, 0].cpu().numpy())
            if head is not None:
                cls.append(head[:, 0].cpu().numpy())
            if progress is not None:
                progress(min(start + batch_size, len(images)), len(images))
        if not maps:
            return np.zeros((0, self.size, self.size), np.float32), None
        return np.concatenate(maps), np.concatenate(cls).astype(np.float64) if cls else None


def _forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    out = model(x)
    if isinstance(out, tuple):
        return out[0].float().sigmoid(), out[1].float().sigmoid()
    return out.float().sigmoid(), None


def segment_probabilities(
    model: nn.Module, x: torch.Tensor, tta: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pixel probabilities ``(N, 1, S, S)`` and head probabilities ``(N, 1)`` (None without
    a head) of a prepared batch; with ``tta`` averaged with the horizontally flipped batch.
    Threshold choice in training, evaluation and prediction all call this."""
    prob, head = _forward(model, x)
    if tta:
        prob_f, head_f = _forward(model, x.flip(-1))
        prob = (prob + prob_f.flip(-1)) / 2
        head = None if head is None or head_f is None else (head + head_f) / 2
    return prob, head


def load_segmenter(path: str | Path) -> SegmentModel:
    """Rebuild a segmenter from a ``kind: segment`` checkpoint (``weights_only=True``)."""
    path = Path(path)
    ckpt = read_checkpoint(path, check=False)
    meta = ckpt["dxkit"]
    if meta.get("kind") != "segment":
        raise CheckpointError(
            f"{path}: kind {meta.get('kind', 'classify')!r}, format {meta.get('format')!r} is not "
            f"a segmenter checkpoint ({FORMAT}); pass checkpoints/best.ckpt of a segment run"
        )
    parse_metadata(meta, path)  # the contract of its kind and format version
    model = build_segmenter(meta["model"])
    state = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the segmenter: {err}") from None
    model.eval()
    thresholds = dict(meta.get("thresholds") or {})
    t = thresholds.get("threshold")
    if t is None or not math.isfinite(float(t)):
        raise CheckpointError(
            f"{path}: no validation thresholds in the checkpoint (training did not finish); "
            "use checkpoints/best.ckpt of a completed run"
        )
    pre = meta["preprocessing"]
    return SegmentModel(
        model=model,
        size=int(pre["size"]),
        scaling=pre.get("scaling", "bits"),
        thresholds=thresholds,
        meta=meta,
        path=path,
    )
