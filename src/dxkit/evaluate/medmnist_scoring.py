"""MedMNIST's own AUC and ACC, so our numbers sit beside the published tables."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score

from dxkit.data.source import Task
from dxkit.errors import ConfigError, DataSourceError
from dxkit.infer.score_inputs import TASKS, binary_column, labels_probs, safe_auc

log = logging.getLogger(__name__)


def medmnist_scores(y_true: Any, y_prob: Any, task: Task) -> dict[str, float]:
    """AUC and ACC exactly as MedMNIST's ``Evaluator`` (``getAUC``/``getACC``) computes them.

    binary: ``y_prob`` (N,), (N, 1) or (N, 2) (last column = positive); ACC at ``p > 0.5``.
    multiclass: ``y_true`` one-hot (N, K) or integer labels; AUC of each class one-vs-rest,
    averaged; ACC of the argmax. multilabel: per-label AUC averaged; per-label ACC at
    ``p > 0.5`` averaged. Where MedMNIST would crash (a class absent), that class is left out
    of the average and a warning is logged; NaN when no class is scorable.
    """
    if task not in TASKS:
        raise ConfigError(f"medmnist_scores: task must be one of {TASKS}, got {task!r}")
    y, p = labels_probs(y_true, y_prob, "medmnist_scores")
    if task == "binary":
        if p.shape[1] > 2:
            raise DataSourceError(
                f"medmnist_scores: a binary task takes (N,), (N, 1) or (N, 2) probabilities, "
                f"got {p.shape}"
            )
        yb, pb = binary_column(y, "medmnist_scores"), p[:, -1]
        return {"auc": safe_auc(yb, pb), "acc": float(accuracy_score(yb, pb > 0.5))}
    if task == "multiclass":
        k = p.shape[1]
        labels = y.argmax(axis=1) if y.shape[1] > 1 else y[:, 0]
        if y.shape[1] not in (1, k):
            raise DataSourceError(
                f"medmnist_scores: multiclass y_true must be one-hot (N, {k}) or labels (N,), "
                f"got {y.shape}"
            )
        aucs = [safe_auc((labels == i).astype(np.float64), p[:, i]) for i in range(k)]
        acc = float(accuracy_score(labels, p.argmax(axis=1)))
    else:
        if y.shape != p.shape:
            raise DataSourceError(
                f"medmnist_scores: multilabel y_true {y.shape} and y_prob {p.shape} must match"
            )
        aucs = [safe_auc(y[:, i], p[:, i]) for i in range(p.shape[1])]
        pred = p > 0.5
        acc = float(np.mean([accuracy_score(y[:, i], pred[:, i]) for i in range(p.shape[1])]))
    finite = [a for a in aucs if not math.isnan(a)]
    if len(finite) < len(aucs):
        log.warning(
            "medmnist_scores: %d class(es) absent, AUC averaged over the rest",
            len(aucs) - len(finite),
        )
    return {"auc": float(np.mean(finite)) if finite else float("nan"), "acc": acc}
