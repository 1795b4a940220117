"""An operating point for one finding: the threshold chosen on validation
(``dxkit.infer.thresholds``, re-exported here) and the confusion table with
sensitivity/specificity/PPV/NPV (Wilson intervals) at it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix

from dxkit.infer.score_inputs import binary_column, labels_probs
from dxkit.infer.thresholds import ThresholdMethod, choose_threshold, choose_thresholds

log = logging.getLogger(__name__)


def _wilson(k: int, n: int, level: float) -> list[float] | None:
    if n == 0:
        return None
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def binary_table(y_true: Any, y_prob: Any, threshold: float, level: float = 0.95) -> dict[str, Any]:
    """Confusion matrix and the clinical rates of one label at ``p >= threshold``.

    Rates whose denominator is zero (no positive cases, no positive calls...) are ``None``
    with a note saying why. ``*_ci`` are Wilson score intervals that treat rows as
    independent (use ``auc_with_ci`` with patient groups for clustered data).
    """
    y, p = labels_probs(y_true, y_prob, "binary_table")
    yb, pb = binary_column(y, "binary_table"), p.ravel()
    pred = (pb >= threshold).astype(np.float64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(yb, pred, labels=[0.0, 1.0]).ravel())
    table: dict[str, Any] = {
        "threshold": float(threshold),
        "n": int(yb.size),
        "n_positive": tp + fn,
        "n_negative": tn + fp,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }
    notes: list[str] = []
    rates = {
        "sensitivity": (tp, tp + fn, "no positive cases"),
        "specificity": (tn, tn + fp, "no negative cases"),
        "ppv": (tp, tp + fp, f"no case called positive at threshold {threshold:.3g}"),
        "npv": (tn, tn + fn, f"no case called negative at threshold {threshold:.3g}"),
        "accuracy": (tp + tn, yb.size, "no cases"),
    }
    for name, (k, n, why) in rates.items():
        table[name] = k / n if n else None
        table[f"{name}_ci"] = _wilson(k, n, level)
        if not n:
            notes.append(f"{name} undefined: {why}")
    table["notes"] = notes
    return table


__all__ = ["ThresholdMethod", "binary_table", "choose_threshold", "choose_thresholds"]
