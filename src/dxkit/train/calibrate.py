"""Platt scaling on the validation split, folded into the selected checkpoint's head
(``train.calibrate: platt``).

MedMNIST scores accuracy at p > 0.5, so a network whose probabilities lean towards one class
loses accuracy that its ranking (AUC) does not: BreastMNIST's val-selected networks called
83% of the val scans positive at a 73% prevalence. Platt scaling (p = σ(a·z + b) on the
logit z, Platt 1999; its one-parameter form is the temperature scaling of Guo et al. 2017)
fixes the lean without changing the ranking when a > 0. It is fitted on val, the split that
already selects the checkpoint; test is never read. Folding a and b into the last linear
layer keeps the checkpoint an ordinary network for evaluation, ONNX export and serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import expit

from dxkit.data.source import LabelledSet
from dxkit.errors import ConfigError
from dxkit.infer.checkpoint import load_checkpoint, read_checkpoint
from dxkit.infer.probabilities import predict_set_logits
from dxkit.train.module import split_head

SCALE_BOUNDS = (1e-3, 1e3)  # a > 0 keeps the ranking, so AUC is unchanged


def platt_fit(view_logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the log loss of the view-averaged ``σ(a·z + b)``.

    ``view_logits`` is ``(V, N)``: one row per test-time view, since evaluation averages
    the views' probabilities after the scaling (V = 1 is plain Platt scaling).
    """
    z = np.asarray(view_logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    eps = 1e-12

    def loss(params: np.ndarray) -> float:
        p = expit(params[0] * z + params[1]).mean(0).clip(eps, 1 - eps)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())

    res = minimize(loss, x0=[1.0, 0.0], method="L-BFGS-B", bounds=[SCALE_BOUNDS, (None, None)])
    return float(res.x[0]), float(res.x[1])


def _view_logits(path: Path, labelled: LabelledSet, tta: bool) -> tuple[np.ndarray, str, int]:
    """Per-view logits ``(V, N, L)`` of the split: the inference path's own
    (``dxkit.infer.probabilities``), on the device training would use, so the fitted (a, b)
    apply to exactly the probabilities that will be served."""
    loaded = load_checkpoint(path)
    logits = predict_set_logits(loaded, labelled, tta=tta)
    return logits, loaded.task, loaded.preprocessing.spatial_dims


def _head_names(path: Path) -> list[tuple[str, str]]:
    """(weight, bias) parameter names of every linear head (one per ensemble member)."""
    loaded = load_checkpoint(path)
    _, head = split_head(loaded.model)
    ids = {id(p): n for n, p in loaded.model.named_parameters()}
    names = sorted(ids[id(p)] for p in head)
    weights = [n for n in names if n.endswith("weight")]
    biases = [n for n in names if n.endswith("bias")]
    pairs = [(w, w.removesuffix("weight") + "bias") for w in weights]
    if not pairs or sorted(b for _, b in pairs) != biases:
        raise ConfigError("train.calibrate needs a model whose head is one linear layer with bias")
    return pairs


def calibrate_checkpoint(path: Path, labelled: LabelledSet, tta: bool) -> dict[str, Any]:
    """Fit Platt scaling per output on ``labelled`` (the val split) and fold it into the
    head of the checkpoint at ``path``, rewritten atomically; returns what was fitted."""
    logits, task, _ = _view_logits(path, labelled, tta)
    if task == "multiclass":
        raise ConfigError("train.calibrate: platt applies to binary and multi-label tasks")
    y = np.asarray(labelled.labels, dtype=np.float64)
    scale, shift = [], []
    for j in range(logits.shape[2]):
        if 0 < y[:, j].sum() < len(y):
            a, b = platt_fit(logits[:, :, j], y[:, j])
        else:  # one outcome only: nothing to fit
            a, b = 1.0, 0.0
        scale.append(a)
        shift.append(b)
    ckpt = read_checkpoint(path)
    state = ckpt["state_dict"]
    a_t, b_t = torch.tensor(scale), torch.tensor(shift)
    # An ensemble averages its members' logits, so a·mean(z) + b = mean(a·z_i + b):
    # the same (a, b) folds into every member's head.
    for weight_name, bias_name in _head_names(path):
        w, bias = state[f"model.{weight_name}"], state[f"model.{bias_name}"]
        state[f"model.{weight_name}"] = w * a_t.to(w.dtype)[:, None]
        state[f"model.{bias_name}"] = bias * a_t.to(bias.dtype) + b_t.to(bias.dtype)
    info = {"method": "platt", "split": "val", "tta": tta, "scale": scale, "shift": shift}
    ckpt["dxkit"]["calibration"] = info
    tmp = path.with_name(f".{path.name}.calibrate.tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return info
