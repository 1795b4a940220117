"""Operating points: the threshold of each finding, chosen on validation, and the decision
rule every predictor applies (``p >= threshold``; argmax for one-of-K tasks).

Training (exam and segment runs), ``dxkit evaluate`` (classifiers) and every predictor use
these, so the thresholds are fitted on, and applied to, the same served probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sklearn.metrics import roc_curve

from dxkit.errors import ConfigError
from dxkit.infer.score_inputs import binary_column, labels_probs

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


def decide(
    probs: np.ndarray, names: Sequence[str], thresholds: Sequence[float], task: str
) -> dict[str, bool]:
    """The positive/negative call per finding: argmax for one-of-K, else ``p >= threshold``."""
    if task == "multiclass":
        top = names[int(np.argmax(probs))]
        return {n: n == top for n in names}
    return {n: float(p) >= t for n, p, t in zip(names, probs, thresholds, strict=True)}
