"""Issue 15, finding 2: a one-cycle schedule too short to warm up falls back to cosine
instead of ``ZeroDivisionError`` inside ``OneCycleLR`` (mrnet_fast at train.epochs=2)."""

from __future__ import annotations

import logging

import pytest
import torch

from dxkit.train import schedule
from dxkit.train.schedule import build_scheduler, onecycle_fits


def _opt() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)


def test_torch_itself_fails_on_four_steps_with_quarter_warmup() -> None:
    # The reference failure: 2 epochs × 2 batches, warmup_fraction 0.25.
    opt = _opt()
    with pytest.raises(ZeroDivisionError):
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4, pct_start=0.25)
        for _ in range(4):
            opt.step()
            sched.step()


@pytest.mark.parametrize("total", [1, 2, 3, 4])
def test_short_runs_fall_back_to_cosine_and_run(
    total: int, caplog: pytest.LogCaptureFixture
) -> None:
    opt = _opt()
    schedule._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="dxkit.train.schedule"):
        sched = build_scheduler(opt, "onecycle", float(total), 0.25, [0.1])
        build_scheduler(_opt(), "onecycle", float(total), 0.25, [0.1])  # said once only
    assert len(caplog.records) == 1
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert "using cosine annealing" in caplog.text and "needs at least 5" in caplog.text
    for _ in range(total):
        opt.step()
        sched.step()
    assert all(g["lr"] >= 0 for g in opt.param_groups)


def test_long_enough_runs_keep_one_cycle() -> None:
    assert not onecycle_fits(4, 0.25) and onecycle_fits(5, 0.25) and onecycle_fits(100, 0.25)
    opt = _opt()
    sched = build_scheduler(opt, "onecycle", 5.0, 0.25, [0.1])
    assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    for _ in range(5):
        opt.step()
        sched.step()
