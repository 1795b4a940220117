"""An operating point for one finding: the threshold chosen on validation and the
confusion table with sensitivity/specificity/PPV/NPV (Wilson intervals) at it.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix, roc_curve

from dxkit.errors import ConfigError
from dxkit.evaluate.score_inputs import binary_column, labels_probs

log = logging.getLogger(__name__)


ThresholdMethod = Literal["youden", "sensitivity"]


def choose_threshold(
    y_true: Any, y_prob: Any, method: ThresholdMethod = "youden", target: float = 0.9
) -> float:
    """Operating point for one label, to be chosen on VALIDATION and applied to test.

    ``youden`` maximises sensitivity + specificity - 1; ``sensitivity`` is the highest
    threshold whose sensitivity reaches ``target`` (the most specific such point). A case is
    called positive when ``p >= threshold`` (scikit-learn's ``roc_curve`` convention). With a
    single class present no threshold can be chosen: 0.5 is returned and a warning logged.
    """
    if method not in ("youden", "sensitivity"):
        raise ConfigError(
            f"choose_threshold: method must be 'youden' or 'sensitivity', got {method!r}"
        )
    if not 0 < target <= 1:
        raise ConfigError(f"choose_threshold: target sensitivity must be in (0, 1], got {target}")
    y, p = labels_probs(y_true, y_prob, "choose_threshold")
    yb, pb = binary_column(y, "choose_threshold"), p.ravel()
    if np.unique(yb).size < 2:
        log.warning("choose_threshold: only one class in y_true, falling back to 0.5")
        return 0.5
    fpr, tpr, thr = roc_curve(yb, pb, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the (0, 0) point at threshold +inf
    if method == "youden":
        best = int(np.argmax(tpr - fpr))
    else:
        best = int(np.flatnonzero(tpr >= target - 1e-12)[0])
    return float(thr[best])


def choose_thresholds(
    y_true: Any, y_prob: Any, method: ThresholdMethod = "youden", target: float = 0.9
) -> list[float]:
    """``choose_threshold`` for every label column of ``(N, L)`` validation predictions."""
    y, p = labels_probs(y_true, y_prob, "choose_thresholds")
    return [choose_threshold(y[:, i], p[:, i], method, target) for i in range(p.shape[1])]


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
