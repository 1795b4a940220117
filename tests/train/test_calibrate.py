"""``train.calibrate: platt``: the fit against scikit-learn's logistic regression, and end to
end: the calibrated checkpoint is the same network with its head rescaled, scoring a lower
val log loss and the same val AUC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from dxkit.infer.checkpoint import load_checkpoint, read_checkpoint
from dxkit.infer.probabilities import predict_set
from dxkit.train.calibrate import platt_fit
from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit
from dxkit.train.sources import load_source

from .test_engine import toy_config


def test_platt_fit_matches_unregularised_logistic_regression() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=400) * 3
    y = (rng.random(400) < 1 / (1 + np.exp(-(0.4 * z - 0.8)))).astype(float)
    a, b = platt_fit(z[None, :], y)
    ref = LogisticRegression(C=1e10, tol=1e-10, max_iter=10_000).fit(z[:, None], y)
    assert a == pytest.approx(ref.coef_[0, 0], rel=1e-3)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-3)
    # Identical test-time views average to the same probabilities: the same fit.
    assert platt_fit(np.stack([z, z]), y) == pytest.approx((a, b), rel=1e-4)


def test_calibrated_checkpoint_is_the_same_network_rescaled(tmp_path: Path) -> None:
    plain = fit(config_from_dict(toy_config(tmp_path / "a", epochs=2)), progress=False)
    cfg = config_from_dict(toy_config(tmp_path / "b", epochs=2, calibrate="platt"))
    calibrated = fit(cfg, progress=False)  # the same seed trains the same network

    info = read_checkpoint(calibrated.best_checkpoint)["dxkit"]["calibration"]
    (a,), (b,) = info["scale"], info["shift"]
    assert a > 0 and info["split"] == "val"
    before = read_checkpoint(plain.best_checkpoint)["state_dict"]
    after = read_checkpoint(calibrated.best_checkpoint)["state_dict"]
    torch.testing.assert_close(after["model.head.weight"], a * before["model.head.weight"])
    torch.testing.assert_close(after["model.head.bias"], a * before["model.head.bias"] + b)
    body = [k for k in before if not k.startswith("model.head.")]
    assert all(torch.equal(before[k], after[k]) for k in body)

    val = load_source(cfg).splits["val"]
    y = np.asarray(val.labels)[:, 0]
    p0 = predict_set(load_checkpoint(plain.best_checkpoint), val)[:, 0].astype(np.float64)
    p1 = predict_set(load_checkpoint(calibrated.best_checkpoint), val)[:, 0].astype(np.float64)
    assert roc_auc_score(y, p1) == pytest.approx(roc_auc_score(y, p0), abs=1e-6)
    # (a, b) = (1, 0) is a candidate of the fit, so the val log loss can only go down.
    assert log_loss(y, p1, labels=[0, 1]) <= log_loss(y, p0, labels=[0, 1]) + 1e-6
