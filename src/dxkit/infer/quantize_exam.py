"""``dxkit export --int8`` for exam bundles (MRNet): every plane network as a static int8
ONNX graph, inside a bundle that ``ExamPredictor`` (so ``dxkit predict`` and the server) runs.

The recipe is the classifiers' (``infer.quantize``: ONNX Runtime QDQ, conv trunk int8,
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
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from dxkit.errors import CheckpointError, ConfigError

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
    """An ONNX graph of one plane network (int8, or fp32 from ``exam_onnx``) with the call
    signature the exam inference uses: ``net(series)``."""

    def __init__(self, graph: bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name  # SERIES, or "<network>/series"

    def eval(self) -> OrtNetwork:
        return self

    def to(self, device: Any) -> OrtNetwork:
        """ONNX Runtime runs on the CPU whatever the device the exam inference asks for."""
        del device
        return self

    def __call__(self, series: Any, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:
            raise ConfigError("ONNX exam networks take a list of series, not a padded batch")
        out = []
        for s in series:  # (C, D, H, W) → slices (D, C, H, W)
            x = np.ascontiguousarray(s.movedim(1, 0).numpy(), dtype=np.float32)
            out.append(torch.from_numpy(self.session.run(None, {self.input: x})[0][0]))
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
