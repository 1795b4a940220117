"""The models a server holds: loaded once at start-up, each answering predict and explain.

A ``ServedModel`` wraps a ``Predictor`` (a ``.ckpt``) or an ``OnnxPredictor`` (an
``.onnx``) and turns an uploaded ``Scan`` into probabilities per finding. A stack of slices
(a DICOM series, a multi-frame file, a 3-D ``.npy``) given to a 2-D classifier is scored
slice by slice and the series takes each finding's highest slice — the way slice-level
head-CT models are read — and that slice is reported as the deciding one.
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dxkit.errors import CheckpointError, MissingFileError
from dxkit.serve.uploads import RequestError, Scan

PREDICT_BATCH = 16
EXPLAIN_BATCH = 8
MAX_EXPLAIN_SLICES = 64  # beyond this, only the deciding slice gets a heatmap
EXPLAIN_METHODS = ("gradcam", "gradcam++", "occlusion")  # scorecam is minutes per image on CPU


@dataclass
class Findings:
    """Probabilities per finding (``(L,)``); per slice when a stack was scored (``(D, L)``);
    per plane for an exam (``{plane: (L,)}``); and each finding's deciding slice per plane
    (``{plane: slice}``; None for a single image or a 3-D model)."""

    probabilities: np.ndarray
    per_slice: np.ndarray | None = None
    deciding: list[dict[str, int] | None] = field(default_factory=list)
    per_plane: dict[str, np.ndarray] | None = None
    input_warning: str | None = None  # preprocess.input_profile: unlike the training data
    positive: list[bool] | None = None  # the calls when the model's own rule made them
    segmentation: dict[str, Any] | None = None  # a segmenter's mask and image-level scores


@dataclass
class Explanation:
    """Heatmaps of one finding per plane: ``maps[plane]`` ``(N, H, W)`` at the scan's
    resolution for the slice indices ``slices[plane]``, in the method's own units
    (non-negative, comparable across the slices and planes of one answer)."""

    finding: str
    method: str
    layer: str
    probability: float
    maps: dict[str, np.ndarray]
    slices: dict[str, list[int]]
    peak: dict[str, Any]


def peak_of(maps: dict[str, np.ndarray], slices: dict[str, list[int]]) -> dict[str, Any]:
    """Plane, slice, row and column of the hottest point over all maps."""
    plane = max(maps, key=lambda p: float(maps[p].max()))
    n, y, x = np.unravel_index(int(np.argmax(maps[plane])), maps[plane].shape)
    return {"plane": plane, "slice": int(slices[plane][n]), "row": int(y), "column": int(x)}


def model_name(path: Path) -> str:
    """A short, URL-safe name: the run folder for ``runs/<run>/checkpoints/x.ckpt``, else the
    file's stem."""
    stem = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "model"


