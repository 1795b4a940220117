"""Train a classifier from a ``RunConfig`` into a run folder.

The run folder (``runs/<name>/``) receives the resolved ``config.yaml``, ``metrics.csv``
(Lightning's CSV logger), ``checkpoints/best.ckpt`` (best validation AUC) and
``checkpoints/last.ckpt`` (for ``--resume``), each written atomically.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader

from dxkit import __version__
from dxkit.data.augment import build_augment
from dxkit.data.dataset import ScanDataset, channel_stats
from dxkit.data.source import SourceData
from dxkit.errors import CheckpointError, ConfigError
from dxkit.infer.contract import ClassifierMetadata, ClassifierRecipe
from dxkit.infer.device import resolve_precision
from dxkit.models.registry import create_model
from dxkit.preprocess.spec import Preprocessing
from dxkit.train.callbacks import AtomicCheckpointIO, FreezeBody, ProgressiveResize
from dxkit.train.config import RunConfig
from dxkit.train.ema import WeightEMA
from dxkit.train.metrics_log import ResumableCSVLogger
from dxkit.train.module import ClassifierModule
from dxkit.train.sources import (
    build_preprocessing,
    class_weights,
    load_source,
    training_input_profile,
)

log = logging.getLogger(__name__)
RUN_DIR_ENV = "DXKIT_RUN_DIR"  # lets DDP worker processes find the run folder of rank 0

# Lightning warnings that do not apply to how dxkit uses it: the CSV logger's "previous
# log files will be deleted" (ResumableCSVLogger writes back the rows --resume keeps), and
# small data sets have fewer batches than the logging interval by design.
for _message in (
    "Experiment logs directory",
    "The number of training batches",
    ".*LeafSpec.*is deprecated",
    "The '(train|val)_dataloader' does not have many workers",
):
    warnings.filterwarnings("ignore", message=_message)


@dataclass
class Prepared:
    """Everything a training (or LR-finder) run needs, built from a config."""

    cfg: RunConfig
    source: SourceData
    preprocessing: Preprocessing
    module: ClassifierModule
    train_loader: DataLoader
    val_loader: DataLoader


@dataclass
class FitResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_score: float | None
    seconds: float
    peak_rss_mb: float
    is_main_process: bool = True
    epochs_run: int | None = None  # fewer than planned when early stopping or the time cap hit


def new_run_dir(cfg: RunConfig) -> Path:
    """``runs/<name>``, or ``runs/<name>-2``, ``-3``... when it already holds a run."""
    base = cfg.output_dir / cfg.name
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{cfg.name}-{n}")
    return candidate


def latest_run_dir(cfg: RunConfig) -> Path:
    """The most recent run folder of this config's name that has a last checkpoint."""
    runs = [
        p for p in cfg.output_dir.glob(f"{cfg.name}*") if (p / "checkpoints/last.ckpt").exists()
    ]
    if not runs:
        raise CheckpointError(
            f"--resume: no run of {cfg.name!r} with checkpoints/last.ckpt under {cfg.output_dir}; "
            "start it without --resume"
        )
    return max(runs, key=lambda p: (p / "checkpoints/last.ckpt").stat().st_mtime)


def model_meta(cfg: RunConfig, source: SourceData, pre: Preprocessing) -> dict[str, Any]:
    """The metadata saved in each checkpoint (the classify contract, weights_only-safe)."""
    return ClassifierMetadata(
        dxkit_version=__version__,
        config=cfg.model_dump(mode="json"),
        preprocessing=pre,
        label_names=list(source.label_names),
        task=source.task,
        dataset=source.name,
        model=ClassifierRecipe(
            name=cfg.model.name,
            in_chans=pre.in_chans,
            num_classes=source.num_outputs,
            spatial_dims=source.spatial_dims,
            options=dict(cfg.model.options),
        ),
    ).dump()


