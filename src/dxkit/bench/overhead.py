"""``dxkit bench overhead``: the Lightning engine against a bare PyTorch loop.

Same model, same data, same batches, same optimiser and schedule, in one process run,
alternating so that machine noise hits both. Reports training images per second.
"""

from __future__ import annotations

import time
from collections.abc import Sized
from pathlib import Path
from typing import cast

import lightning as L
import torch

from dxkit.bench.results import write_section
from dxkit.train.config import RunConfig, load_config
from dxkit.train.fit import Prepared, make_trainer, prepare


def _n_train(prepared: Prepared) -> int:
    """Images in the training split (a ScanDataset, which is Sized; torch's Dataset is not)."""
    return len(cast(Sized, prepared.train_loader.dataset))


def _bare_epoch(cfg: RunConfig, prepared: Prepared) -> tuple[float, int]:
    """One epoch of the plain loop a user would write by hand."""
    module = prepared.module
    model = module.model.train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
    steps = len(prepared.train_loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.train.lr, total_steps=steps)
    n = 0
    start = time.perf_counter()
    for x, y in prepared.train_loader:
        opt.zero_grad(set_to_none=True)
        loss, _ = module.training_loss(x, y)  # the engine's objective (ensembles, mixup)
        loss.backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
        n += len(x)
    return time.perf_counter() - start, n


def _engine_epoch(cfg: RunConfig, prepared: Prepared, run_dir: Path) -> tuple[float, int]:
    trainer = make_trainer(
        cfg, run_dir, progress=False, checkpointing=False, logger=False,
        max_epochs=1, limit_val_batches=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(prepared.module, prepared.train_loader)
    return time.perf_counter() - start, _n_train(prepared)


def run(config: Path, data_root: Path, repeats: int = 3, results_path: Path | None = None) -> str:
    cfg = load_config(config, [f"data.path={data_root}", "train.epochs=1"])
    prepared = prepare(cfg)
    for x, _ in prepared.train_loader:  # warm the cache and the allocator once for both
        prepared.module.model(x)
        break
    list(prepared.train_loader)
    bare, engine = [], []
    run_dir = cfg.output_dir / f"{cfg.name}-overhead"
    for _ in range(repeats):
        L.seed_everything(cfg.seed, verbose=False)
        s, n = _bare_epoch(cfg, prepared)
        bare.append(n / s)
        L.seed_everything(cfg.seed, verbose=False)
        s, n = _engine_epoch(cfg, prepared, run_dir)
        engine.append(n / s)
    b, e = max(bare), max(engine)
    body = "\n".join(
        [
            f"Model `{cfg.model.label}`, data `{cfg.data.name}` train split "
            f"({_n_train(prepared)} images), batch {cfg.data.batch_size}, "
            f"one epoch each, {repeats} alternating repeats, best of each.",
            "",
            "| loop | images/s (best) | all repeats |",
            "|---|---|---|",
            f"| bare PyTorch loop | {b:.0f} | {', '.join(f'{v:.0f}' for v in bare)} |",
            f"| dxkit engine (Lightning) | {e:.0f} | {', '.join(f'{v:.0f}' for v in engine)} |",
            "",
            f"Ratio engine / bare: **{e / b:.2f}** (target ≥ 0.9).",
        ]
    )
    command = f"dxkit bench overhead --config {config} --data-root {data_root}"
    write_section("overhead", "Engine overhead vs a bare PyTorch loop", command, body, results_path)
    return body
