"""``model.ensemble: N``: N independently initialised members whose logits are averaged, each
trained on its own loss, saved and reloaded as one network, calibrated in every head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from dxkit.errors import ConfigError
from dxkit.infer.checkpoint import load_checkpoint, read_checkpoint
from dxkit.infer.probabilities import predict_set
from dxkit.models import create_model
from dxkit.models.ensemble import DeepEnsemble
from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit
from dxkit.train.module import ClassifierModule, split_head
from dxkit.train.sources import load_source

from .test_engine import toy_config

SMALL = {"widths": [16, 16], "depths": [1, 1], "strides": [1, 2], "dropout": 0.0}


def test_forward_is_the_mean_of_independent_members() -> None:
    torch.manual_seed(0)
    model = create_model("smallresnet", 1, 3, ensemble=3, **SMALL).eval()
    assert isinstance(model, DeepEnsemble) and len(model.members) == 3
    w0, w1 = (m.stem[0].weight for m in model.members[:2])
    assert not torch.equal(w0, w1)  # initialised independently
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        by_hand = sum(m(x) for m in model.members) / 3
        torch.testing.assert_close(model(x), by_hand)
    assert model.dxkit_cam_layer == "members.0.stages.1"
    assert model.get_submodule(model.dxkit_cam_layer) is model.members[0].stages[1]


def test_head_is_every_member_head() -> None:
    model = create_model("smallresnet", 1, 2, ensemble=2, **SMALL)
    _, head = split_head(model)
    expected = {id(p) for m in model.members for p in m.head.parameters()}
    assert {id(p) for p in head} == expected


def test_each_member_gets_its_own_loss_gradient() -> None:
    """The summed member losses give member k the gradient of its loss alone (not of the
    averaged logit, which would couple the members)."""
    torch.manual_seed(1)
    model = create_model("smallresnet", 1, 1, ensemble=2, **SMALL).train()
    cfg = config_from_dict({"name": "t", "train": {"epochs": 1}}).train
    module = ClassifierModule(model, "binary", cfg)
    x, y = torch.randn(6, 1, 16, 16), torch.tensor([[0.0], [1.0]] * 3)
    module.training_loss(x, y)[0].backward()
    got = model.members[1].head.weight.grad.clone()

    model.zero_grad()
    F.binary_cross_entropy_with_logits(model.members[1](x), y).backward()
    torch.testing.assert_close(got, model.members[1].head.weight.grad)


def test_bad_ensemble_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ensemble"):
        create_model("smallresnet", 1, 1, ensemble=0)
    with pytest.raises(Exception, match="ensemble"):
        config_from_dict({"name": "t", "model": {"ensemble": 0}})


def test_trained_ensemble_round_trips_and_calibrates_every_head(tmp_path: Path) -> None:
    base = toy_config(tmp_path / "a", epochs=2)
    base["model"]["ensemble"] = 2
    plain = fit(config_from_dict(base), progress=False)
    calibrated_cfg = toy_config(tmp_path / "b", epochs=2, calibrate="platt")
    calibrated_cfg["model"]["ensemble"] = 2
    calibrated = fit(config_from_dict(calibrated_cfg), progress=False)  # same seed, same nets

    loaded = load_checkpoint(plain.best_checkpoint)
    assert isinstance(loaded.model, DeepEnsemble) and len(loaded.model.members) == 2
    assert loaded.meta["model"]["options"]["ensemble"] == 2

    info = read_checkpoint(calibrated.best_checkpoint)["dxkit"]["calibration"]
    (a,), (b,) = info["scale"], info["shift"]
    before = read_checkpoint(plain.best_checkpoint)["state_dict"]
    after = read_checkpoint(calibrated.best_checkpoint)["state_dict"]
    for k in range(2):
        w, bias = f"model.members.{k}.head.weight", f"model.members.{k}.head.bias"
        torch.testing.assert_close(after[w], a * before[w])
        torch.testing.assert_close(after[bias], a * before[bias] + b)

    val = load_source(config_from_dict(base)).splits["val"]
    y = np.asarray(val.labels)[:, 0]
    p_plain = predict_set(loaded, val)[:, 0].astype(np.float64)
    p_cal = predict_set(load_checkpoint(calibrated.best_checkpoint), val)[:, 0]
    assert roc_auc_score(y, p_cal) == pytest.approx(roc_auc_score(y, p_plain), abs=1e-6)
    # the folded heads give exactly σ(a·mean logit + b)
    logit = np.log(p_plain / (1 - p_plain))
    np.testing.assert_allclose(p_cal, 1 / (1 + np.exp(-(a * logit + b))), rtol=1e-4, atol=1e-5)


def test_reports_name_the_ensemble() -> None:
    one = config_from_dict({"name": "t", "model": {"name": "smallresnet"}}).model
    four = config_from_dict({"name": "t", "model": {"name": "smallresnet", "ensemble": 4}}).model
    assert (one.label, four.label) == ("smallresnet", "smallresnet (ensemble of 4)")
