"""Classifier metrics the way benchmarks and clinical studies report them.

``medmnist_scores`` reproduces MedMNIST's ``Evaluator`` (AUC one-vs-rest averaged, ACC at
0.5 or argmax) so our numbers sit beside the published tables. The rest is the clinical
view of one finding: AUC with a confidence interval that resamples patients (not images)
when patient ids are known, a threshold chosen on validation, sensitivity/specificity/PPV/NPV
at that threshold, calibration, and the RSNA weighted log loss. ``evaluate_predictions``
assembles all of it into one JSON-ready payload for ``dxkit.evaluate.report``.

The pieces live in their own modules (``medmnist_scoring``, ``operating_point``,
``auc_intervals``, ``log_losses``, ``json_payload``); their public names are re-exported
here, so ``from dxkit.evaluate.metrics import ...`` stays the one import to use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_curve,
)

from dxkit.data.source import Task
from dxkit.errors import ConfigError, DataSourceError
from dxkit.evaluate.auc_intervals import (
    auc_with_ci,
    bootstrap_aucs,
    bootstrap_weights,
    delong_ci,
    percentile_ci,
)
from dxkit.evaluate.calibration import calibration_summary
from dxkit.evaluate.json_payload import json_safe, thin_curve
from dxkit.evaluate.log_losses import label_log_losses, rsna_weights, weighted_log_loss
from dxkit.evaluate.medmnist_scoring import medmnist_scores
from dxkit.evaluate.operating_point import (
    ThresholdMethod,
    binary_table,
    choose_threshold,
    choose_thresholds,
)
from dxkit.infer.score_inputs import TASKS, labels_probs, safe_auc

__all__ = [
    "ThresholdMethod",
    "auc_with_ci",
    "binary_table",
    "bootstrap_aucs",
    "bootstrap_weights",
    "choose_threshold",
    "choose_thresholds",
    "delong_ci",
    "evaluate_predictions",
    "json_safe",
    "label_log_losses",
    "medmnist_scores",
    "rsna_weights",
    "thin_curve",
    "weighted_log_loss",
]


MISSING_IDS = frozenset({"", "nan", "None"})  # patient ids that identify nobody


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
    auc = safe_auc(y, p)
    entry["auc"] = auc
    entry["auc_ci"] = list(percentile_ci(boot, level)) if not math.isnan(auc) else None
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
    if task not in TASKS:
        raise ConfigError(f"evaluate_predictions: task must be one of {TASKS}, got {task!r}")
    if not 0 < level < 1:
        raise ConfigError(f"evaluate_predictions: level must be in (0, 1), got {level}")
    y, p = labels_probs(y_true, y_prob, "evaluate_predictions")
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
    if groups is not None and all(str(g).strip() in MISSING_IDS for g in groups):
        groups = None  # every id empty (e.g. DICOMs with a blank PatientID): identity missing
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
        "macro_auc_ci": list(percentile_ci(macro_boot, level)) if scored else None,
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
            "unit": "group (patient/exam)" if groups is not None else "scan (no patient ids)",
            "n_units": n_groups if groups is not None else int(y.shape[0]),
        },
        "thresholds_from": "validation" if thresholds is not None else None,
        "overall": overall,
        "labels": labels,
    }
    return json_safe(payload)
