"""The learning-rate range test, through Lightning's Tuner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")

from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure

from dxkit.errors import DxkitError
from dxkit.train.config import RunConfig
from dxkit.train.fit import make_trainer, prepare


@dataclass
class LrFindResult:
    suggestion: float
    plot: Path
    lrs: list[float]
    losses: list[float]


def find_lr(
    cfg: RunConfig,
    out_dir: Path | None = None,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_training: int = 100,
) -> LrFindResult:
    """Sweep learning rates exponentially, save ``lr_find.png`` and return the suggestion."""
    out_dir = Path(out_dir or cfg.output_dir / f"{cfg.name}-lr-find")
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(cfg)
    trainer = make_trainer(cfg, out_dir, progress=False, checkpointing=False, logger=False)
    finder = Tuner(trainer).lr_find(
        prepared.module,
        train_dataloaders=prepared.train_loader,
        val_dataloaders=prepared.val_loader,
        min_lr=min_lr,
        max_lr=max_lr,
        num_training=num_training,
        update_attr=False,
    )
    suggestion = None if finder is None else finder.suggestion()
    if finder is None or suggestion is None:
        raise DxkitError("the LR finder could not suggest a rate (too few batches?); add data")
    # Without an ``ax`` argument plot() draws on a new pyplot Figure (typed as optional).
    fig = cast(Figure, finder.plot(suggest=True))
    plot = out_dir / "lr_find.png"
    fig.savefig(plot, dpi=100)
    return LrFindResult(
        suggestion=float(suggestion),
        plot=plot,
        lrs=[float(v) for v in finder.results["lr"]],
        losses=[float(v) for v in finder.results["loss"]],
    )
