"""The fast CPU path users get: ``dxkit export --int8``.

ONNX Runtime static int8 (QDQ: uint8 activations, int8 per-channel weights, MinMax
calibration) of the convolutional trunk, the heads and the preprocessing kept in float. On
the bench (``benchmarks/RESULTS.md``, section ``exam``) this recipe ran 6.4× the slice loop
(nine networks) and 17× (multi-task) at unchanged AUC (|ΔAUC| ≤ 0.0008), within 10 % of
PyTorch's FX int8 — the one faster path, whose result is a Python ``GraphModule`` that
cannot be saved without pickle or TorchScript; the ONNX file loads anywhere ONNX Runtime
does, including ``dxkit serve`` and ``dxkit predict``, through ``OnnxPredictor``.

Quantisation is an approximation, so an export is accepted only after a check: the int8
graph and the fp32 graph score the held-out scans of the run (its test split; validation,
said so, when there is none) and the AUC of every finding and each probability must stay
within the tolerances (``DEFAULT_MAX_AUC_CHANGE``, ``DEFAULT_MAX_PROB_CHANGE``); otherwise
the file is removed and ``CheckpointError`` gives the figures. Calibration uses training
scans of the run only, never the scans the check scores.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# The bench's "unchanged AUC" (|ΔAUC| ≤ 0.005) and a probability bound above the largest
# change it measured for int8 on its fixtures (3.6e-2).
DEFAULT_MAX_AUC_CHANGE = 0.005
DEFAULT_MAX_PROB_CHANGE = 0.05
TRUNK_OPS = ("Conv", "Relu", "MaxPool", "GlobalAveragePool")
CALIBRATION_SCANS = 64
CHECK_SCANS = 2000


@dataclass(frozen=True)
class OrtRecipe:
    """One ONNX Runtime static int8 recipe (QDQ, u8 activations, s8 weights, MinMax)."""

    key: str  # file-name part
    op_types: tuple[str, ...] | None = TRUNK_OPS  # None: every op ORT can quantise
    float_convs: tuple[int, ...] = ()  # AlexNet ``features`` indices kept in float (bench)
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: only for x86 CPUs without VNNI (saturation)
    extra: dict[str, Any] = field(default_factory=dict)


TRUNK = OrtRecipe("trunk")  # what ``dxkit export --int8`` uses


def prepare_for_quantization(raw: Path, out: Path) -> Path:
    """ORT's quantisation pre-processing (shape inference, graph clean-up) of ``raw``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(raw), str(out))
    return out


def quantize_int8(
    fp32: Path,
    out: Path,
    calibration: Iterable[dict[str, np.ndarray]],
    recipe: OrtRecipe = TRUNK,
    nodes_to_exclude: Sequence[str] = (),
) -> Path:
    """``fp32`` quantised with ``recipe`` into ``out``, calibrated on ``calibration`` (graph
    input feeds; training scans, never the ones scored afterwards)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
        nodes_to_exclude=list(nodes_to_exclude),
        extra_options=recipe.extra,
    )
    return out


# --------------------------------------------------------------------------- classifiers


@dataclass
class Int8Check:
    """int8 against fp32 on the held-out scans: what the export is accepted or refused on."""

    split: str
    scans: int
    auc_fp32: dict[str, float | None]
    auc_int8: dict[str, float | None]
    max_auc_change: float
    max_prob_change: float
    calls_changed: int
    tolerance: dict[str, float]

    @property
    def passed(self) -> bool:
        return (
            self.max_auc_change <= self.tolerance["auc"]
            and self.max_prob_change <= self.tolerance["probability"]
        )

    def summary(self) -> str:
        aucs = ", ".join(
            f"{k} {self.auc_fp32[k]:.4f}→{v:.4f}"
            for k, v in self.auc_int8.items()
            if v is not None and self.auc_fp32[k] is not None
        )
        return (
            f"{self.scans} {self.split} scans: AUC {aucs or 'n/a (one class only)'}; "
            f"max |ΔAUC| {self.max_auc_change:.4f} (tolerance {self.tolerance['auc']}), "
            f"max |Δp| {self.max_prob_change:.4f} (tolerance {self.tolerance['probability']}), "
            f"{self.calls_changed} call(s) changed"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "scans": self.scans,
            "auc_fp32": self.auc_fp32,
            "auc_int8": self.auc_int8,
            "max_auc_change": self.max_auc_change,
            "max_prob_change": self.max_prob_change,
            "calls_changed": self.calls_changed,
            "tolerance": self.tolerance,
        }


def _graph_input(runner: Any, item: Any, source: str) -> np.ndarray:
    """A split item (array or file) → the graph's input, as ``OnnxPredictor`` makes it."""
    from dxkit.io import read_scan

    if isinstance(item, Path):
        if runner.preprocessing.ct is not None:
            # A head-CT cache holds the prepared slice: the graph's input itself.
            return np.ascontiguousarray(np.load(item), dtype=np.float32)
        array = read_scan(item)
    else:
        array = np.asarray(item, dtype=np.float32)
    return runner.prepare(array, source)


