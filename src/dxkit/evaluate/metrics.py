"""Classifier metrics the way benchmarks and clinical studies report them.

``medmnist_scores`` reproduces MedMNIST's ``Evaluator`` (AUC one-vs-rest averaged, ACC at
0.5 or argmax) so our numbers sit beside the published tables. The rest is the clinical
view of one finding: AUC with a confidence interval that resamples patients (not images)
when patient ids are known, a threshold chosen on validation, sensitivity/specificity/PPV/NPV
at that threshold, calibration, and the RSNA weighted log loss. ``evaluate_predictions``
assembles all of it into one JSON-ready payload for ``dxkit.evaluate.report``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from scipy.stats import binomtest, norm, rankdata
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from dxkit.data.source import Task
from dxkit.errors import ConfigError, DataSourceError
from dxkit.evaluate.calibration import calibration_summary

log = logging.getLogger(__name__)

ThresholdMethod = Literal["youden", "sensitivity"]
_TASKS = ("binary", "multiclass", "multilabel")


# --------------------------------------------------------------------------- inputs


def _labels_probs(y_true: Any, y_prob: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
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


def _binary_column(y: np.ndarray, where: str) -> np.ndarray:
    y = y.ravel()
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataSourceError(f"{where}: y_true must hold only 0 and 1 for a binary label")
    return y


def _safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present (sklearn would raise)."""
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


# --------------------------------------------------------------------------- MedMNIST


def medmnist_scores(y_true: Any, y_prob: Any, task: Task) -> dict[str, float]:
    """AUC and ACC exactly as MedMNIST's ``Evaluator`` (``getAUC``/``getACC``) computes them.

    binary: ``y_prob`` (N,), (N, 1) or (N, 2) (last column = positive); ACC at ``p > 0.5``.
    multiclass: ``y_true`` one-hot (N, K) or integer labels; AUC of each class one-vs-rest,
    averaged; ACC of the argmax. multilabel: per-label AUC averaged; per-label ACC at
    ``p > 0.5`` averaged. Where MedMNIST would crash (a class absent), that class is left out
    of the average and a warning is logged; NaN when no class is scorable.
    """
    if task not in _TASKS:
        raise ConfigError(f"medmnist_scores: task must be one of {_TASKS}, got {task!r}")
    y, p = _labels_probs(y_true, y_prob, "medmnist_scores")
    if task == "binary":
        if p.shape[1] > 2:
            raise DataSourceError(
                f"medmnist_scores: a binary task takes (N,), (N, 1) or (N, 2) probabilities, "
                f"got {p.shape}"
            )
        yb, pb = _binary_column(y, "medmnist_scores"), p[:, -1]
        return {"auc": _safe_auc(yb, pb), "acc": float(accuracy_score(yb, pb > 0.5))}
    if task == "multiclass":
        k = p.shape[1]
        labels = y.argmax(axis=1) if y.shape[1] > 1 else y[:, 0]
        if y.shape[1] not in (1, k):
            raise DataSourceError(
                f"medmnist_scores: multiclass y_true must be one-hot (N, {k}) or labels (N,), "
                f"got {y.shape}"
            )
        aucs = [_safe_auc((labels == i).astype(np.float64), p[:, i]) for i in range(k)]
        acc = float(accuracy_score(labels, p.argmax(axis=1)))
    else:
        if y.shape != p.shape:
            raise DataSourceError(
                f"medmnist_scores: multilabel y_true {y.shape} and y_prob {p.shape} must match"
            )
        aucs = [_safe_auc(y[:, i], p[:, i]) for i in range(p.shape[1])]
        pred = p > 0.5
        acc = float(np.mean([accuracy_score(y[:, i], pred[:, i]) for i in range(p.shape[1])]))
    finite = [a for a in aucs if not math.isnan(a)]
    if len(finite) < len(aucs):
        log.warning(
            "medmnist_scores: %d class(es) absent, AUC averaged over the rest",
            len(aucs) - len(finite),
        )
    return {"auc": float(np.mean(finite)) if finite else float("nan"), "acc": acc}


# --------------------------------------------------------------------------- thresholds


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
    y, p = _labels_probs(y_true, y_prob, "choose_threshold")
    yb, pb = _binary_column(y, "choose_threshold"), p.ravel()
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
    y, p = _labels_probs(y_true, y_prob, "choose_thresholds")
    return [choose_threshold(y[:, i], p[:, i], method, target) for i in range(p.shape[1])]


# --------------------------------------------------------------------------- tables


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
    y, p = _labels_probs(y_true, y_prob, "binary_table")
    yb, pb = _binary_column(y, "binary_table"), p.ravel()
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


