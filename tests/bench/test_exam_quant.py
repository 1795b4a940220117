"""int8 builds of the exam bench (``dxkit.bench.exam_quant``): each ONNX Runtime recipe
quantises exactly the nodes it says (read back from the written graph), the fp32 graph
computes what the eager model computes, and the trunk-only int8 graph stays close to it.
The networks are untrained (seeded), the exams random: small and fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dxkit.bench.exam_paths import FINDINGS, ExamForward
from dxkit.bench.exam_quant import ORT_RECIPES, onnx_fp32, onnx_int8_static
from dxkit.data.exam import PLANES
from dxkit.models.slicestack import ExamNetworks

Planes = tuple[torch.Tensor, ...]


def _planes(gen: torch.Generator, slices: int) -> Planes:
    return tuple(torch.randn(slices, 1, 64, 64, generator=gen) for _ in PLANES)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The fp32 graph of an untrained nine-network model and its int8 builds."""
    torch.manual_seed(0)
    nets = ExamNetworks("alexnet", PLANES, FINDINGS, variant="per_finding").eval()
    gen = torch.Generator().manual_seed(0)
    calibration = [_planes(gen, s) for s in (2, 3, 2, 4)]  # exams of varying length
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = onnx_fp32(ExamForward(nets).eval(), calibration[0], folder, "per_finding")
    int8 = {name: onnx_int8_static(fp32, calibration, r) for name, r in ORT_RECIPES.items()}
    return {"nets": nets, "fp32": fp32, "int8": int8, "test": _planes(gen, 3)}


def _weight_is_int8(model: onnx.ModelProto, op_type: str) -> list[bool]:
    """Per node of ``op_type``: is its weight the output of a DequantizeLinear?"""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.input[1] in dq for n in model.graph.node if n.op_type == op_type]


def _recipe(name_part: str) -> str:
    return next(name for name in ORT_RECIPES if name_part in name)


def test_recipes_quantise_what_they_say(graphs: dict[str, object]) -> None:
    int8: dict[str, Path] = graphs["int8"]  # type: ignore[assignment]
    every = onnx.load(str(int8[_recipe("every op")]))
    trunk = onnx.load(str(int8[_recipe("conv trunk")]))
    mixed = onnx.load(str(int8[_recipe("conv1+conv5")]))
    assert all(_weight_is_int8(every, "Gemm")) and len(_weight_is_int8(every, "Gemm")) == 9
    assert not any(_weight_is_int8(trunk, "Gemm"))  # the heads stay float
    concat_inputs = {i for n in trunk.graph.node if n.op_type == "Concat" for i in n.input}
    dq_outputs = {o for n in trunk.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not concat_inputs & dq_outputs  # nor is the stacking of the logits quantised
    assert _weight_is_int8(trunk, "Conv") == [True] * 45  # 9 networks × 5 convs
    assert sum(not q for q in _weight_is_int8(mixed, "Conv")) == 18  # conv1 + conv5 each


def test_fp32_graph_matches_eager_and_int8_trunk_stays_close(graphs: dict[str, object]) -> None:
    x: Planes = graphs["test"]  # type: ignore[assignment]
    with torch.no_grad():
        eager = ExamForward(graphs["nets"]).eval()(*x).numpy()  # type: ignore[arg-type]

    def run(path: object) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {p: t.numpy() for p, t in zip(PLANES, x, strict=True)})[0]

    np.testing.assert_allclose(run(graphs["fp32"]), eager, rtol=1e-4, atol=1e-5)
    int8: dict[str, Path] = graphs["int8"]  # type: ignore[assignment]
    trunk = run(int8[_recipe("conv trunk")])
    assert trunk.shape == eager.shape
    # int8 activations cost a few per cent of the logits' scale, not more
    assert np.abs(trunk - eager).max() < 0.05 * np.abs(eager).max() + 1e-3


def test_graphs_are_cached_by_content(graphs: dict[str, object]) -> None:
    """Another calibration set gives another file; the same one reuses the file written."""
    fp32: Path = graphs["fp32"]  # type: ignore[assignment]
    x: Planes = graphs["test"]  # type: ignore[assignment]
    int8: dict[str, Path] = graphs["int8"]  # type: ignore[assignment]
    name = _recipe("conv trunk")
    other = onnx_int8_static(fp32, [x], ORT_RECIPES[name])
    assert other != int8[name] and other.is_file()
    written = other.stat().st_mtime_ns
    assert onnx_int8_static(fp32, [x], ORT_RECIPES[name]) == other
    assert other.stat().st_mtime_ns == written