class ServedModel:
    """One classifier behind the API.

    Predictions of concurrent requests run in parallel, at most ``slots`` at a time over the
    whole server (one per core by default, each on one intra-op thread: several small
    teams of threads spinning on a shared CPU are measured far slower than one). Heatmaps
    use a private copy of the network, because Grad-CAM hooks on the shared one would
    record other requests' passes; heatmaps of one model run one at a time.
    """

    def __init__(
        self, name: str, path: Path, predictor: Any, backend: str, slots: Any = None
    ) -> None:
        self.name = name
        self.path = path
        self.predictor = predictor
        self.backend = backend
        self.kind = "classify"
        if backend == "onnx":
            self.pre, self.task = predictor.preprocessing, predictor.task
        else:
            self.pre, self.task = predictor.loaded.preprocessing, predictor.loaded.task
        self.slots = slots if slots is not None else threading.BoundedSemaphore(1)
        self.explain_lock = threading.Lock()
        self._cam_model: torch.nn.Module | None = None

    @property
    def label_names(self) -> list[str]:
        return list(self.predictor.label_names)

    @property
    def thresholds(self) -> list[float]:
        return [float(t) for t in self.predictor.thresholds]

    @property
    def needs_hounsfield(self) -> bool:
        return bool(self.pre.windows) or self.pre.ct is not None

    @property
    def can_explain(self) -> bool:
        return self.backend == "pytorch"

    def describe(self) -> dict[str, Any]:
        """The ``/v1/models`` entry: findings, thresholds, what to upload, preprocessing."""
        from dxkit.explain.cam import describe_expected

        info = self.predictor.describe()
        expected = describe_expected(self.pre)
        if self.pre.spatial_dims == 2:
            expected += (
                "; a stack of slices (DICOM series, multi-frame, 3-D .npy) is scored slice "
                "by slice and the series takes each finding's highest slice"
            )
        if self.needs_hounsfield:
            accepts = ["dicom", "dicom-series", "zip", "npy"]
        else:
            accepts = ["png", "jpeg", "dicom", "dicom-series", "zip", "npy"]
        return {
            "name": self.name,
            "file": self.path.name,
            "kind": self.kind,
            "backend": self.backend,
            "model": info["model"],
            "task": self.task,
            "findings": self.label_names,
            "thresholds": info["thresholds"],
            "expected_input": expected,
            "accepts": accepts,
            "spatial_dims": self.pre.spatial_dims,
            "hounsfield": self.needs_hounsfield,
            "preprocessing": info["preprocessing"],
            "explain": self.can_explain,
            "explain_methods": list(EXPLAIN_METHODS) if self.can_explain else [],
            "dxkit_version": info.get("dxkit_version"),
        }

    # --- input checks ------------------------------------------------------------------

    def scan_input(self, scan: Scan) -> np.ndarray:
        """The array this model reads from ``scan``, or a 422 saying what to send instead."""
        if scan.kind == "exam":
            raise RequestError(
                f"model {self.name!r} takes one scan, not a three-plane exam; choose an exam "
                "model or upload a single scan",
                422,
            )
        array = scan.planes["scan"]
        if self.needs_hounsfield:
            if scan.kind == "image":
                raise RequestError(
                    f"model {self.name!r} reads CT in Hounsfield units through windows; a "
                    "PNG/JPEG has no Hounsfield units — upload the DICOM file(s)",
                    422,
                )
            if scan.kind in ("dicom", "series") and not scan.hounsfield:
                raise RequestError(
                    f"model {self.name!r} reads CT in Hounsfield units, but the DICOM is "
                    f"{scan.modality or 'of unknown modality'} without a CT rescale; upload a "
                    "CT series",
                    422,
                )
        elif scan.hounsfield:
            raise RequestError(
                f"model {self.name!r} was trained on 0–255 images, not on CT Hounsfield units; "
                "choose a CT model for this scan",
                422,
            )
        if self.pre.spatial_dims == 3 and array.ndim != 4:
            raise RequestError(
                f"model {self.name!r} takes 3-D volumes; upload a DICOM series (or a zip of "
                "it), a multi-frame DICOM or a 3-D .npy, not a single image",
                422,
            )
        return array

    def _slice_input(self, stack: np.ndarray, i: int) -> np.ndarray:
        """Slice ``i`` of a ``(1, D, H, W)`` stack as the 2-D model's input; a 2.5-D model
        gets its neighbours s−1, s, s+1 (repeated at the ends of the series)."""
        if self.pre.ct is not None and self.pre.ct.context:
            d = stack.shape[1]
            return stack[0, [max(i - 1, 0), i, min(i + 1, d - 1)]]
        return stack[:, i]

    def _inputs(self, array: np.ndarray) -> list[np.ndarray]:
        if self.pre.spatial_dims == 2 and array.ndim == 4:
            return [self._slice_input(array, i) for i in range(array.shape[1])]
        return [array]

    # --- predict -------------------------------------------------------------------------

    def _probabilities(self, inputs: list[np.ndarray]) -> np.ndarray:
        names = self.label_names
        rows = []
        for start in range(0, len(inputs), PREDICT_BATCH):
            chunk = inputs[start : start + PREDICT_BATCH]
            sources = [f"slice {start + i + 1}" for i in range(len(chunk))]
            for p in self.predictor.predict_arrays(chunk, sources):
                rows.append([p.probabilities[n] for n in names])
        return np.asarray(rows, dtype=np.float64)

    def predict(self, scan: Scan) -> Findings:
        """Probabilities per finding for an uploaded scan."""
        array = self.scan_input(scan)
        inputs = self._inputs(array)
        with self.slots:
            per = self._probabilities(inputs)
        warning = self.input_warning(array, scan.modality)
        if len(inputs) == 1 and not (self.pre.spatial_dims == 2 and array.ndim == 4):
            return Findings(per[0], None, [None] * per.shape[1], input_warning=warning)
        combined = per.mean(axis=0) if self.task == "multiclass" else per.max(axis=0)
        deciding: list[dict[str, int] | None] = [{"scan": int(i)} for i in per.argmax(axis=0)]
        return Findings(combined, per, deciding, input_warning=warning)

    def input_warning(self, array: np.ndarray, modality: str | None = None) -> str | None:
        """The input guard's warning for ``array`` (None when like the training data), with
        the uploaded DICOM's Modality checked as ``dxkit predict`` checks it."""
        from dxkit.preprocess.input_profile import check_input

        return check_input(self.predictor.input_profile, array, modality)

    def decisions(self, probs: np.ndarray) -> list[bool]:
        """Positive or not per finding: the one decision rule of every predictor."""
        from dxkit.infer.thresholds import decide

        return list(decide(probs, self.label_names, self.thresholds, self.task).values())

    # --- explain -------------------------------------------------------------------------

    def check_explain(self, method: str) -> None:
        """Refuse early (before reading the upload) what ``explain`` cannot do."""
        if not self.can_explain:
            raise RequestError(
                f"model {self.name!r} runs as ONNX, which has no gradients for heatmaps; serve "
                "its .ckpt to explain (predictions are identical)",
                409,
            )
        if method not in EXPLAIN_METHODS:
            raise RequestError(
                f"heatmap method {method!r} is not offered here; use one of "
                f"{', '.join(EXPLAIN_METHODS)}",
                400,
            )

    def explain(
        self, scan: Scan, finding: str | None, method: str, findings: Findings
    ) -> Explanation:
        """Heatmaps of ``finding`` (default: the most probable) on the scan."""
        from dxkit.explain.cam import CamExplainer, default_finding, resolve_finding

        self.check_explain(method)
        array = self.scan_input(scan)
        index = resolve_finding(self.label_names, self.task, finding)
        if index is None:
            index = default_finding(findings.probabilities, self.task)
        with self.explain_lock, self.slots:
            if self._cam_model is None:
                self._cam_model = copy.deepcopy(self.predictor.model).eval()
            explainer = CamExplainer(
                self._cam_model, self.pre, self.label_names, self.task, method=method
            )
            if self.pre.spatial_dims == 2 and array.ndim == 4:
                maps, slices = self._explain_stack(explainer, array, index, findings)
            else:
                heat = explainer.explain(array, self.label_names[index], source="upload")
                maps = heat.raw if heat.raw.ndim == 3 else heat.raw[None]
                slices = list(range(maps.shape[0]))
        return Explanation(
            finding=self.label_names[index],
            method=method,
            layer=explainer.layer,
            probability=float(findings.probabilities[index]),
            maps={"scan": maps},
            slices={"scan": slices},
            peak=peak_of({"scan": maps}, {"scan": slices}),
        )

    def _explain_stack(
        self, explainer: Any, stack: np.ndarray, index: int, findings: Findings
    ) -> tuple[np.ndarray, list[int]]:
        from dxkit.explain.cam import upsample_maps

        depth = stack.shape[1]
        deciding = (findings.deciding[index] or {}).get("scan", 0)
        slices = list(range(depth)) if depth <= MAX_EXPLAIN_SLICES else [deciding]
        out = []
        for start in range(0, len(slices), EXPLAIN_BATCH):
            chosen = slices[start : start + EXPLAIN_BATCH]
            x = torch.stack([self.predictor.prepare(self._slice_input(stack, i)) for i in chosen])
            out.append(upsample_maps(explainer.maps(x, index), tuple(stack.shape[2:])))
        return np.maximum(np.concatenate(out), 0.0), slices


