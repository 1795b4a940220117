"""Plane fusion: one logistic regression per finding over the plane networks' outputs.

As in Bien et al. 2018, each finding's exam probability comes from a logistic regression on
the three planes' probabilities for that finding. It must be fitted on out-of-fold
predictions (networks trained without the exams they predict), never on predictions for the
exams the networks were trained on, or it learns to trust over-confident planes.

scikit-learn fits it; the fitted model is kept as plain tensors and strings (``to_state``)
so it travels inside an exam-model bundle readable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from dxkit.errors import CheckpointError, DataSourceError

STATE_VERSION = 1


class PlaneFusion:
    """Per-finding logistic regression from plane probabilities ``(N, n_planes, n_findings)``."""

    def __init__(self, planes: Sequence[str], findings: Sequence[str], C: float = 1.0) -> None:  # noqa: N803 (sklearn name)
        self.planes = list(planes)
        self.findings = list(findings)
        self.C = C
        self.coef: np.ndarray | None = None  # (n_findings, n_planes)
        self.intercept: np.ndarray | None = None  # (n_findings,)

    def _check(self, plane_probs: np.ndarray, name: str) -> np.ndarray:
        probs = np.asarray(plane_probs, dtype=np.float64)
        want = (len(self.planes), len(self.findings))
        if probs.ndim != 3 or probs.shape[1:] != want:
            raise DataSourceError(
                f"{name} has shape {probs.shape}; expected (N, {want[0]} planes {self.planes}, "
                f"{want[1]} findings {self.findings})"
            )
        if not np.isfinite(probs).all():
            raise DataSourceError(f"{name} holds NaN or infinite values")
        return probs

    def fit(self, plane_probs: np.ndarray, labels: np.ndarray) -> PlaneFusion:
        """Fit on out-of-fold plane probabilities and binary labels ``(N, n_findings)``."""
        probs = self._check(plane_probs, "plane probabilities")
        labels = np.asarray(labels)
        if labels.shape != (probs.shape[0], len(self.findings)):
            raise DataSourceError(
                f"labels have shape {labels.shape}; "
                f"expected ({probs.shape[0]}, {len(self.findings)})"
            )
        coef, intercept = [], []
        for j, finding in enumerate(self.findings):
            if len(np.unique(labels[:, j])) < 2:
                raise DataSourceError(
                    f"finding {finding!r}: labels hold one class only; fusion needs positive "
                    "and negative exams"
                )
            model = LogisticRegression(C=self.C).fit(probs[:, :, j], labels[:, j])
            coef.append(model.coef_[0])
            intercept.append(model.intercept_[0])
        self.coef, self.intercept = np.stack(coef), np.asarray(intercept)
        return self

    def predict_proba(self, plane_probs: np.ndarray) -> np.ndarray:
        """Exam probability per finding ``(N, n_findings)``."""
        if self.coef is None or self.intercept is None:
            raise CheckpointError("PlaneFusion is not fitted; call fit() or from_state() first")
        probs = self._check(plane_probs, "plane probabilities")
        z = np.einsum("npf,fp->nf", probs, self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_state(self) -> dict[str, Any]:
        """Plain tensors/strings, loadable with ``torch.load(weights_only=True)``."""
        if self.coef is None or self.intercept is None:
            raise CheckpointError("PlaneFusion is not fitted; nothing to save")
        return {
            "version": STATE_VERSION,
            "planes": list(self.planes),
            "findings": list(self.findings),
            "C": float(self.C),
            "coef": torch.from_numpy(self.coef.copy()),
            "intercept": torch.from_numpy(self.intercept.copy()),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PlaneFusion:
        """Rebuild from ``to_state()`` output (checks keys and shapes)."""
        keys = {"version", "planes", "findings", "C", "coef", "intercept"}
        if not keys <= set(state):
            raise CheckpointError(f"plane-fusion state lacks keys {sorted(keys - set(state))}")
        if state["version"] != STATE_VERSION:
            raise CheckpointError(
                f"plane-fusion state version {state['version']!r}; this dxkit reads {STATE_VERSION}"
            )
        fusion = cls(state["planes"], state["findings"], C=state["C"])
        coef = torch.as_tensor(state["coef"]).double().numpy()
        intercept = torch.as_tensor(state["intercept"]).double().numpy()
        if coef.shape != (len(fusion.findings), len(fusion.planes)) or intercept.shape != (
            len(fusion.findings),
        ):
            raise CheckpointError(
                f"plane-fusion coef {coef.shape}/intercept {intercept.shape} do not match "
                f"{len(fusion.findings)} findings × {len(fusion.planes)} planes"
            )
        fusion.coef, fusion.intercept = coef, intercept
        return fusion
