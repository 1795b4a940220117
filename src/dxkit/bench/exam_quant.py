"""int8 builds of an exam model for ``dxkit bench exam --part latency`` (issue #7).

What decided int8 accuracy on the bench's earlier, barely trained fixture models (measured):
several of the nine networks moved their logit by only ~0.001–0.003 between exams, so
anything quantised *after* the convolutional trunk erased their signal. ONNX Runtime's
default static recipe quantised the head ``Gemm`` and the ``Concat`` that stacks all nine
logits with one shared scale (range ≈ [-0.06, 0.64], a step of ≈ 0.003 logit): ΔAUC
0.03–0.46 on the validation fixtures. Quantising only the trunk (``Conv``/``Relu``/
``MaxPool``/global pooling) and keeping the slice max, the linear heads and the stacking in
float costs almost no speed (a few hundred MACs) and removes that error. The fixture models
now train until their logits move by whole units between exams (as a trained MRNet
network's do); what remains is ordinary int8 activation noise. The recipes below are the
variants the bench compares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from dxkit.data.exam import PLANES
from dxkit.infer.quantize import OrtRecipe, prepare_for_quantization, quantize_int8

Planes = tuple[torch.Tensor, ...]
Runner = Callable[[Planes], Any]  # three planes (S, 1, H, W) → logits (P, F)
# The ONNX Runtime recipe and quantiser are the library's (``dxkit export --int8``); the
# bench adds its variants (every op, AlexNet convs kept in float) and caching.

ORT_RECIPES = {
    "ONNX Runtime int8 static (QDQ, every op)": OrtRecipe("all-ops", op_types=None),
    "ONNX Runtime int8 static (QDQ, conv trunk)": OrtRecipe("trunk"),
    "ONNX Runtime int8 static (QDQ, trunk, conv1+conv5 float)": OrtRecipe(
        "trunk-float15", float_convs=(0, 10)
    ),
}


def _digest(*arrays: Any) -> str:
    """Short content hash: a cached graph is reused only for the same weights / inputs."""
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:10]


def _conv_nodes(model_path: Path, indices: tuple[int, ...]) -> list[str]:
    """Names of the Conv nodes exported from ``features.<i>`` of every network."""
    names = []
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        scope = node.name.split("/")[2] if node.name.count("/") >= 3 else ""
        # the exporter names them /features/features.<i>[_<network>]/Conv
        if node.op_type == "Conv" and scope.split("_")[0] in {f"features.{i}" for i in indices}:
            names.append(node.name)
    return names


def onnx_fp32(forward: nn.Module, example: Planes, folder: Path, family: str) -> Path:
    """The exported fp32 graph, after ORT's quantisation pre-processing (shape inference,
    graph clean-up), written once per set of weights."""
    weights = _digest(*(p.detach().numpy() for p in forward.parameters()))
    pre = folder / f"{family}-{weights}-fp32.onnx"
    if pre.is_file():
        return pre
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"{family}-{weights}-export.onnx"
    torch.onnx.export(
        forward,
        example,
        str(raw),
        input_names=list(PLANES),
        output_names=["logits"],
        dynamic_axes={p: {0: f"{p}_slices", 2: "height", 3: "width"} for p in PLANES},
        opset_version=17,
        dynamo=False,
    )
    prepare_for_quantization(raw, pre)
    raw.unlink()
    return pre


def onnx_int8_static(fp32: Path, calibration: list[Planes], recipe: OrtRecipe) -> Path:
    """``fp32`` quantised with ``recipe``, calibrated on ``calibration`` (whole exams,
    normalised exactly as at inference; never the scored validation exams)."""
    calib = _digest(*(t.numpy() for x in calibration for t in x))
    out = fp32.with_name(fp32.name.replace("fp32", f"int8-{recipe.key}-{calib}"))
    if out.is_file():
        return out
    feeds = ({p: t.numpy() for p, t in zip(PLANES, x, strict=True)} for x in calibration)
    quantize_int8(fp32, out, feeds, recipe, _conv_nodes(fp32, recipe.float_convs))
    return out


def onnx_int8_dynamic(fp32: Path) -> Path:
    """ORT dynamic int8 (weights int8, activations quantised per call), written once."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = fp32.with_name(fp32.name.replace("fp32", "int8-dynamic"))
    if not out.is_file():
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
    return out


def fx_int8(forward: nn.Module, calibration: list[Planes], float_first: bool = False) -> Runner:
    """PyTorch FX static int8 (x86 backend: per-channel weights, histogram activations with
    the backend's reduce_range). The linear heads stay float (their logits move by ~1e-3);
    ``float_first`` also keeps every network's first conv in float."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    mapping = get_default_qconfig_mapping("x86").set_object_type(nn.Linear, None)
    if float_first:
        for key in forward.nets:  # type: ignore[union-attr]
            mapping = mapping.set_module_name(f"nets.{key}.backbone.features.0", None)
    prepared = prepare_fx(forward.eval(), mapping, calibration[0])
    with torch.no_grad():
        for x in calibration:
            prepared(*x)
    quantized = convert_fx(prepared)
    return lambda x: quantized(*x)


def torch_dynamic(forward: nn.Module) -> Runner:
    """PyTorch's dynamic int8 covers nn.Linear only: here just the 256→F heads."""
    fwd = torch.ao.quantization.quantize_dynamic(forward.eval(), {nn.Linear}, torch.qint8)
    return lambda x: fwd(*x)