def _served(path: Path, threads: int | None, slots: Any) -> Any:
    """The served wrapper of one checkpoint or export, by its kind."""
    from dxkit.infer.checkpoint import checkpoint_kind
    from dxkit.infer.onnx_predictor import OnnxPredictor, onnx_kind

    onnx = path.suffix.lower() == ".onnx"
    kind = onnx_kind(path) if onnx else checkpoint_kind(path)
    if kind == "exam":
        from dxkit.infer.exam_predict import ExamPredictor
        from dxkit.serve.served_exam import ExamServedModel

        return ExamServedModel("", path, ExamPredictor.from_bundle(path), slots)
    if kind == "segment":
        from dxkit.infer.segment_onnx import load_segment_model
        from dxkit.serve.served_segment import SegmentServedModel

        return SegmentServedModel("", path, load_segment_model(path), slots)
    if kind != "classify":
        raise CheckpointError(
            f"{path}: a {kind!r} checkpoint (one network of an exam run); serve the run's "
            "checkpoints/bundle.ckpt"
        )
    if onnx:
        return ServedModel("", path, OnnxPredictor.from_path(path, threads=threads), "onnx", slots)
    from dxkit.infer.predictor import Predictor

    eager = Predictor.from_checkpoint(path, device="cpu")
    return ServedModel("", path, eager, "pytorch", slots)


def load_models(paths: list[Path], threads: int | None = None, parallel: int = 1) -> dict[str, Any]:
    """Load every checkpoint (``.ckpt``) or export (``.onnx``) once, under unique names;
    ``parallel`` inferences at a time over all models, ONNX sessions on ``threads`` threads."""
    models: dict[str, Any] = {}  # ServedModel, ExamServedModel or SegmentServedModel
    slots = threading.BoundedSemaphore(max(1, parallel))
    for path in paths:
        path = Path(path)
        if path.is_dir():
            from dxkit.infer.checkpoint import resolve_checkpoint

            path = resolve_checkpoint(path)
        if not path.is_file():
            raise MissingFileError(f"{path}: no such checkpoint or .onnx file")
        model = _served(path, threads, slots)
        base = model_name(path)
        name, n = base, 1
        while name in models:
            n += 1
            name = f"{base}-{model.backend}" if n == 2 else f"{base}-{n}"
        model.name = name
        models[name] = model
    if not models:
        raise MissingFileError("no model given; pass at least one .ckpt, run folder or .onnx")
    return models
