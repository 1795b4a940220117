"""Log losses per label and the RSNA hemorrhage metric (label-weighted log loss)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import log_loss

from dxkit.errors import DataSourceError
from dxkit.infer.score_inputs import labels_probs


def rsna_weights(label_names: Sequence[str]) -> list[float]:
    """The RSNA hemorrhage metric's weights: 2 for ``any``, 1 for each subtype."""
    return [2.0 if name == "any" else 1.0 for name in label_names]


def weighted_log_loss(
    y_true: Any, y_prob: Any, weights: Sequence[float], eps: float = 1e-15
) -> float:
    """Multi-label log loss with per-label weights (RSNA: ``any`` 2, others 1): per case,
    the weighted mean of the label log losses; then the mean over cases. Probabilities are
    clipped to ``[eps, 1 - eps]``."""
    y, p = labels_probs(y_true, y_prob, "weighted_log_loss")
    w = np.asarray(weights, dtype=np.float64).ravel()
    if y.shape != p.shape or w.size != p.shape[1] or (w < 0).any() or w.sum() <= 0:
        raise DataSourceError(
            f"weighted_log_loss: y_true {y.shape}, y_prob {p.shape} and {w.size} weights must "
            "agree (one non-negative weight per label column)"
        )
    q = np.clip(p, eps, 1 - eps)
    per_label = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return float(np.mean(per_label @ w / w.sum()))


def label_log_losses(y_true: Any, y_prob: Any) -> list[float]:
    """scikit-learn's log loss of each label column (for reports next to the weighted one)."""
    y, p = labels_probs(y_true, y_prob, "label_log_losses")
    return [float(log_loss(y[:, i], p[:, i], labels=[0, 1])) for i in range(p.shape[1])]