def prepare(cfg: RunConfig) -> Prepared:
    """Load the data, fix the preprocessing (with training-set statistics), build the model."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    source = load_source(cfg)
    if "train" not in source.splits or "val" not in source.splits:
        raise ConfigError(f"data source {source.name!r} has no train/val splits")
    pre = build_preprocessing(cfg, source)
    train_set = ScanDataset(source.splits["train"], pre, cache=cfg.data.cache)
    if cfg.preprocess.normalize == "dataset":
        mean, std = channel_stats(train_set, seed=cfg.seed)
        pre = pre.model_copy(update={"mean": mean, "std": std})
        train_set.preprocessing = pre
    strength = cfg.train.augment.strength
    train_set.augment = build_augment(
        source.spatial_dims, strength, flip=cfg.train.augment.flip, seed=cfg.seed
    )
    val_set = ScanDataset(source.splits["val"], pre, cache=cfg.data.cache)

    model = create_model(
        cfg.model.name,
        pre.in_chans,
        source.num_outputs,
        source.spatial_dims,
        pretrained=cfg.model.pretrained,
        ensemble=cfg.model.ensemble,
        **cfg.model.options,
    )
    meta = model_meta(cfg, source, pre)
    meta["input_profile"] = training_input_profile(source, seed=cfg.seed)  # the input guard
    # Save the resolved architecture (e.g. SmallResNet's defaults) so a later change of a
    # default can never load these weights into a different network.
    meta["model"]["options"].update(getattr(model, "arch", {}) or {})
    weight = None
    if cfg.train.class_weights == "balanced":
        weight = class_weights(source.splits["train"].labels, source.task)
    module = ClassifierModule(model, source.task, cfg.train, weight, meta)
    d = cfg.data
    gen = torch.Generator().manual_seed(cfg.seed)
    loader_kw: dict[str, Any] = {"num_workers": d.num_workers}
    if d.num_workers > 0:
        loader_kw["persistent_workers"] = True
    train_loader = DataLoader(
        train_set,
        batch_size=d.batch_size,
        shuffle=True,
        generator=gen,
        drop_last=False,
        **loader_kw,
    )
    val_loader = DataLoader(val_set, batch_size=d.eval_batch_size or d.batch_size * 2, **loader_kw)
    return Prepared(cfg, source, pre, module, train_loader, val_loader)


def _precision(cfg: RunConfig) -> str:
    return resolve_precision(cfg.train.precision, cfg.train.accelerator)


def make_trainer(
    cfg: RunConfig,
    run_dir: Path,
    progress: bool = True,
    checkpointing: bool = True,
    resume_from: str | Path | None = None,
    **overrides: Any,
) -> L.Trainer:
    """A Lightning Trainer with dxkit's callbacks, atomic checkpoints and CSV metrics
    (``resume_from``: the checkpoint a resumed run starts from; its epochs' rows are kept)."""
    t = cfg.train
    mode = "min" if t.monitor == "val_loss" else "max"
    callbacks: list[Any] = []
    if checkpointing:
        # Two callbacks: Lightning's ``save_last`` only refreshes last.ckpt when a top-k
        # checkpoint is written, but --resume needs the latest epoch whatever its score.
        folder = run_dir / "checkpoints"
        best = ModelCheckpoint(
            dirpath=folder,
            filename="best",
            monitor=t.monitor,
            mode=mode,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        last = ModelCheckpoint(
            dirpath=folder, filename="last", save_top_k=1, enable_version_counter=False
        )
        callbacks += [best, last]
    if t.freeze_epochs:
        callbacks.append(FreezeBody(t.freeze_epochs))
    if t.progressive_resize:
        callbacks.append(ProgressiveResize(t.progressive_resize))
    if t.ema_decay:
        callbacks.append(WeightEMA(t.ema_decay))
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(t.monitor, mode=mode, patience=t.early_stopping_patience))
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

        callbacks.append(RichProgressBar() if sys.stderr.isatty() else TQDMProgressBar(50))
    kwargs: dict[str, Any] = {
        "max_epochs": t.epochs,
        "accelerator": t.accelerator,
        "devices": t.devices,
        "strategy": t.strategy,
        "num_nodes": t.num_nodes,
        "sync_batchnorm": t.sync_batchnorm,
        "precision": _precision(cfg),
        "gradient_clip_val": t.grad_clip,
        "callbacks": callbacks,
        "logger": ResumableCSVLogger(run_dir, resume_from=resume_from),
        "plugins": [AtomicCheckpointIO()],
        "enable_progress_bar": progress,
        "enable_model_summary": False,
        "enable_checkpointing": checkpointing,
        "log_every_n_steps": 5,
        "num_sanity_val_steps": 0,
    }
    if t.max_minutes:
        kwargs["max_time"] = {"minutes": t.max_minutes}
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def _check_resumable(cfg: RunConfig, last: Path) -> None:
    """A one-cycle schedule is planned for a fixed number of steps: refuse to stretch it."""
    from dxkit.infer.checkpoint import read_checkpoint

    saved = read_checkpoint(last)["dxkit"].get("config", {}).get("train", {})
    if cfg.train.schedule == "onecycle" and saved.get("epochs") not in (None, cfg.train.epochs):
        raise ConfigError(
            f"{last}: its one-cycle schedule was planned for {saved['epochs']} epochs, not "
            f"{cfg.train.epochs}; resume with --set train.epochs={saved['epochs']}, or train "
            "with schedule: cosine to extend runs"
        )


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit(cfg: RunConfig, resume: bool = False, progress: bool = True) -> FitResult:
    """Train per ``cfg``; returns where the run folder and checkpoints are."""
    start = time.perf_counter()
    if os.environ.get(RUN_DIR_ENV):
        run_dir = Path(os.environ[RUN_DIR_ENV])
    elif resume:
        run_dir = latest_run_dir(cfg)
    else:
        run_dir = new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        prepared = prepare(cfg)
        if cfg.train.calibrate == "platt" and prepared.source.task == "multiclass":
            # Refuse before training rather than after it.
            raise ConfigError("train.calibrate: platt applies to binary and multi-label tasks")
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        last = run_dir / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if resume and last.exists() else None
        if ckpt_path:
            _check_resumable(cfg, last)
        trainer = make_trainer(cfg, run_dir, progress=progress, resume_from=ckpt_path)
        trainer.fit(
            prepared.module, prepared.train_loader, prepared.val_loader, ckpt_path=ckpt_path
        )
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    result = fit_result(trainer, run_dir, last, start)
    if cfg.train.calibrate == "platt" and result.is_main_process:
        from dxkit.train.calibrate import calibrate_checkpoint

        val = prepared.source.splits["val"]
        info = calibrate_checkpoint(result.best_checkpoint, val, tta=cfg.evaluate.tta)
        log.info("Platt scaling fitted on val into %s: %s", result.best_checkpoint, info)
    return result


def fit_result(trainer: L.Trainer, run_dir: Path, last: Path, start: float) -> FitResult:
    """What a finished ``trainer.fit`` left: the best checkpoint (else ``last``) and its score,
    wall time since ``start`` (``time.perf_counter``), peak memory and epochs run."""
    cb = trainer.checkpoint_callback
    if not isinstance(cb, ModelCheckpoint):  # typed as the Checkpoint base; dxkit's is one
        cb = None
    best = Path(cb.best_model_path) if cb and cb.best_model_path else last
    score = float(cb.best_model_score) if cb and cb.best_model_score is not None else None
    return FitResult(
        run_dir=run_dir,
        best_checkpoint=best,
        last_checkpoint=last,
        best_score=score,
        seconds=time.perf_counter() - start,
        peak_rss_mb=_peak_rss_mb(),
        is_main_process=trainer.is_global_zero,
        epochs_run=trainer.current_epoch,
    )
