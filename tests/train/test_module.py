"""Validation AUC inside the training module, against scikit-learn."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from dxkit.train.module import split_head, val_auc


def test_val_auc_matches_sklearn_and_skips_one_class_labels() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((60, 3)) < 0.4).astype(np.float32)
    y[:, 2] = 0  # a finding absent from this validation split
    p = rng.random((60, 3)).astype(np.float32)
    expected = np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(2)])
    got = float(val_auc(torch.tensor(p), torch.tensor(y), "multilabel"))
    assert abs(got - expected) < 1e-6


def test_val_auc_multiclass_is_one_vs_rest_macro() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 90)
    logits = rng.normal(size=(90, 3)) + np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    got = float(val_auc(torch.tensor(probs), torch.tensor(np.eye(3)[labels]), "multiclass"))
    assert abs(got - expected) < 1e-6


def test_split_head_separates_the_classifier() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    body, head = split_head(model)
    assert [p.shape for p in head] == [torch.Size([2, 4]), torch.Size([2])]
    assert len(body) == 2
