"""An exam bundle (MRNet) exported to ONNX, and the ``ExamModel`` that runs it.

In the graph: every plane network, each as the int8 export builds it
(``quantize_exam._export_network``: ``OneSeries``, one series ``(S, C, H, W)`` with any
number of slices → logits ``(1, F)``, slice pooling inside), under its own input and output
(``<network>/series`` → ``<network>/logits``) in one ``.onnx`` file. Outside, in NumPy and
the eager path's own functions: reading the exam, the intensity normalisation and resize
(``ExamDataset``), the sigmoid and the recorded TTA (``exam_model.network_probabilities``:
the mirrored series averaged in), and the plane fusion from the recorded coefficients
(``PlaneFusion``, ``FusionInputs``, stored in the metadata). At load, each network's
subgraph is cut out of the file (``onnx.utils.Extractor``) into its own ONNX Runtime
session (``quantize_exam.OrtNetwork``), so ``ExamModel.predict`` — the code ``dxkit
evaluate`` runs — drives the graphs as it drives the PyTorch networks.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from dxkit import __version__
from dxkit.errors import CheckpointError, ConfigError, MissingFileError
from dxkit.infer.exam_model import ExamModel, exam_model_from, load_exam_bundle
from dxkit.infer.export import FORMAT, _embed_metadata, sidecar_path, source_of
from dxkit.infer.quantize_exam import SERIES, OrtNetwork, _export_network

log = logging.getLogger(__name__)
LOGITS = "logits"
BUNDLE_KEYS = ("kind", "format", "findings", "planes", "model", "normalization", "size",
               "thresholds", "threshold_method", "dxkit_version", "input_profile")  # fmt: skip


def to_json(value: Any) -> Any:
    """Tensors (and arrays) → ``{"tensor": values, "dtype": name}``; the rest unchanged."""
    if isinstance(value, torch.Tensor | np.ndarray):
        t = torch.as_tensor(value)
        return {"tensor": t.tolist(), "dtype": str(t.dtype).removeprefix("torch.")}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> Any:
    """``to_json``'s inverse (exact: JSON keeps float64 and float32 values)."""
    if isinstance(value, dict):
        if set(value) == {"tensor", "dtype"}:
            return torch.tensor(value["tensor"], dtype=getattr(torch, value["dtype"]))
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def exam_metadata(checkpoint: Path, model: ExamModel) -> dict[str, Any]:
    """The bundle's recipe (networks, normalisation, fusion, thresholds, TTA), JSON-safe."""
    meta = model.meta
    bundle = {k: meta[k] for k in BUNDLE_KEYS if k in meta}
    fusion = {k: meta["fusion"][k] for k in ("state", "inputs") if k in meta["fusion"]}
    bundle |= {"fusion": to_json(fusion), "inference": {"tta": model.tta}}
    return {
        "format": FORMAT,
        "kind": "exam",
        "label_names": model.findings,
        "thresholds": list(model.thresholds),
        "tta": model.tta,
        "model": meta["model"],
        "bundle": bundle,
        "graph": {
            "inputs": [f"{key}/{SERIES}" for key in model.networks.nets],
            "input_layout": "(slices, C, H, W): one plane, normalised and resized (ExamDataset)",
            "outputs": [f"{key}/{LOGITS}" for key in model.networks.nets],
            "inside": ["plane networks (slice features, pooling, head)"],
            "outside": [
                "read the exam (data.sources.mrnet.load_exam_folder)",
                "normalise and resize (data.exam.ExamDataset)",
                "sigmoid"
                + (", mirrored series averaged in (TTA)" if model.tta else "")
                + " (exam_model.network_probabilities)",
                "plane fusion from the recorded coefficients (models.fusion.PlaneFusion)",
            ],
        },
        "source_checkpoint": source_of(checkpoint),
        "dxkit_version": __version__,
        "trained_with": meta.get("dxkit_version"),
    }


