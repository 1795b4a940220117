"""The inference paths ``dxkit bench exam --part latency`` times for one MRNet exam model.

Every path computes the same thing: three planes ``(S, 1, H, W)`` of normalised slices in,
plane logits ``(P, F)`` out (AlexNet features, spatial mean, max over slices, linear head).
The reference is what public re-implementations do (each network, one slice at a time,
eager); the others are the batched model run through the field's inference engines.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dxkit.data.exam import PLANES
from dxkit.models.backbones import AlexNet
from dxkit.models.slicestack import ExamNetworks

FINDINGS = ["abnormal", "acl", "meniscus"]
Planes = tuple[torch.Tensor, ...]
Runner = Callable[[Planes], Any]  # three planes (S, 1, H, W) → logits (P, F)


def _features(net: Any, x: torch.Tensor) -> torch.Tensor:
    backbone = net.backbone
    # AlexNet's forward_features has a Python size check FX cannot trace; features is the same
    # for inputs ≥ 63 px (all this benchmark uses)
    return backbone.features(x) if isinstance(backbone, AlexNet) else backbone.forward_features(x)


class ExamForward(nn.Module):
    """Every network of an exam model as one module, the graph ONNX, ``torch.compile`` and
    FX see: three planes ``(S, 1, H, W)`` in, plane logits ``(P, F)`` out (max pooling)."""

    def __init__(self, networks: ExamNetworks) -> None:
        super().__init__()
        self.nets = copy.deepcopy(networks.nets)
        multitask = networks.variant == "multitask"
        self.keys = [[p] if multitask else [f"{f}__{p}" for f in FINDINGS] for p in PLANES]

    def forward(
        self, axial: torch.Tensor, coronal: torch.Tensor, sagittal: torch.Tensor
    ) -> torch.Tensor:
        rows = []
        nets: Any = self.nets
        for keys, x in zip(self.keys, (axial, coronal, sagittal), strict=True):
            logits = []
            for k in keys:  # pooling and Linear in the forms quantised kernels accept
                pooled = F.adaptive_avg_pool2d(_features(nets[k], x), 1).flatten(1)
                logits.append(nets[k].head(pooled.amax(0, True)))  # (1, F)
            rows.append(torch.cat(logits, dim=1)[0])
        return torch.stack(rows)


def slice_loop(networks: ExamNetworks) -> Runner:
    """What public re-implementations do: each network, one slice at a time, eager."""
    fwd = ExamForward(networks).eval()

    def run(x: Planes) -> torch.Tensor:
        rows = []
        for keys, series in zip(fwd.keys, x, strict=True):
            logits = []
            for k in keys:
                net: Any = fwd.nets[k]
                feats = torch.stack(
                    [
                        net.backbone.forward_features(series[s : s + 1]).mean(dim=(2, 3))[0]
                        for s in range(len(series))
                    ]
                )
                logits.append(net.head(feats.amax(dim=0)))
            rows.append(torch.cat(logits))
        return torch.stack(rows)

    return run


@dataclass
class InferencePath:
    """One way to run an exam model: its name, which model, the runner, build seconds."""

    name: str
    family: str  # per_finding (nine networks) or multitask (three)
    run: Runner
    setup_s: float


def _ort_session(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {p: t.numpy() for p, t in zip(PLANES, x, strict=True)})[0]


def onnx_files(
    networks: ExamNetworks, calibration: list[Planes], folder: Path, family: str
) -> dict[str, Path]:
    """fp32, int8 static (QDQ, per-channel, calibrated on ``calibration``) and int8 dynamic
    ONNX graphs of one model, written once into ``folder``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder.mkdir(parents=True, exist_ok=True)
    files = {
        k: folder / f"{family}-{k}.onnx" for k in ("fp32", "pre", "int8_static", "int8_dynamic")
    }
    if all(p.is_file() for p in files.values()):
        return files
    axes = {p: {0: f"{p}_slices", 2: "height", 3: "width"} for p in PLANES}
    torch.onnx.export(
        ExamForward(networks).eval(),
        calibration[0],
        str(files["fp32"]),
        input_names=list(PLANES),
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    quant_pre_process(str(files["fp32"]), str(files["pre"]))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(
                [{p: t.numpy() for p, t in zip(PLANES, x, strict=True)} for x in calibration]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(files["pre"]),
        str(files["int8_static"]),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    quantize_dynamic(str(files["pre"]), str(files["int8_dynamic"]), weight_type=QuantType.QInt8)
    return files


def _fx_int8(networks: ExamNetworks, calibration: list[Planes]) -> Runner:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    fwd = ExamForward(networks).eval()
    prepared = prepare_fx(fwd, get_default_qconfig_mapping("x86"), calibration[0])
    with torch.no_grad():
        for x in calibration:
            prepared(*x)
    quantized = convert_fx(prepared)
    return lambda x: quantized(*x)


def _eager(networks: ExamNetworks, channels_last: bool = False) -> Runner:
    fwd = ExamForward(networks).eval()
    if not channels_last:
        return lambda x: fwd(*x)
    fwd = fwd.to(memory_format=torch.channels_last)
    return lambda x: fwd(*(t.contiguous(memory_format=torch.channels_last) for t in x))


def _compiled(networks: ExamNetworks, example: Planes) -> Runner:
    import torch._inductor.config as inductor_config

    compiled = torch.compile(ExamForward(networks).eval())
    with torch.no_grad(), inductor_config.patch(freezing=True):  # weights folded, prepacked
        compiled(*example)  # a static graph for the timing shape

    def run(x: Planes) -> Any:
        # other shapes (the validation fixtures) get one dynamic-shape graph, frozen the same way
        with inductor_config.patch(freezing=True):
            return compiled(*x)

    return run


def _dynamic(networks: ExamNetworks) -> Runner:
    """PyTorch's dynamic int8 covers nn.Linear only: here just the 256→F heads."""
    fwd = torch.ao.quantization.quantize_dynamic(
        ExamForward(networks).eval(), {nn.Linear}, torch.qint8
    )
    return lambda x: fwd(*x)


PATH_NAMES = (
    "eager, slice at a time",
    "eager, slices batched",
    "eager, batched, channels-last",
    "torch.compile (inductor, frozen)",
    "ONNX Runtime fp32",
    "ONNX Runtime int8 static (QDQ)",
    "ONNX Runtime int8 dynamic",
    "PyTorch int8 static (FX, x86)",
    "PyTorch int8 dynamic (Linear only)",
)


def inference_paths(
    networks: dict[str, ExamNetworks],
    calibration: list[Planes],
    work: Path,
    threads: int,
    example: Planes,
    only: str | None = None,
    names: tuple[str, ...] = PATH_NAMES,
) -> list[InferencePath]:
    """Every path in ``names`` for both models (or just ``only``, "family: name"), built
    and warmed up on ``example``."""
    paths = []
    for family, nets in networks.items():
        onnx = partial(onnx_files, nets, calibration, work / "onnx", family)
        builders: dict[str, Callable[[], Runner]] = {
            PATH_NAMES[0]: partial(slice_loop, nets),
            PATH_NAMES[1]: partial(_eager, nets),
            PATH_NAMES[2]: partial(_eager, nets, True),
            PATH_NAMES[3]: partial(_compiled, nets, example),
            PATH_NAMES[4]: lambda o=onnx: _ort_session(o()["fp32"], threads),
            PATH_NAMES[5]: lambda o=onnx: _ort_session(o()["int8_static"], threads),
            PATH_NAMES[6]: lambda o=onnx: _ort_session(o()["int8_dynamic"], threads),
            PATH_NAMES[7]: partial(_fx_int8, nets, calibration),
            PATH_NAMES[8]: partial(_dynamic, nets),
        }
        for name in names:
            if only is not None and f"{family}: {name}" != only:
                continue
            start = time.perf_counter()
            run = builders[name]()
            with torch.no_grad():  # warm-up on the timing shape (allocators, prepacking)
                run(example)
            paths.append(InferencePath(name, family, run, time.perf_counter() - start))
    return paths
