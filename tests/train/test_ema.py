"""``train.ema_decay``: the weight EMA against a hand-written reference, and end to end:
the checkpoint selected on validation holds the averaged weights that were scored."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss
from torch import nn

from dxkit.errors import ConfigError
from dxkit.infer.checkpoint import load_checkpoint, read_checkpoint
from dxkit.infer.probabilities import predict_set
from dxkit.train.config import config_from_dict
from dxkit.train.ema import WeightEMA
from dxkit.train.fit import fit
from dxkit.train.sources import load_source

from .test_engine import metrics_rows, toy_config


def test_ema_matches_the_textbook_recursion() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    pl_module = SimpleNamespace(model=model)
    trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"))
    ema = WeightEMA(0.9)
    ema.on_fit_start(trainer, pl_module)  # type: ignore[arg-type]
    reference: torch.Tensor | None = None
    for _ in range(5):
        with torch.no_grad():
            model[0].weight.add_(torch.randn_like(model[0].weight))
        ema.on_train_batch_end(trainer, pl_module)  # type: ignore[arg-type]
        w = model[0].weight.detach().clone()
        # The first update copies the weights; later ones are ema ← 0.9·ema + 0.1·w.
        reference = w if reference is None else 0.9 * reference + 0.1 * w
    raw = model[0].weight.detach().clone()

    ema.on_validation_epoch_start(trainer, pl_module)  # type: ignore[arg-type]
    torch.testing.assert_close(model[0].weight, reference)  # validation sees the average
    ema.on_validation_epoch_end(trainer, pl_module)  # type: ignore[arg-type]
    torch.testing.assert_close(model[0].weight, raw)  # training resumes on the raw weights

    checkpoint = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    ema.on_save_checkpoint(trainer, pl_module, checkpoint)  # type: ignore[arg-type]
    torch.testing.assert_close(checkpoint["state_dict"]["model.0.weight"], reference)
    torch.testing.assert_close(ema.state_dict()["raw"]["0.weight"], raw)


def test_best_checkpoint_holds_the_scored_average(tmp_path: Path) -> None:
    # One epoch (5 steps): the average lags the raw weights, so the two networks differ.
    cfg = config_from_dict(toy_config(tmp_path, epochs=1, ema_decay=0.9))
    result = fit(cfg, progress=False)
    ckpt = read_checkpoint(result.best_checkpoint)
    (ema_state,) = [v for k, v in ckpt["callbacks"].items() if "WeightEMA" in k]
    saved, raw = ckpt["state_dict"]["model.head.weight"], ema_state["raw"]["head.weight"]
    assert not torch.allclose(saved, raw)
    torch.testing.assert_close(saved, ema_state["average"]["module.head.weight"])
    # Rescore the saved checkpoint independently (evaluation code, sklearn log loss): it
    # must be the network whose validation loss was logged, not that epoch's raw weights.
    (row,) = [r for r in metrics_rows(result.run_dir) if r.get("val_loss")]
    loaded = load_checkpoint(result.best_checkpoint)
    val = load_source(cfg).splits["val"]
    probs = predict_set(loaded, val, tta=False)[:, 0]
    expected = log_loss(np.asarray(val.labels)[:, 0], probs.astype(np.float64), labels=[0, 1])
    assert float(row["val_loss"]) == pytest.approx(expected, rel=1e-4)


def test_resume_with_ema_restores_raw_weights_and_average(tmp_path: Path) -> None:
    raw = toy_config(tmp_path, epochs=2, ema_decay=0.9, schedule="cosine")
    fit(config_from_dict(raw), progress=False)
    raw["train"]["epochs"] = 3
    result = fit(config_from_dict(raw), resume=True, progress=False)
    assert result.epochs_run == 3


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_ema_decay_out_of_range_is_rejected(tmp_path: Path, decay: float) -> None:
    with pytest.raises(ConfigError, match="ema_decay"):
        config_from_dict(toy_config(tmp_path, ema_decay=decay))


def test_restored_state_puts_raw_weights_back_and_continues_the_average() -> None:
    torch.manual_seed(0)
    trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"))
    first = SimpleNamespace(model=nn.Linear(3, 2))
    ema = WeightEMA(0.5)
    ema.on_fit_start(trainer, first)  # type: ignore[arg-type]
    ema.on_train_batch_end(trainer, first)  # type: ignore[arg-type]
    with torch.no_grad():
        first.model.weight.add_(1.0)
    ema.on_train_batch_end(trainer, first)  # type: ignore[arg-type]
    state = ema.state_dict()

    # As on --resume: Lightning has loaded the averaged weights into a fresh module.
    second = SimpleNamespace(model=nn.Linear(3, 2))
    second.model.load_state_dict(ema.average.module.state_dict())  # type: ignore[union-attr]
    resumed = WeightEMA(0.5)
    resumed.load_state_dict(state)
    resumed.on_fit_start(trainer, second)  # type: ignore[arg-type]
    torch.testing.assert_close(second.model.weight, first.model.weight)
    assert resumed.average is not None and int(resumed.average.n_averaged) == 2
    torch.testing.assert_close(
        resumed.average.module.weight,
        ema.average.module.weight,  # type: ignore[union-attr]
    )
