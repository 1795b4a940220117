"""Results said in words where people look: undefined metrics with their reason, metric
names that fit the data, three decimals.

An AUC on a split with one class is undefined; the console used to print ``valid: `` and
the report ``n/a`` with the reason only in per-label notes. ``undefined_reasons`` names
each undefined AUC and why; ``score_line`` is the console summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DECIMALS = 3


def one_class_reason(n: int, n_positive: int) -> str:
    """Why an AUC is undefined for a label with ``n`` cases and ``n_positive`` positives."""
    if n == 0:
        return "no cases in this split"
    if n_positive == 0:
        return "only negatives in this split"
    if n_positive == n:
        return "only positives in this split"
    return "scores could not be computed"


def undefined_reasons(payload: Mapping[str, Any] | None) -> dict[str, str]:
    """``{label: reason}`` for each label whose AUC is undefined in an evaluation payload."""
    out: dict[str, str] = {}
    for entry in (payload or {}).get("labels", []) or []:
        auc = entry.get("auc")
        if auc is None or (isinstance(auc, float) and math.isnan(auc)):
            out[str(entry.get("name"))] = one_class_reason(
                int(entry.get("n") or 0), int(entry.get("n_positive") or 0)
            )
    return out


def _undefined(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def score_line(
    split: str, scores: Mapping[str, Any], payload: Mapping[str, Any] | None = None
) -> str:
    """``test: AUC 0.720, ACC 0.600`` (3 decimals); an undefined score is named with its
    reason (``AUC undefined: only negatives in this split``)."""
    reasons = undefined_reasons(payload)
    why = "; ".join(sorted(set(reasons.values()))) or "not computable on this split"
    parts = []
    for key, value in scores.items():
        name = key.upper()
        if _undefined(value):
            parts.append(f"{name} undefined: {why}")
        elif isinstance(value, (int, float)):
            parts.append(f"{name} {float(value):.{DECIMALS}f}")
        else:
            parts.append(f"{name} {value}")
    for label, reason in reasons.items():
        if len(reasons) > 1 or not any(_undefined(v) for v in scores.values()):
            parts.append(f"AUC of {label} undefined: {reason}")
    return f"{split}: " + (", ".join(parts) if parts else "no scores")


def metric_family(payload: Mapping[str, Any]) -> str:
    """``MedMNIST`` when the scored data is a MedMNIST set, else empty."""
    return "MedMNIST " if str(payload.get("source", "")).lower() == "medmnist" else ""