def export_exam_onnx(checkpoint: Path, out: Path) -> Path:
    """Write an exam bundle's plane networks as one ``.onnx`` (+ JSON sidecar)."""
    import onnx
    import onnx.compose

    model = load_exam_bundle(checkpoint)
    if "quantization" in model.meta:
        raise ConfigError(
            f"{checkpoint}: an int8 bundle already runs ONNX graphs; export the fp32 "
            "checkpoints/bundle.ckpt"
        )
    side = model.size or 64
    example = np.zeros((3, int(model.meta["model"].get("in_chans", 1)), side, side), np.float32)
    merged = None
    with tempfile.TemporaryDirectory(prefix="dxkit-exam-onnx-") as tmp:
        for i, (key, net) in enumerate(model.networks.nets.items()):
            part = Path(tmp) / f"network-{i}.onnx"
            try:
                _export_network(net.cpu().eval(), example, part, dynamic_hw=model.size is None)
            except (RuntimeError, torch.onnx.errors.OnnxExporterError) as err:
                raise CheckpointError(
                    f"{checkpoint}: network {key!r} could not be exported to ONNX "
                    f"({type(err).__name__}: {str(err)[:300]})"
                ) from None
            graph = onnx.compose.add_prefix(onnx.load(str(part)), f"{key}/")
            merged = graph if merged is None else onnx.compose.merge_models(merged, graph, [])
    assert merged is not None  # a bundle has at least one network (load_exam_bundle)
    tmp_out = out.with_name(f".{out.name}.tmp")
    onnx.save(merged, str(tmp_out))
    metadata = exam_metadata(checkpoint, model)
    _embed_metadata(tmp_out, metadata)
    tmp_out.replace(out)
    sidecar_path(out).write_text(json.dumps(metadata, indent=2) + "\n")
    log.info("exported %s → %s", checkpoint.name, out)
    return out


def load_exam_onnx(path: str | Path, threads: int | None = None) -> ExamModel:
    """An ``ExamModel`` whose plane networks run the exported graphs on ONNX Runtime."""
    import onnx
    import onnx.utils

    from dxkit.infer.onnx_predictor import read_onnx_metadata

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such ONNX file; export one with `dxkit export`")
    meta = read_onnx_metadata(path)
    if meta.get("kind") != "exam":
        raise CheckpointError(f"{path}: a {meta.get('kind')!r} export, not an exam bundle")
    bundle = from_json(meta["bundle"])
    recipe = bundle["model"]
    graph = onnx.load(str(path))
    keys = [name.removesuffix(f"/{SERIES}") for name in (i.name for i in graph.graph.input)]
    extractor = onnx.utils.Extractor(graph)
    nets = {
        key: OrtNetwork(
            extractor.extract_model([f"{key}/{SERIES}"], [f"{key}/{LOGITS}"]).SerializeToString(),
            threads,
        )
        for key in keys
    }
    networks = SimpleNamespace(
        planes=list(recipe["planes"]), findings=list(recipe["findings"]),
        variant=recipe["variant"], nets=nets,
    )  # fmt: skip
    return exam_model_from(networks, bundle, path)


def check_exam_export(checkpoint: Path, onnx_path: Path, seed: int = 0) -> float:
    """Max absolute difference of the plane and fused probabilities between the bundle and
    its export on a generated exam (0–255 stacks, a different slice count per plane)."""
    from dxkit.data.exam import Exam, Series

    eager, exported = load_exam_bundle(checkpoint), load_exam_onnx(onnx_path)
    rng = np.random.default_rng(seed)
    side = int((eager.size or 64) * 1.5)
    series = {
        plane: Series(plane, data=rng.integers(0, 256, (5 + i, side, side)).astype(np.uint8))
        for i, plane in enumerate(eager.planes)
    }
    exam = [Exam("check", series)]
    (planes_a, fused_a), (planes_b, fused_b) = eager.predict(exam), exported.predict(exam)
    return float(max(np.abs(planes_a - planes_b).max(), np.abs(fused_a - fused_b).max()))
