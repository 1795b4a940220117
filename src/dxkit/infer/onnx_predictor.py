"""Run an exported ``.onnx`` classifier through ONNX Runtime with ``Predictor``'s interface.

The graph holds the preprocessing (see ``export.py``); this class only reads scans, runs a
head-CT model's cache recipe (``CTRecipe.prepare``, the eager path's own code), matches
their channel count to the graph and groups scans of one size into a batch. The server and
``dxkit predict`` use it whenever they are given an ``.onnx`` file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dxkit.errors import CheckpointError, InvalidScanError, MissingFileError
from dxkit.infer.export import FORMAT, INPUT_NAME, METADATA_KEY, graph_input_channels, sidecar_path
from dxkit.infer.predictor import Prediction, PredictsFiles, flag_inputs, prediction
from dxkit.preprocess.spec import Preprocessing


def read_onnx_metadata(path: Path) -> dict[str, Any]:
    """The dxkit metadata embedded in the graph, else its JSON sidecar."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and onnx's errors share no base class
        raise CheckpointError(f"{path}: not a readable ONNX file ({type(err).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    text = props.get(METADATA_KEY)
    if text is None and sidecar_path(path).is_file():
        text = sidecar_path(path).read_text()
    if text is None:
        raise CheckpointError(
            f"{path}: no dxkit metadata (embedded or in {sidecar_path(path).name}); export "
            "it with `dxkit export CHECKPOINT --format onnx`"
        )
    meta = json.loads(text)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def onnx_kind(path: str | Path) -> str:
    """``classify``, ``segment`` or ``exam``: the kind of model an ``.onnx`` export holds."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such ONNX file; export one with `dxkit export`")
    return str(read_onnx_metadata(path).get("kind", "classify"))


class OnnxPredictor(PredictsFiles):
    """Same interface as ``Predictor`` (``describe``, ``prepare``, ``predict_arrays``,
    ``predict_files``), backed by an ONNX Runtime CPU session."""

    def __init__(self, path: Path, meta: dict[str, Any], threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = path
        self.meta = meta
        self.preprocessing = Preprocessing.model_validate(meta["preprocessing"])
        self.task: str = meta["task"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def from_path(cls, path: str | Path, threads: int | None = None) -> OnnxPredictor:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"{path}: no such ONNX file; export one with `dxkit export`")
        meta = read_onnx_metadata(path)
        if meta.get("kind", "classify") != "classify":
            raise CheckpointError(
                f"{path}: a {meta['kind']!r} export, not a classifier; run it with dxkit "
                "predict/serve, or load it with segment_onnx.load_segment_model (segment) or "
                "ExamPredictor.from_bundle (exam)"
            )
        return cls(path, meta, threads)

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"])

    @property
    def thresholds(self) -> list[float]:
        return [float(t) for t in self.meta["thresholds"]]

    @property
    def input_profile(self) -> dict[str, Any] | None:
        """The checkpoint's training-input profile, exported with it (None in old exports)."""
        return self.meta.get("input_profile")

    def describe(self) -> dict[str, Any]:
        """What the model expects and says (same keys as ``Predictor.describe``)."""
        return {
            "model": self.meta["model"]["name"],
            "task": self.task,
            "findings": self.label_names,
            "thresholds": dict(zip(self.label_names, self.thresholds, strict=True)),
            "preprocessing": self.preprocessing.model_dump(mode="json"),
            "dxkit_version": self.meta.get("trained_with"),
            "graph": self.meta.get("graph", {}),
        }

    def prepare(self, array: np.ndarray, source: str = "scan") -> np.ndarray:
        """A read scan → the graph's input (raw values, channels matched, no batch axis)."""
        pre = self.preprocessing
        x = pre.ct.prepare(array, source) if pre.ct is not None else np.asarray(array)
        if x.ndim == pre.spatial_dims:
            x = x[None]
        if x.ndim != pre.spatial_dims + 1:
            raise InvalidScanError(
                f"{source}: expected a {pre.spatial_dims}-D scan (optionally channel-first), "
                f"got shape {tuple(np.shape(array))}"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InvalidScanError(f"{source}: contains NaN or infinite values; clean the scan")
        want = graph_input_channels(pre)
        if pre.windows and x.shape[0] != 1:
            raise InvalidScanError(
                f"{source}: CT windows need a single-channel scan in Hounsfield units, "
                f"got {x.shape[0]} channels; pass the DICOM or a 1-channel HU array"
            )
        if x.shape[0] != want:
            x = pre.adapt_channels(torch.from_numpy(x), source).numpy()
        return x

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and logits ``(N, L)`` for a batch of prepared scans of one size."""
        probs, logits = self.session.run(None, {INPUT_NAME: batch})
        return probs, logits

    def predict_arrays(
        self,
        arrays: Sequence[np.ndarray],
        sources: Sequence[str],
        modalities: Sequence[str | None] | None = None,
    ) -> list[Prediction]:
        """Probabilities and calls, each with the input guard's warning (``input_warning``,
        from the exported profile, checked as ``Predictor`` checks it)."""
        prepared = [self.prepare(a, s) for a, s in zip(arrays, sources, strict=True)]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, x in enumerate(prepared):
            by_shape[x.shape].append(i)
        probs: list[np.ndarray | None] = [None] * len(prepared)
        for indices in by_shape.values():
            out, _ = self.run(np.stack([prepared[i] for i in indices]))
            for i, p in zip(indices, out, strict=True):
                probs[i] = p
        predictions = [
            prediction(src, p, self.label_names, self.thresholds, self.task)  # type: ignore[arg-type]
            for src, p in zip(sources, probs, strict=True)
        ]
        return flag_inputs(predictions, self.input_profile, arrays, modalities)


def load_predictor(path: str | Path) -> Any:
    """``OnnxPredictor`` for an ``.onnx`` file, else ``Predictor.from_checkpoint``: what
    ``dxkit predict`` and ``dxkit serve`` call with a user's path."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return OnnxPredictor.from_path(path)
    from dxkit.infer.predictor import Predictor

    return Predictor.from_checkpoint(path)
