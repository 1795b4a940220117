"""Confidence intervals of a ROC AUC: percentile bootstrap (resampling patients or exams
when their ids are known) and DeLong's asymptotic interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from dxkit.errors import ConfigError, DataSourceError
from dxkit.infer.score_inputs import binary_column, labels_probs, safe_auc


def _weighted_aucs(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties count half) under each row of case weights ``(B, N)``.

    Our own code because a bootstrap resample is exactly a vector of case multiplicities:
    one sort serves all B resamples, which ``roc_auc_score`` in a loop cannot do (it is
    checked against ``roc_auc_score(sample_weight=...)`` in the tests).
    """
    pos_idx = np.flatnonzero(y == 1)
    neg_idx = np.flatnonzero(y == 0)
    neg_idx = neg_idx[np.argsort(p[neg_idx], kind="mergesort")]
    neg_scores = p[neg_idx]
    below = np.searchsorted(neg_scores, p[pos_idx], side="left")  # negatives strictly lower
    up_to = np.searchsorted(neg_scores, p[pos_idx], side="right")  # ... lower or tied
    w_neg = weights[:, neg_idx]
    cum_neg = np.zeros((weights.shape[0], neg_idx.size + 1))
    np.cumsum(w_neg, axis=1, out=cum_neg[:, 1:])
    w_pos = weights[:, pos_idx]
    beaten = cum_neg[:, below]
    if (up_to != below).any():  # ties between a positive and negatives count one half
        beaten = 0.5 * (beaten + cum_neg[:, up_to])
    num = np.einsum("bi,bi->b", w_pos, beaten)
    den = w_pos.sum(axis=1) * cum_neg[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_weights(n: int, groups: Any, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield ``(b, N)`` case-multiplicity blocks of a percentile bootstrap; with ``groups``
    whole groups (patients/exams) are drawn with replacement and all their rows follow."""
    if groups is None:
        codes, n_units = np.arange(n), n
    else:
        g = np.asarray(groups)
        if g.shape[0] != n:
            raise DataSourceError(
                f"bootstrap: {g.shape[0]} group ids for {n} cases; need one per row"
            )
        _, codes = np.unique(g, return_inverse=True)
        n_units = int(codes.max()) + 1 if n else 0
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, 2_000_000 // max(n, n_units, 1)))  # ~16 MB per array
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        draws = rng.integers(0, n_units, size=(b, n_units)) + n_units * np.arange(b)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n_units).reshape(b, n_units)
        yield (counts if groups is None else counts[:, codes]).astype(np.float64)


def bootstrap_aucs(
    y_true: Any, y_prob: Any, groups: Any = None, n_boot: int = 1000, seed: int = 0
) -> np.ndarray:
    """The ``n_boot`` resampled AUCs of one label (NaN where a resample lacks a class)."""
    y, p = labels_probs(y_true, y_prob, "bootstrap_aucs")
    yb, pb = binary_column(y, "bootstrap_aucs"), p.ravel()
    if n_boot < 1:
        return np.empty(0)
    return np.concatenate(
        [_weighted_aucs(yb, pb, w) for w in bootstrap_weights(yb.size, groups, n_boot, seed)]
    )


def percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    ok = samples[np.isfinite(samples)]
    if ok.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def auc_with_ci(
    y_true: Any,
    y_prob: Any,
    groups: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """ROC AUC of one label and its percentile-bootstrap interval ``(auc, lo, hi)``.

    With ``groups`` (patient or exam ids) the bootstrap resamples groups, not rows, so
    images of one patient stay together (a cluster bootstrap). Resamples missing a class are
    skipped. NaNs when the label has a single class.
    """
    if not 0 < level < 1:
        raise ConfigError(f"auc_with_ci: level must be in (0, 1), got {level}")
    y, p = labels_probs(y_true, y_prob, "auc_with_ci")
    yb, pb = binary_column(y, "auc_with_ci"), p.ravel()
    auc = safe_auc(yb, pb)
    if math.isnan(auc):
        return auc, float("nan"), float("nan")
    lo, hi = percentile_ci(bootstrap_aucs(yb, pb, groups, n_boot, seed), level)
    return auc, lo, hi


def delong_ci(y_true: Any, y_prob: Any, level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC with DeLong's asymptotic interval (rows independent), clipped to [0, 1].

    Fast DeLong with mid-ranks (Sun & Xu 2014); scikit-learn and SciPy have no DeLong.
    """
    y, p = labels_probs(y_true, y_prob, "delong_ci")
    yb, pb = binary_column(y, "delong_ci"), p.ravel()
    pos, neg = pb[yb == 1], pb[yb == 0]
    m, n = pos.size, neg.size
    if m < 2 or n < 2:
        return (safe_auc(yb, pb), float("nan"), float("nan"))
    ranks = rankdata(np.concatenate([pos, neg]))
    v_pos = (ranks[:m] - rankdata(pos)) / n  # share of negatives below each positive
    v_neg = 1.0 - (ranks[m:] - rankdata(neg)) / m  # share of positives above each negative
    auc = float(v_pos.mean())
    se = math.sqrt(v_pos.var(ddof=1) / m + v_neg.var(ddof=1) / n)
    z = float(norm.ppf(1 - (1 - level) / 2))
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)
