"""``train.mixup``: blended scans carry the same blend of their labels, the own scan stays
dominant, the soft multi-class loss is cross-entropy against the mixed distribution, and a
run with mixup trains and is repeatable with its seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit
from dxkit.train.module import ClassifierModule, mixup

from .test_engine import metrics_rows, toy_config


def test_scans_and_labels_blend_with_one_weight() -> None:
    torch.manual_seed(0)
    x = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1).expand(4, 1, 3, 3).clone()
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    mx, my = mixup(x, y, alpha=0.4)
    # Every mixed scan is lam * own + (1 - lam) * partner; recover (lam, partner) per row.
    for i in range(4):
        value = float(mx[i, 0, 0, 0])
        fits = [
            (lam, j)
            for j in range(4)
            for lam in [(value - j) / (i - j) if i != j else 1.0]
            if 0.5 <= lam <= 1.0 + 1e-6 and abs(lam * i + (1 - lam) * j - value) < 1e-5
        ]
        assert fits, f"row {i} is not a blend with its own scan dominant"
        lam, j = fits[0]
        torch.testing.assert_close(my[i], lam * y[i] + (1 - lam) * y[j])


def test_soft_multiclass_loss_is_cross_entropy_on_the_mixture() -> None:
    cfg = config_from_dict({"name": "t", "train": {"mixup": 0.2}}).train
    module = ClassifierModule(torch.nn.Linear(2, 3), "multiclass", cfg)
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    target = torch.tensor([[0.7, 0.3, 0.0]])
    logp = np.log(np.exp([2.0, 0.5, -1.0]) / np.exp([2.0, 0.5, -1.0]).sum())
    expected = -(0.7 * logp[0] + 0.3 * logp[1])
    assert float(module.loss(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_mixup_run_learns_and_repeats(tmp_path: Path) -> None:
    a = fit(config_from_dict(toy_config(tmp_path / "a", epochs=4, mixup=0.4)), progress=False)
    b = fit(config_from_dict(toy_config(tmp_path / "b", epochs=4, mixup=0.4)), progress=False)
    loss_a = [r["train_loss"] for r in metrics_rows(a.run_dir) if r.get("train_loss")]
    loss_b = [r["train_loss"] for r in metrics_rows(b.run_dir) if r.get("train_loss")]
    assert len(loss_a) == 4 and loss_a == loss_b
    # The toy lesion is still learned: val AUC 1.00 with seeds 0-5 (1 thread), 0-4 (2 threads).
    assert a.best_score is not None and a.best_score > 0.8


def test_mixup_is_refused_outside_classifiers() -> None:
    with pytest.raises(Exception, match="mixup applies to classifiers"):
        config_from_dict({"name": "t", "task": "segment", "train": {"mixup": 0.2}})