def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _inputs(runner: Any, labelled: Any, rows: np.ndarray) -> list[np.ndarray]:
    ids = labelled.ids
    return [_graph_input(runner, labelled.items[i], ids[i] if ids else f"scan {i}") for i in rows]


def _probabilities(runner: Any, inputs: list[np.ndarray], batch: int = 64) -> np.ndarray:
    """Probabilities ``(N, L)`` through ``runner.run``, same-shape inputs batched."""
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, x in enumerate(inputs):
        by_shape[x.shape].append(i)
    out: list[np.ndarray | None] = [None] * len(inputs)
    for rows in by_shape.values():
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            probs, _ = runner.run(np.stack([inputs[i] for i in chunk]))
            for i, p in zip(chunk, probs, strict=True):
                out[i] = p
    return np.stack(out)  # type: ignore[arg-type]


def _aucs(y: np.ndarray, p: np.ndarray, names: list[str]) -> dict[str, float | None]:
    from sklearn.metrics import roc_auc_score

    out: dict[str, float | None] = {}
    for j, name in enumerate(names):
        both = len(np.unique(y[:, j])) == 2
        out[name] = float(roc_auc_score(y[:, j], p[:, j])) if both else None
    return out


def check_int8(
    fp32: Any,
    int8: Any,
    labelled: Any,
    split: str,
    tolerance: dict[str, float],
    seed: int = 0,
) -> Int8Check:
    """Score ``labelled`` (held-out scans) with both graphs and compare."""
    rows = _sample(len(labelled), CHECK_SCANS, seed)
    inputs = _inputs(fp32, labelled, rows)
    p32, p8 = _probabilities(fp32, inputs), _probabilities(int8, inputs)
    y = np.asarray(labelled.labels)[rows]
    return compare_probabilities(
        y, p32, p8, fp32.label_names, fp32.thresholds, fp32.task == "multiclass", split, tolerance
    )


def compare_probabilities(
    y: np.ndarray,
    p32: np.ndarray,
    p8: np.ndarray,
    names: list[str],
    thresholds: Sequence[float],
    multiclass: bool,
    split: str,
    tolerance: dict[str, float],
) -> Int8Check:
    """AUC per finding, largest probability change and changed calls, fp32 vs int8."""
    a32, a8 = _aucs(y, p32, names), _aucs(y, p8, names)
    changes = [abs(a8[k] - a32[k]) for k in names if a8[k] is not None and a32[k] is not None]  # type: ignore[operator]
    if multiclass:
        flips = int((p32.argmax(1) != p8.argmax(1)).sum())
    else:
        t = np.asarray(thresholds)
        flips = int(((p32 >= t) != (p8 >= t)).sum())
    return Int8Check(
        split=split,
        scans=len(y),
        auc_fp32=a32,
        auc_int8=a8,
        max_auc_change=float(max(changes, default=0.0)),
        max_prob_change=float(np.abs(p32 - p8).max()),
        calls_changed=flips,
        tolerance=dict(tolerance),
    )
