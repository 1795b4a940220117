"""``dxkit export --int8`` for exam bundles (MRNet): every plane network as a static int8
ONNX graph, inside a bundle that ``ExamPredictor`` (so ``dxkit predict`` and the server) runs.

The recipe is the classifiers' (``serve.quantize``: ONNX Runtime QDQ, conv trunk int8,
pooling over slices and the heads in float) and the bench's. Each network becomes one graph
from a series ``(S, C, H, W)`` — normalised and resized exactly as ``ExamDataset`` does —
to its logits ``(1, F)``; slice pooling (max, mean or attention) is inside. Calibration uses
the run's *fit* exams (the ones the networks trained on); the check scores MRNet's
``valid`` exams (the held-out split ``dxkit evaluate`` reports) with the fp32 bundle and the
int8 one through ``ExamPredictor`` (what predict and the server run: normalisation, plane
fusion, thresholds).

The artefact (``bundle.int8.ckpt``) is the bundle plus ``int8_networks`` (each graph's
bytes as a uint8 tensor, so ``torch.load(weights_only=True)`` reads it) and
``dxkit.quantization``; its fp32 weights stay, so ``dxkit explain`` still works on it.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from dxkit.errors import CheckpointError, ConfigError
from dxkit.infer.quantize import (
    CALIBRATION_SCANS,
    DEFAULT_MAX_AUC_CHANGE,
    DEFAULT_MAX_PROB_CHANGE,
    TRUNK,
    Int8Check,
    compare_probabilities,
    prepare_for_quantization,
    quantize_int8,
)

log = logging.getLogger(__name__)
SERIES = "series"
CALIBRATION_EXAMS = 16


class OneSeries(nn.Module):
    """A slice-stack network on one series ``(S, C, H, W)`` → logits ``(1, F)``: the same
    features, pooling and head as ``SliceStackNet.forward`` on an unpadded series."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.slice_features(x)  # (S, F)
        if self.net.pooling == "max":
            pooled = features.amax(0, keepdim=True)
        elif self.net.pooling == "mean":
            pooled = features.mean(0, keepdim=True)
        else:
            weights = self.net.attention(features[None]).squeeze(-1).softmax(dim=1)
            pooled = (weights[..., None] * features[None]).sum(dim=1)
        return self.net.head(pooled)


