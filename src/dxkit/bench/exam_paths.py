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

import torch
import torch.nn.functional as F
from torch import nn

from dxkit.bench.exam_quant import (
    ORT_RECIPES,
    OrtRecipe,
    Planes,
    Runner,
    fx_int8,
    onnx_fp32,
    onnx_int8_dynamic,
    onnx_int8_static,
    torch_dynamic,
)
from dxkit.data.exam import PLANES
from dxkit.models.backbones import AlexNet
from dxkit.models.slicestack import ExamNetworks

FINDINGS = ["abnormal", "acl", "meniscus"]


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


PATH_NAMES = (
    "eager, slice at a time",
    "eager, slices batched",
    "eager, batched, channels-last",
    "torch.compile (inductor, frozen)",
    "ONNX Runtime fp32",
    *ORT_RECIPES,
    "ONNX Runtime int8 dynamic",
    "PyTorch int8 static (FX, x86)",
    "PyTorch int8 static (FX, x86, conv1 float)",
    "PyTorch int8 dynamic (Linear only)",
)


def _builders(
    family: str,
    nets: ExamNetworks,
    calibration: list[Planes],
    work: Path,
    threads: int,
    example: Planes,
) -> dict[str, Callable[[], Runner]]:
    """How to build each named path of one model (lazily: only the paths asked for)."""

    def fp32() -> Path:
        return onnx_fp32(ExamForward(nets).eval(), example, work / "onnx", family)

    def ort_static(recipe: OrtRecipe) -> Runner:
        return _ort_session(onnx_int8_static(fp32(), calibration, recipe), threads)

    builders: dict[str, Callable[[], Runner]] = {
        PATH_NAMES[0]: partial(slice_loop, nets),
        PATH_NAMES[1]: partial(_eager, nets),
        PATH_NAMES[2]: partial(_eager, nets, True),
        PATH_NAMES[3]: partial(_compiled, nets, example),
        "ONNX Runtime fp32": lambda: _ort_session(fp32(), threads),
        "ONNX Runtime int8 dynamic": lambda: _ort_session(onnx_int8_dynamic(fp32()), threads),
        "PyTorch int8 static (FX, x86)": lambda: fx_int8(ExamForward(nets), calibration),
        "PyTorch int8 static (FX, x86, conv1 float)": lambda: fx_int8(
            ExamForward(nets), calibration, float_first=True
        ),
        "PyTorch int8 dynamic (Linear only)": lambda: torch_dynamic(ExamForward(nets)),
    }
    for name, recipe in ORT_RECIPES.items():
        builders[name] = partial(ort_static, recipe)
    return builders


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
    and warmed up on ``example``; int8 static paths are calibrated on ``calibration``."""
    paths = []
    for family, nets in networks.items():
        builders = _builders(family, nets, calibration, work, threads, example)
        for name in names:
            if only is not None and f"{family}: {name}" != only:
                continue
            start = time.perf_counter()
            run = builders[name]()
            with torch.no_grad():  # warm-up on the timing shape (allocators, prepacking)
                run(example)
            paths.append(InferencePath(name, family, run, time.perf_counter() - start))
    return paths