# --------------------------------------------------------------------------- AUC intervals


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
    y, p = _labels_probs(y_true, y_prob, "bootstrap_aucs")
    yb, pb = _binary_column(y, "bootstrap_aucs"), p.ravel()
    if n_boot < 1:
        return np.empty(0)
    return np.concatenate(
        [_weighted_aucs(yb, pb, w) for w in bootstrap_weights(yb.size, groups, n_boot, seed)]
    )


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
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
    y, p = _labels_probs(y_true, y_prob, "auc_with_ci")
    yb, pb = _binary_column(y, "auc_with_ci"), p.ravel()
    auc = _safe_auc(yb, pb)
    if math.isnan(auc):
        return auc, float("nan"), float("nan")
    lo, hi = _percentile_ci(bootstrap_aucs(yb, pb, groups, n_boot, seed), level)
    return auc, lo, hi


def delong_ci(y_true: Any, y_prob: Any, level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC with DeLong's asymptotic interval (rows independent), clipped to [0, 1].

    Fast DeLong with mid-ranks (Sun & Xu 2014); scikit-learn and SciPy have no DeLong.
    """
    y, p = _labels_probs(y_true, y_prob, "delong_ci")
    yb, pb = _binary_column(y, "delong_ci"), p.ravel()
    pos, neg = pb[yb == 1], pb[yb == 0]
    m, n = pos.size, neg.size
    if m < 2 or n < 2:
        return (_safe_auc(yb, pb), float("nan"), float("nan"))
    ranks = rankdata(np.concatenate([pos, neg]))
    v_pos = (ranks[:m] - rankdata(pos)) / n  # share of negatives below each positive
    v_neg = 1.0 - (ranks[m:] - rankdata(neg)) / m  # share of positives above each negative
    auc = float(v_pos.mean())
    se = math.sqrt(v_pos.var(ddof=1) / m + v_neg.var(ddof=1) / n)
    z = float(norm.ppf(1 - (1 - level) / 2))
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)


# --------------------------------------------------------------------------- log loss


def rsna_weights(label_names: Sequence[str]) -> list[float]:
    """The RSNA hemorrhage metric's weights: 2 for ``any``, 1 for each subtype."""
    return [2.0 if name == "any" else 1.0 for name in label_names]


def weighted_log_loss(
    y_true: Any, y_prob: Any, weights: Sequence[float], eps: float = 1e-15
) -> float:
    """Multi-label log loss with per-label weights (RSNA: ``any`` 2, others 1): per case,
    the weighted mean of the label log losses; then the mean over cases. Probabilities are
    clipped to ``[eps, 1 - eps]``."""
    y, p = _labels_probs(y_true, y_prob, "weighted_log_loss")
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
    y, p = _labels_probs(y_true, y_prob, "label_log_losses")
    return [float(log_loss(y[:, i], p[:, i], labels=[0, 1])) for i in range(p.shape[1])]


# --------------------------------------------------------------------------- payload helpers


def json_safe(obj: Any) -> Any:
    """Plain JSON types all the way down: NumPy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def thin_curve(*arrays: np.ndarray, max_points: int = 500) -> list[np.ndarray]:
    """Evenly keep at most ``max_points`` points (first and last kept) of parallel arrays,
    so a curve over 100 000 cases stays a few kB in the report."""
    n = len(arrays[0])
    if n <= max_points:
        return list(arrays)
    keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return [a[keep] for a in arrays]


# --------------------------------------------------------------------------- the full payload


def _label_entry(
    name: str,
    y: np.ndarray,
    p: np.ndarray,
    threshold: float | None,
    boot: np.ndarray,
    level: float,
    with_delong: bool,
    n_bins: int,
    max_points: int,
) -> dict[str, Any]:
    """Everything the report shows for one label (curves thinned to ``max_points``)."""
    n_pos = int(y.sum())
    entry: dict[str, Any] = {
        "name": name,
        "n": int(y.size),
        "n_positive": n_pos,
        "prevalence": n_pos / y.size if y.size else None,
        "notes": [],
    }
    auc = _safe_auc(y, p)
    entry["auc"] = auc
    entry["auc_ci"] = list(_percentile_ci(boot, level)) if not math.isnan(auc) else None
    entry["bootstrap_valid"] = int(np.isfinite(boot).sum())
    entry["auc_ci_delong"] = list(delong_ci(y, p, level)[1:]) if with_delong else None
    if math.isnan(auc):
        entry["notes"].append("only one class present: AUC, ROC and PR curves undefined")
        entry["roc"] = entry["pr"] = None
    else:
        fpr, tpr, thr = thin_curve(*roc_curve(y, p), max_points=max_points)
        prec, rec, _ = precision_recall_curve(y, p)
        prec, rec = thin_curve(prec, rec, max_points=max_points)
        entry["roc"] = {"fpr": fpr, "tpr": tpr, "thresholds": thr}
        entry["pr"] = {
            "precision": prec,
            "recall": rec,
            "average_precision": float(average_precision_score(y, p)),
        }
        if entry["bootstrap_valid"] < 0.9 * boot.size:
            entry["notes"].append(
                f"only {entry['bootstrap_valid']} of {boot.size} bootstrap resamples held both "
                "classes: the AUC interval is unreliable"
            )
    entry["threshold"] = threshold
    entry["tables"] = {
        "validation": binary_table(y, p, threshold, level) if threshold is not None else None,
        "0.5": binary_table(y, p, 0.5, level),
    }
    if threshold is None:
        entry["notes"].append("no validation threshold given: table at 0.5 only")
    entry["calibration"] = calibration_summary(y, p, n_bins)
    return entry


def evaluate_predictions(
    y_true: Any,
    y_prob: Any,
    label_names: Sequence[str],
    task: Task,
    thresholds: Sequence[float] | None = None,
    groups: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    level: float = 0.95,
    n_bins: int = 15,
    max_curve_points: int = 500,
) -> dict[str, Any]:
    """The clinical evaluation payload: per label AUC + CI, ROC/PR points, tables at the
    validation threshold and at 0.5, calibration; overall MedMNIST scores and macro AUC
    with a paired bootstrap CI. JSON-ready (plain types, NaN as None). ``y_true`` and
    ``y_prob`` are ``(N, L)`` (one-hot columns for multiclass); ``thresholds`` come from
    ``choose_thresholds`` on the validation split, never from the split being scored.
    Patient ids (``groups``) are used for resampling only and never enter the payload.
    """
    if task not in _TASKS:
        raise ConfigError(f"evaluate_predictions: task must be one of {_TASKS}, got {task!r}")
    if not 0 < level < 1:
        raise ConfigError(f"evaluate_predictions: level must be in (0, 1), got {level}")
    y, p = _labels_probs(y_true, y_prob, "evaluate_predictions")
    names = [str(n) for n in label_names]
    if y.shape != p.shape or p.shape[1] != len(names) or (task == "binary" and len(names) != 1):
        raise DataSourceError(
            f"evaluate_predictions: y_true {y.shape}, y_prob {p.shape} and {len(names)} label "
            f"names must agree (task {task!r}: binary takes one column; multiclass one-hot)"
        )
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataSourceError("evaluate_predictions: y_true must be 0/1 (one-hot for multiclass)")
    if thresholds is not None and len(thresholds) != len(names):
        raise ConfigError(
            f"evaluate_predictions: {len(thresholds)} thresholds for {len(names)} labels "
            f"{names}; pass one per label (choose_thresholds on validation) or None"
        )
    boots = (
        np.stack(
            [bootstrap_aucs(y[:, i], p[:, i], groups, n_boot, seed) for i in range(len(names))]
        )
        if n_boot > 0
        else np.empty((len(names), 0))
    )
    labels = [
        _label_entry(
            name,
            y[:, i],
            p[:, i],
            None if thresholds is None else float(thresholds[i]),
            boots[i],
            level,
            groups is None,
            n_bins,
            max_curve_points,
        )
        for i, name in enumerate(names)
    ]
    scored = [i for i, e in enumerate(labels) if not math.isnan(e["auc"])]
    macro = float(np.mean([labels[i]["auc"] for i in scored])) if scored else float("nan")
    # Same seed and rows for every label, so resample b is one draw of the whole test set:
    # the macro AUC's interval comes from the per-resample mean (a paired bootstrap).
    macro_boot = boots[scored].mean(axis=0) if scored else np.empty(0)
    overall: dict[str, Any] = {
        "medmnist": medmnist_scores(y, p, task),
        "macro_auc": macro,
        "macro_auc_ci": list(_percentile_ci(macro_boot, level)) if scored else None,
        "labels_scored": [names[i] for i in scored],
    }
    if task == "multiclass":
        overall["confusion_matrix"] = confusion_matrix(
            y.argmax(axis=1), p.argmax(axis=1), labels=list(range(len(names)))
        )
    n_groups = int(np.unique(np.asarray(groups)).size) if groups is not None else None
    payload = {
        "task": task,
        "n": int(y.shape[0]),
        "label_names": names,
        "bootstrap": {
            "n_boot": int(n_boot),
            "seed": int(seed),
            "level": level,
            "unit": "group (patient/exam)" if groups is not None else "case",
            "n_units": n_groups if groups is not None else int(y.shape[0]),
        },
        "thresholds_from": "validation" if thresholds is not None else None,
        "overall": overall,
        "labels": labels,
    }
    return json_safe(payload)