class OrtNetwork:
    """An int8 graph with the call signature the exam inference uses: ``net(series)``."""

    def __init__(self, graph: bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def eval(self) -> OrtNetwork:
        return self

    def __call__(self, series: Any, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:
            raise ConfigError("int8 exam networks take a list of series, not a padded batch")
        out = []
        for s in series:  # (C, D, H, W) → slices (D, C, H, W)
            x = np.ascontiguousarray(s.movedim(1, 0).numpy(), dtype=np.float32)
            out.append(torch.from_numpy(self.session.run(None, {SERIES: x})[0][0]))
        return torch.stack(out)


def with_int8_networks(model: Any, ckpt: dict[str, Any]) -> Any:
    """``model`` (an ``ExamModel``) running the int8 graphs stored in ``ckpt``."""
    graphs = ckpt["int8_networks"]
    nets = model.networks
    if set(graphs) != set(nets.nets):
        raise CheckpointError(
            f"{model.path}: int8 graphs {sorted(graphs)} do not match networks {sorted(nets.nets)}"
        )
    ort_nets = {k: OrtNetwork(t.numpy().tobytes()) for k, t in graphs.items()}
    networks = SimpleNamespace(
        planes=nets.planes, findings=nets.findings, variant=nets.variant, nets=ort_nets
    )
    return dataclasses.replace(model, networks=networks)


def _plane_series(model: Any, exams: Sequence[Any], plane: str) -> list[np.ndarray]:
    """Each exam's ``plane`` series as the networks see it: ``(S, C, H, W)``."""
    from dxkit.data.exam import ExamDataset

    dataset = ExamDataset(
        exams, findings=[], planes=[plane], normalization=model.normalization, size=model.size
    )
    return [
        np.ascontiguousarray(dataset[i]["planes"][plane].movedim(1, 0).numpy(), dtype=np.float32)
        for i in range(len(dataset))
    ]


def _export_network(net: nn.Module, example: np.ndarray, path: Path, dynamic_hw: bool) -> None:
    axes = {0: "slices", **({2: "height", 3: "width"} if dynamic_hw else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            OneSeries(net).eval(),
            (torch.from_numpy(example),),
            str(path),
            input_names=[SERIES],
            output_names=["logits"],
            dynamic_axes={SERIES: axes},
            opset_version=17,
            dynamo=False,
        )


def export_exam_int8(
    bundle: str | Path,
    out_path: str | Path | None = None,
    *,
    max_auc_change: float = DEFAULT_MAX_AUC_CHANGE,
    max_prob_change: float = DEFAULT_MAX_PROB_CHANGE,
    fit_exams: Sequence[Any] | None = None,
    held_out: Sequence[Any] | None = None,
) -> tuple[Path, Int8Check]:
    """Write ``bundle.int8.ckpt`` beside ``bundle`` after the int8/fp32 check on the held-out
    exams; refuse (``CheckpointError`` with the figures) beyond tolerance."""
    from dxkit.evaluate.exam_run import exams_for_split
    from dxkit.infer.checkpoint import read_checkpoint
    from dxkit.infer.exam_model import load_exam_bundle
    from dxkit.train.config import config_from_dict
    from dxkit.train.exam_fit import label_matrix

    bundle = Path(bundle)
    out = Path(out_path) if out_path is not None else bundle.with_suffix(".int8.ckpt")
    if out.suffix != ".ckpt":
        raise ConfigError(f"--out {out}: an exam int8 bundle is a .ckpt file")
    model = load_exam_bundle(bundle)
    cfg = config_from_dict(model.meta["config"], source=f"{bundle} (saved config)")
    fit_exams = list(fit_exams) if fit_exams is not None else exams_for_split(model, "fit")
    held_out = list(held_out) if held_out is not None else exams_for_split(model, "valid")
    rng = np.random.default_rng(cfg.seed)
    pick = rng.permutation(len(fit_exams))[:CALIBRATION_EXAMS]
    calibration_exams = [fit_exams[i] for i in sorted(pick)]
    work = out.with_name(f".{out.stem}.work")
    work.mkdir(parents=True, exist_ok=True)
    graphs: dict[str, torch.Tensor] = {}
    try:
        for key, net in model.networks.nets.items():
            plane = key.split("__")[-1]
            feeds = _plane_series(model, calibration_exams, plane)[:CALIBRATION_SCANS]
            raw, ready, int8 = (work / f"{key}.{s}.onnx" for s in ("raw", "pre", "int8"))
            _export_network(net, feeds[0], raw, dynamic_hw=model.size is None)
            prepare_for_quantization(raw, ready)
            quantize_int8(ready, int8, ({SERIES: x} for x in feeds), TRUNK)
            graphs[key] = torch.frombuffer(bytearray(int8.read_bytes()), dtype=torch.uint8)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ckpt = read_checkpoint(bundle)
    ckpt["int8_networks"] = graphs
    # Through ExamPredictor: the check measures exactly what predict and the server serve.
    from dxkit.infer.exam_predict import ExamPredictor

    p32, p8 = (
        np.array([[p.probabilities[f] for f in model.findings] for p in m.predict_exams(held_out)])
        for m in (ExamPredictor(model), ExamPredictor(with_int8_networks(model, ckpt)))
    )
    tolerance = {"auc": float(max_auc_change), "probability": float(max_prob_change)}
    check = compare_probabilities(
        label_matrix(held_out, model.findings), p32, p8, model.findings,
        model.thresholds, multiclass=False, split="valid", tolerance=tolerance,
    )  # fmt: skip
    if not check.passed:
        raise CheckpointError(
            f"{bundle}: int8 export refused, it changes the model beyond tolerance: "
            f"{check.summary()}; serve the fp32 bundle or loosen "
            "--max-auc-change/--max-prob-change knowingly"
        )
    ckpt["dxkit"] = {
        **ckpt["dxkit"],
        "quantization": {
            "recipe": "ONNX Runtime static int8 per plane network, QDQ, uint8 activations, "
            f"int8 per-channel weights, MinMax; quantised ops {list(TRUNK.op_types or [])}",
            "calibrated_on": f"{len(calibration_exams)} fit exams of the run (training exams)",
            "check": check.as_dict(),
        },
    }
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)
    log.info("int8 exam bundle %s: %s", out, check.summary())
    return out, check
