"""Checks shared by the classifier metrics: labels and probabilities as ``(N, L)``
arrays, a binary column, an AUC that is NaN instead of an error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from dxkit.errors import DataSourceError

TASKS = ("binary", "multiclass", "multilabel")


def labels_probs(y_true: Any, y_prob: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 2-D ``(N, L)``; probabilities finite and in [0, 1]."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    y = y.reshape(-1, 1) if y.ndim == 1 else y
    p = p.reshape(-1, 1) if p.ndim == 1 else p
    if y.ndim != 2 or p.ndim != 2 or y.shape[0] != p.shape[0]:
        raise DataSourceError(
            f"{where}: y_true {np.shape(y_true)} and y_prob {np.shape(y_prob)} must be "
            "(N,) or (N, L) with the same N; pass one row per case"
        )
    if not np.isfinite(p).all() or (p.size and (p.min() < 0 or p.max() > 1)):
        raise DataSourceError(
            f"{where}: y_prob must be finite probabilities in [0, 1]; apply sigmoid/softmax "
            "to the model's logits first"
        )
    return y, p


def binary_column(y: np.ndarray, where: str) -> np.ndarray:
    y = y.ravel()
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataSourceError(f"{where}: y_true must hold only 0 and 1 for a binary label")
    return y


def safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present (sklearn would raise)."""
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, p))
