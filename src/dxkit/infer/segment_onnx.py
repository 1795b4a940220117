"""A segmenter exported to ONNX, and the runtime that serves it like ``SegmentModel``.

In the graph: the network, the sigmoids and — when the checkpoint records TTA — the flipped
view averaged in (``segment_model.segment_probabilities``, the function evaluation and
prediction call), from the model-size image ``(N, 1, S, S)`` to the probability map
``(N, 1, S, S)`` and, with a classifier head, its probability ``(N, 1)``.

Outside, in ``OnnxSegmentModel``: reading the radiograph and resizing it
(``segment_model.to_input``), and the image-level rule — mask score, call and
full-resolution mask — which ``segment_predict.predict_images`` applies to this model's
maps exactly as to the eager one's (one code path for the rule).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dxkit import __version__
from dxkit.errors import CheckpointError, ConfigError, MissingFileError
from dxkit.infer.device import ProgressCallback
from dxkit.infer.export import FORMAT, OPSET, save_graph, source_of
from dxkit.infer.segment_model import (
    LABEL,
    SegmenterRecipe,
    SegmentModel,
    load_segmenter,
    segment_probabilities,
    to_input,
)

log = logging.getLogger(__name__)
IMAGE = "image"
MAP, HEAD = "probability_map", "classifier"
OPERATING_POINT_KEYS = ("threshold", "min_area", "min_area_at_size", "classifier", "preferred")


class SegmentGraph(nn.Module):
    """Model-size image → pixel probabilities (and head probability): what ``SegmentModel
    .predict`` computes per batch, the recorded TTA included."""

    def __init__(self, model: nn.Module, tta: bool) -> None:
        super().__init__()
        self.model = model.eval()
        self.tta = tta

    def forward(self, x: torch.Tensor) -> Any:
        prob, head = segment_probabilities(self.model, x, self.tta)
        return prob if head is None else (prob, head)


def segment_metadata(checkpoint: Path, model: SegmentModel) -> dict[str, Any]:
    """What the runtime needs besides the graph (JSON-safe, no patient data)."""
    outputs = [MAP, HEAD] if model.has_classifier else [MAP]
    return {
        "format": FORMAT,
        "kind": "segment",
        "label_names": [LABEL],
        # the operating points (not the validation scores: those may be NaN, not JSON)
        "thresholds": {k: model.thresholds.get(k) for k in OPERATING_POINT_KEYS},
        "decision": model.decision,
        "tta": model.tta,
        "model": model.meta["model"],
        "preprocessing": {"size": model.size, "scaling": model.scaling},
        "input_profile": model.input_profile or None,  # the input guard, checked outside
        "graph": {
            "input": IMAGE,
            "input_layout": f"(N, 1, {model.size}, {model.size}), values in [0, 1]",
            "outputs": outputs,
            "inside": ["model", "sigmoid", *(["tta_flip_mean"] if model.tta else [])],
            "outside": [
                "read the radiograph (segment_predict.read_image)",
                "antialiased resize to the model size (segment_model.to_input)",
                "mask score, call and full-resolution mask (segment_predict.predict_images)",
                "the input guard against input_profile (preprocess.input_profile.check_inputs)",
            ],
            "opset": OPSET,
        },
        "source_checkpoint": source_of(checkpoint),
        "dxkit_version": __version__,
        "trained_with": model.meta.get("dxkit_version"),
    }


def export_segmenter_onnx(checkpoint: Path, out: Path) -> Path:
    """Write a ``kind: segment`` checkpoint as ``out`` (+ JSON sidecar)."""
    model = load_segmenter(checkpoint)
    graph = SegmentGraph(model.model.cpu(), model.tta)
    outputs = [MAP, HEAD] if model.has_classifier else [MAP]
    save_graph(
        graph, torch.zeros(1, 1, model.size, model.size), out,
        segment_metadata(checkpoint, model), [IMAGE], outputs,
        {IMAGE: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
        what=f"{checkpoint}: segmenter {model.meta['model'].get('architecture')!r}",
    )  # fmt: skip
    log.info("exported %s → %s", checkpoint.name, out)
    return out


class OnnxSegmentModel(SegmenterRecipe):
    """An exported segmenter with ``SegmentModel``'s interface (``size``, ``scaling``,
    ``thresholds``, ``tta``, ``has_classifier``, ``predict``) on ONNX Runtime's CPU."""

    def __init__(self, path: Path, meta: dict[str, Any], threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = path
        self.meta = {**meta, "inference": {"tta": bool(meta.get("tta"))}}
        self.size = int(meta["preprocessing"]["size"])
        self.scaling = meta["preprocessing"].get("scaling", "bits")
        self.thresholds: dict[str, Any] = dict(meta["thresholds"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @property
    def has_classifier(self) -> bool:
        return len(self.session.get_outputs()) > 1

    def predict(
        self,
        images: Sequence[np.ndarray],
        tta: bool | None = None,
        batch_size: int = 4,
        progress: ProgressCallback | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``SegmentModel.predict`` through the graph (its TTA is fixed at export)."""
        if tta is not None and tta != self.tta:
            raise ConfigError(
                f"{self.path}: exported with tta={self.tta}; the graph cannot change it — "
                "export again from the checkpoint"
            )
        maps, cls = [], []
        for start in range(0, len(images), batch_size):
            x = torch.stack([to_input(p, self.size) for p in images[start : start + batch_size]])
            out = self.session.run(None, {IMAGE: x.numpy()})
            maps.append(out[0][:, 0])
            if len(out) > 1:
                cls.append(out[1][:, 0])
            if progress is not None:
                progress(min(start + batch_size, len(images)), len(images))
        if not maps:
            return np.zeros((0, self.size, self.size), np.float32), None
        return np.concatenate(maps), np.concatenate(cls).astype(np.float64) if cls else None


def load_segment_model(path: str | Path) -> SegmentModel | OnnxSegmentModel:
    """A segmenter checkpoint (``SegmentModel``) or its ONNX export (``OnnxSegmentModel``):
    what ``dxkit predict`` and the server call with a user's path."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        return load_segmenter(path)
    from dxkit.infer.onnx_predictor import read_onnx_metadata

    if not path.is_file():
        raise MissingFileError(f"{path}: no such ONNX file; export one with `dxkit export`")
    meta = read_onnx_metadata(path)
    if meta.get("kind") != "segment":
        raise CheckpointError(f"{path}: a {meta.get('kind')!r} export, not a segmenter")
    return OnnxSegmentModel(path, meta)


def check_segment_export(checkpoint: Path, onnx_path: Path, seed: int = 0) -> float:
    """Max absolute difference (pixel map and head) between the checkpoint and its export on
    generated radiographs of 1.5× the model size (exercising the resize)."""
    eager, exported = load_segmenter(checkpoint), load_segment_model(onnx_path)
    rng = np.random.default_rng(seed)
    side = int(eager.size * 1.5)
    images = [rng.uniform(0, 1, (side, side)).astype(np.float32) for _ in range(2)]
    (maps_a, head_a), (maps_b, head_b) = eager.predict(images), exported.predict(images)
    diff = float(np.abs(maps_a - maps_b).max())
    if head_a is not None and head_b is not None:
        diff = max(diff, float(np.abs(head_a - head_b).max()))
    return diff
