"""Learning-rate schedules checked against the steps a run really has.

``OneCycleLR`` divides by ``warmup_fraction × total_steps − 1``: with 4 steps and a 0.25
warm-up (``configs/mrnet_fast.yaml`` at ``train.epochs=2`` on a small split) that is zero
and PyTorch raises ``ZeroDivisionError`` mid-run. A one-cycle warm-up shorter than two
steps is no warm-up at all, so such runs fall back to cosine annealing, and say so.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

log = logging.getLogger(__name__)
_WARNED: set[tuple[int, float]] = set()


def onecycle_fits(total_steps: int, warmup_fraction: float) -> bool:
    """True when a one-cycle schedule over ``total_steps`` has more than one warm-up step
    and at least one decay step (OneCycleLR's phase lengths are then positive)."""
    warmup = warmup_fraction * total_steps
    return warmup > 1 and total_steps - warmup >= 1


def build_scheduler(
    opt: torch.optim.Optimizer,
    schedule: str,
    total_steps: float,
    warmup_fraction: float,
    max_lrs: list[float],
) -> Any:
    """The step-wise scheduler for ``schedule`` (``onecycle`` or ``cosine``), never one
    that cannot run for ``total_steps``."""
    total = max(int(total_steps), 1) if math.isfinite(total_steps) else 1
    if schedule == "onecycle" and not onecycle_fits(total, warmup_fraction):
        need = math.floor(1 / warmup_fraction) + 1
        # Exam runs train one network per plane and fold: say it once per step count.
        level = logging.WARNING if (total, warmup_fraction) not in _WARNED else logging.DEBUG
        _WARNED.add((total, warmup_fraction))
        log.log(
            level,
            "one-cycle schedule needs at least %d optimiser steps with warmup_fraction %g, this "
            "run has %d (epochs × batches per epoch); using cosine annealing instead (more "
            "epochs, a smaller batch_size or train.schedule: cosine silence this)",
            need,
            warmup_fraction,
            total,
        )
        schedule = "cosine"
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=max_lrs, total_steps=total, pct_start=warmup_fraction
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
