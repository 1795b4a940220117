"""Train a SIIM pneumothorax segmenter (``task: segment``) into a run folder.

The run folder is the classifier's (``dxkit.train.fit``): ``config.yaml``, ``metrics.csv``,
``checkpoints/best.ckpt`` (best ``train.monitor``, by default the validation mean Dice with
the empty rule) and ``checkpoints/last.ckpt`` (``--resume``), written atomically. After
fitting, the best weights predict the validation images and the operating points are chosen
there — probability threshold and minimum area for the mask, a threshold for the classifier
head — and written into ``best.ckpt``, so evaluation and prediction need only that file.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from dxkit import __version__
from dxkit.data.sources.siim import SegmentationDataset, SiimData
from dxkit.errors import ConfigError, DataSourceError
from dxkit.infer.checkpoint import read_checkpoint, update_metadata
from dxkit.infer.contract import (
    InferenceRecipe,
    SegmenterMetadata,
    SegmenterRecipe,
    SegmentInput,
)
from dxkit.infer.segment_decision import choose_seg_thresholds
from dxkit.infer.segment_model import LABEL, mask_scores, segment_probabilities
from dxkit.infer.thresholds import choose_threshold
from dxkit.models.segment import create_segmenter
from dxkit.train.config import RunConfig
from dxkit.train.fit import (
    RUN_DIR_ENV,
    FitResult,
    _check_resumable,
    fit_result,
    latest_run_dir,
    make_trainer,
    new_run_dir,
)
from dxkit.train.segment_data import (
    ResizableSegmentationSet,
    indices_of,
    load_siim_data,
    split_siim,
    training_radiograph_profile,
)
from dxkit.train.segment_module import SegmentModule

log = logging.getLogger(__name__)
STRIDE = 32  # a U-Net's input side must be divisible by its encoder's total stride


def check_sizes(cfg: RunConfig) -> int:
    """The full input size; it and every progressive size must be multiples of 32."""
    size = cfg.preprocess.size
    if size is None:
        raise ConfigError("task: segment needs preprocess.size (e.g. 256, 512 or 1024)")
    sizes = [size] + [s for _, s in cfg.train.progressive_resize or []]
    bad = [s for s in sizes if s % STRIDE]
    if bad:
        raise ConfigError(
            f"segmenter sizes {bad} are not multiples of {STRIDE} (preprocess.size / "
            "train.progressive_resize); use e.g. 128, 256, 512"
        )
    return int(size)


def with_dice_monitor(cfg: RunConfig) -> RunConfig:
    """Monitor the validation Dice unless the config chose ``train.monitor`` itself."""
    if "monitor" in cfg.train.model_fields_set:
        return cfg
    train = cfg.train.model_copy(update={"monitor": "val_dice"})
    return cfg.model_copy(update={"train": train})


def segment_meta(
    cfg: RunConfig, splits: dict[str, list[str]], input_profile: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint's ``"dxkit"`` entry (the segment contract, weights_only-safe)."""
    s = cfg.segment
    return SegmenterMetadata(
        dxkit_version=__version__,
        config=cfg.model_dump(mode="json"),
        dataset="siim",
        label_names=[LABEL],
        preprocessing=SegmentInput(size=check_sizes(cfg), scaling=s.scaling, in_chans=1),
        model=SegmenterRecipe(
            architecture=s.architecture,
            encoder=s.encoder,
            in_chans=1,
            classes=1,
            classifier=s.decision in ("classifier", "both"),
        ),
        decision=s.decision,
        splits=splits,
        inference=InferenceRecipe(tta=cfg.evaluate.tta),
        input_profile=input_profile,
    ).dump()


