"""Plane fusion: per-finding logistic regression, checked against scikit-learn after a save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from dxkit.errors import CheckpointError, DataSourceError
from dxkit.models.fusion import PlaneFusion

PLANES = ["axial", "coronal", "sagittal"]
FINDINGS = ["abnormal", "acl", "meniscus"]


def _plane_probs(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, len(FINDINGS)))
    # Planes of different quality: the sagittal plane sees each finding best.
    signal = np.array([0.5, 1.0, 2.0])[None, :, None] * (2 * labels[:, None, :] - 1)
    logits = signal + rng.normal(size=(n, len(PLANES), len(FINDINGS)))
    return 1 / (1 + np.exp(-logits)), labels


def test_predictions_match_sklearn_after_a_weights_only_round_trip(tmp_path):
    probs, labels = _plane_probs()
    fusion = PlaneFusion(PLANES, FINDINGS, C=0.5).fit(probs, labels)
    path = tmp_path / "fusion.pt"
    torch.save(fusion.to_state(), path)
    restored = PlaneFusion.from_state(torch.load(path, weights_only=True))
    assert restored.planes == PLANES and restored.findings == FINDINGS
    new_probs, _ = _plane_probs(n=50, seed=1)
    fused = restored.predict_proba(new_probs)
    assert fused.shape == (50, 3)
    for j in range(len(FINDINGS)):
        reference = LogisticRegression(C=0.5).fit(probs[:, :, j], labels[:, j])
        np.testing.assert_allclose(
            fused[:, j], reference.predict_proba(new_probs[:, :, j])[:, 1], rtol=1e-10, atol=1e-12
        )


def test_the_best_plane_gets_the_largest_weight():
    probs, labels = _plane_probs(n=600)
    fusion = PlaneFusion(PLANES, FINDINGS).fit(probs, labels)
    assert fusion.coef is not None
    assert (fusion.coef.argmax(axis=1) == PLANES.index("sagittal")).all()


def test_bad_shapes_and_one_class_labels():
    probs, labels = _plane_probs(n=40)
    fusion = PlaneFusion(PLANES, FINDINGS)
    with pytest.raises(DataSourceError, match=r"expected \(N, 3 planes"):
        fusion.fit(probs[:, :2], labels)
    with pytest.raises(DataSourceError, match=r"labels have shape \(40, 2\)"):
        fusion.fit(probs, labels[:, :2])
    one_class = labels.copy()
    one_class[:, 1] = 0
    with pytest.raises(DataSourceError, match="finding 'acl': labels hold one class only"):
        fusion.fit(probs, one_class)
    bad = probs.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataSourceError, match="NaN"):
        fusion.fit(bad, labels)


def test_unfitted_and_broken_states_are_checkpoint_errors():
    with pytest.raises(CheckpointError, match="not fitted"):
        PlaneFusion(PLANES, FINDINGS).to_state()
    with pytest.raises(CheckpointError, match="not fitted"):
        PlaneFusion(PLANES, FINDINGS).predict_proba(np.zeros((1, 3, 3)))
    probs, labels = _plane_probs(n=40)
    state = PlaneFusion(PLANES, FINDINGS).fit(probs, labels).to_state()
    with pytest.raises(CheckpointError, match=r"lacks keys \['coef'\]"):
        PlaneFusion.from_state({k: v for k, v in state.items() if k != "coef"})
    with pytest.raises(CheckpointError, match="do not match"):
        PlaneFusion.from_state({**state, "planes": PLANES[:2]})
