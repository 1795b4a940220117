"""Calibration of predicted probabilities: reliability-curve bins, expected calibration error.

A clinician reads "0.8" as "eight in ten such cases are positive"; these numbers say how
far that holds. The bins are scikit-learn's ``calibration_curve(strategy="uniform")`` bins.
We compute the per-bin sums ourselves because ``calibration_curve`` drops empty bins and
does not return bin counts, which ECE needs as weights (the tests check our bins against it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss

from dxkit.errors import ConfigError, DataSourceError


def _binary_inputs(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise DataSourceError(
            f"calibration: y_true has {y.size} values but y_prob has {p.size}; pass one "
            "label column and its probabilities, row for row"
        )
    if not np.isfinite(p).all() or (p.size and (p.min() < 0 or p.max() > 1)):
        raise DataSourceError(
            "calibration: y_prob must be finite probabilities in [0, 1]; apply sigmoid/softmax "
            "to the model's logits first"
        )
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataSourceError("calibration: y_true must hold only 0 and 1 for one label")
    return y, p


def _bins(y: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"calibration: n_bins must be a positive integer, got {n_bins!r}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Same assignment as sklearn.calibration.calibration_curve(strategy="uniform").
    ids = np.searchsorted(edges[1:-1], p)
    count = np.bincount(ids, minlength=n_bins)
    sum_prob = np.bincount(ids, weights=p, minlength=n_bins)
    sum_true = np.bincount(ids, weights=y, minlength=n_bins)
    return edges, count, sum_prob, sum_true


def reliability_curve(y_true: Any, y_prob: Any, n_bins: int = 15) -> dict[str, list[float]]:
    """Reliability-diagram points for one label: per non-empty equal-width bin, the mean
    predicted probability, the observed fraction of positives, the count and the bin edges."""
    y, p = _binary_inputs(y_true, y_prob)
    edges, count, sum_prob, sum_true = _bins(y, p, n_bins)
    keep = count > 0
    return {
        "mean_predicted": (sum_prob[keep] / count[keep]).tolist(),
        "fraction_positive": (sum_true[keep] / count[keep]).tolist(),
        "count": count[keep].astype(int).tolist(),
        "bin_lower": edges[:-1][keep].tolist(),
        "bin_upper": edges[1:][keep].tolist(),
    }


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = 15) -> float:
    """ECE of the positive-class probability: sum over bins of (share of cases) x
    |fraction positive - mean predicted|. NaN for an empty input."""
    y, p = _binary_inputs(y_true, y_prob)
    if y.size == 0:
        return float("nan")
    _, _, sum_prob, sum_true = _bins(y, p, n_bins)
    return float(np.sum(np.abs(sum_true - sum_prob)) / y.size)


def calibration_summary(y_true: Any, y_prob: Any, n_bins: int = 15) -> dict[str, Any]:
    """ECE, Brier score and reliability points for one label, ready for the report."""
    y, p = _binary_inputs(y_true, y_prob)
    return {
        "n_bins": n_bins,
        "ece": expected_calibration_error(y, p, n_bins),
        "brier": float(brier_score_loss(y, p)) if y.size else float("nan"),
        "reliability": reliability_curve(y, p, n_bins),
    }