@torch.no_grad()
def _validation_outputs(
    module: SegmentModule, loader: DataLoader, tta: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validation maps and head probabilities through the inference path
    (``segment_probabilities``, with the recipe's TTA): the numbers predict will serve."""
    module.eval()
    maps, truths, cls = [], [], []
    for x, mask in loader:
        prob, head = segment_probabilities(module.model, x, tta)
        maps.append(prob[:, 0].numpy())
        truths.append(mask[:, 0].numpy() > 0.5)
        if head is not None:
            cls.append(head[:, 0].numpy().astype(np.float64))
    return np.concatenate(maps), np.concatenate(truths), np.concatenate(cls) if cls else None


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def choose_operating_points(
    cfg: RunConfig, module: SegmentModule, loader: DataLoader, labels: np.ndarray
) -> dict[str, Any]:
    """Thresholds of both decision paths on the validation images, and which one is used."""
    maps, truths, cls = _validation_outputs(module, loader, cfg.evaluate.tta)
    seg = choose_seg_thresholds(maps, truths)
    out: dict[str, Any] = {
        "threshold": seg.threshold,
        "min_area": seg.min_area,
        "min_area_at_size": cfg.preprocess.size,
        "classifier": None,
        "chosen_on": f"validation split ({len(labels)} images)",
        "validation": {
            "mean_dice": seg.mean_dice,
            "positive_dice": seg.positive_dice,
            "mask_sensitivity": seg.sensitivity,
            "mask_specificity": seg.specificity,
            "auc_mask": _auc(labels, mask_scores(maps, seg.min_area)),
        },
    }
    if cls is not None:
        ev = cfg.evaluate
        out["classifier"] = float(
            choose_threshold(labels, cls, method=ev.threshold, target=ev.target_sensitivity)
        )
        out["validation"]["auc_classifier"] = _auc(labels, cls)
    decision = cfg.segment.decision
    if decision == "both":  # the path with the higher validation AUC decides at predict time
        a_mask, a_cls = out["validation"]["auc_mask"], out["validation"].get("auc_classifier")
        better_cls = a_cls is not None and (a_mask is None or a_cls > a_mask)
        decision = "classifier" if better_cls else "segmenter"
    out["preferred"] = decision
    return out


def _loaders(
    cfg: RunConfig, data: SiimData, splits: dict[str, list[str]], size: int
) -> tuple[DataLoader, DataLoader, np.ndarray]:
    s, d = cfg.segment, cfg.data
    train_idx = indices_of(data, splits["train"], "train split")
    val_idx = indices_of(data, splits["val"], "val split")
    train_set = ResizableSegmentationSet(
        data, train_idx, size, augment=s.augment, seed=cfg.seed, cache=s.cache, scaling=s.scaling
    )
    val_set = SegmentationDataset(
        data, val_idx, size=size, augment=False, cache=s.cache, scaling=s.scaling
    )
    # Workers are re-created each epoch (not persistent) so they see the new size and epoch.
    kw: dict[str, Any] = {"num_workers": d.num_workers}
    train_loader = DataLoader(
        train_set,
        batch_size=d.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        **kw,
    )
    val_loader = DataLoader(val_set, batch_size=d.eval_batch_size or d.batch_size, **kw)
    return train_loader, val_loader, data.has_pneumothorax[val_idx].astype(np.float64)


def _run_dir(cfg: RunConfig, resume: bool) -> Path:
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    return latest_run_dir(cfg) if resume else new_run_dir(cfg)


def fit(cfg: RunConfig, resume: bool = False, progress: bool = True) -> FitResult:
    """Train the segmenter of ``cfg`` (``task: segment``, ``data.source: siim``)."""
    start = time.perf_counter()
    if cfg.task != "segment":
        raise ConfigError(f"task {cfg.task!r}: dxkit.train.segment_fit trains task: segment")
    size = check_sizes(cfg)
    cfg = with_dice_monitor(cfg)
    data = load_siim_data(cfg)
    splits = split_siim(cfg, data)
    if not splits["val"] or not splits["train"]:
        raise DataSourceError(
            f"{len(data)} images give {len(splits['train'])} train / {len(splits['val'])} "
            "validation images; both must be non-empty (add images or change data.val_fraction)"
        )
    run_dir = _run_dir(cfg, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        s = cfg.segment
        model = create_segmenter(
            s.architecture,
            s.encoder,
            in_chans=1,
            num_classes=1,
            pretrained=cfg.model.pretrained,
            classifier=s.decision in ("classifier", "both"),
            foreground_prior=s.foreground_prior,
        )
        # the input guard: what predict checks each radiograph against
        profile = training_radiograph_profile(data, splits["train"], s.scaling, seed=cfg.seed)
        module = SegmentModule(model, cfg.train, s, segment_meta(cfg, splits, profile))
        train_loader, val_loader, val_labels = _loaders(cfg, data, splits, size)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        last = run_dir / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if resume and last.exists() else None
        if ckpt_path:
            _check_resumable(cfg, last)
        trainer = make_trainer(cfg, run_dir, progress=progress, resume_from=ckpt_path)
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    result = fit_result(trainer, run_dir, last, start)
    best = result.best_checkpoint
    if trainer.is_global_zero:
        state = read_checkpoint(best)["state_dict"]
        module.load_state_dict(state)
        points = choose_operating_points(cfg, module, val_loader, val_labels)
        update_metadata(best, thresholds=points)
        log.info("validation operating points: %s", points)
    return result
