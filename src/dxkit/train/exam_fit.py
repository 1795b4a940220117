"""Train an MRNet-style exam model: slice-stack networks per plane, then the plane fusion.

The MRNet ``train`` exams are split (stratified on the findings, seeded) into a *fit* part
and a *tuning* part (``exam.holdout_fraction``). Every network trains on fit exams and keeps
its best epoch by tuning-set AUC; the operating thresholds are chosen on the tuning exams'
fused probabilities. MRNet's ``valid`` split is never touched here: it plays the test set
(Stanford keeps the real test labels), scored by ``dxkit evaluate``.

Plane fusion, out of fold: the fit exams are cut into ``k = exam.fusion_folds`` stratified
folds; for each fold a full set of networks is trained on the other ``k - 1`` folds and
predicts the held-out fold, so every fit exam gets plane probabilities from networks that
never saw it. The logistic regression per finding is fitted on those out-of-fold
probabilities only; the networks saved in the bundle are then trained on all fit exams.
The price is ``k + 1`` trainings of every network instead of one. Fitting the regression on
the final networks' predictions for their own training exams would be cheaper but would
teach it to trust memorised, over-confident planes. By default (``exam.fusion_inputs``) the
regression sees each network's log-odds standardised on exams that network never trained on
(its held-out fold; the tuning exams for the shipped networks), which removes the offsets
that differ between fold networks and the fold-vs-final confidence gap (see
``dxkit.train.exam_module.FusionInputs``); ``probability`` is the paper's raw input.

Run folder: ``config.yaml``, ``metrics.csv`` (one row per trained network),
``networks/<fold|final>/<network>/`` (Lightning's metrics and checkpoints of each network)
and ``checkpoints/bundle.ckpt``.
"""

from __future__ import annotations

import csv
import json
import logging
import resource
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from torch.utils.data import DataLoader

from dxkit.data.exam import (
    Exam,
    ExamDataset,
    ExamList,
    IntensityNormalization,
    SeriesAugmentation,
    collate_exams,
)
from dxkit.errors import CheckpointError, ConfigError, DataSourceError
from dxkit.infer.contract import EXAM_NETWORK_FORMAT
from dxkit.infer.exam_model import FusionInputs, exam_plane_probabilities, network_probabilities
from dxkit.infer.thresholds import choose_threshold
from dxkit.models.fusion import PlaneFusion
from dxkit.models.slicestack import ExamNetworks, SliceStackNet
from dxkit.preprocess.input_profile import profile_inputs, volume_input
from dxkit.train.config import RunConfig
from dxkit.train.exam_module import (
    ExamModule,
    bundle_meta,
    fusion_training_inputs,
    save_exam_bundle,
)
from dxkit.train.fit import FitResult, make_trainer, new_run_dir
from dxkit.train.sources import class_weights

log = logging.getLogger(__name__)
BUNDLE = Path("checkpoints") / "bundle.ckpt"
T = TypeVar("T")


@dataclass(frozen=True)
class NetworkJob:
    """One network of the exam model: its key in ``ExamNetworks``, plane and findings."""

    key: str
    plane: str
    findings: tuple[str, ...]


def network_jobs(cfg: RunConfig) -> list[NetworkJob]:
    """The networks to train, keyed as ``ExamNetworks`` names them."""
    e = cfg.exam
    if e.variant == "multitask":
        return [NetworkJob(p, p, tuple(e.findings)) for p in e.planes]
    return [NetworkJob(f"{f}__{p}", p, (f,)) for p in e.planes for f in e.findings]


def load_exam_split(cfg: RunConfig, split: str) -> ExamList:
    """Exams of an MRNet split (``train`` or ``valid``) named by ``cfg.data``."""
    from dxkit.data.sources.mrnet import load_mrnet

    if cfg.data.source != "mrnet":
        raise ConfigError(
            f"data.source {cfg.data.source!r} has no exams; task: exam needs data.source: mrnet"
        )
    if cfg.data.path is None:
        raise ConfigError("data.path (the MRNet-v1.0 root folder) is required for source: mrnet")
    exams = load_mrnet(cfg.data.path, split, strict=cfg.exam.strict)  # logs its skips
    missing = sorted({f for f in cfg.exam.findings for e in exams[:1] if f not in e.labels})
    if missing:
        raise ConfigError(
            f"exam.findings {missing} are not MRNet labels; use abnormal/acl/meniscus"
        )
    return exams


def label_matrix(exams: Sequence[Exam], findings: Sequence[str]) -> np.ndarray:
    """Labels ``(N, F)`` of ``exams`` for ``findings`` (a clear error naming a missing one)."""
    if not exams:
        return np.zeros((0, len(findings)), dtype=np.float32)
    return np.stack([e.label_vector(findings) for e in exams])


def _stratified(split: Callable[[np.ndarray | None], T], labels: np.ndarray) -> T:
    """Run ``split`` stratified on the finding combination, else on the first finding, else
    unstratified: small sets often hold a combination too rare for both sides."""
    combos = (labels.astype(int) * (2 ** np.arange(labels.shape[1]))).sum(axis=1)
    for strata in (combos, labels[:, 0], None):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The least populated class")
                return split(strata)
        except ValueError as err:
            if strata is None:
                raise DataSourceError(f"cannot split the training exams: {err}") from None
            log.info("stratification dropped a level (%s)", err)
    raise DataSourceError("cannot split the training exams")  # unreachable


def split_tuning(
    exams: Sequence[Exam], findings: Sequence[str], fraction: float, seed: int
) -> tuple[list[Exam], list[Exam]]:
    """(fit, tuning) exams, stratified on the findings when the counts allow."""
    if len(exams) < 4:
        raise DataSourceError(f"{len(exams)} training exams are too few to hold out a tuning set")
    idx = np.arange(len(exams))
    fit_idx, tune_idx = _stratified(
        lambda strata: train_test_split(
            idx, test_size=fraction, stratify=strata, random_state=seed
        ),
        label_matrix(exams, findings),
    )
    return [exams[i] for i in sorted(fit_idx)], [exams[i] for i in sorted(tune_idx)]


def assign_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index ``(N,)`` of each fit exam, stratified on the findings when possible."""
    n = len(labels)
    if n < 2 * k:
        raise DataSourceError(
            f"{n} fit exams cannot be cut into exam.fusion_folds={k} folds of 2+; lower it"
        )

    def split(strata: np.ndarray | None) -> np.ndarray:
        kind = KFold if strata is None else StratifiedKFold
        folds = np.full(n, -1)
        for fold, (_, held) in enumerate(
            kind(k, shuffle=True, random_state=seed).split(folds, strata)
        ):
            folds[held] = fold
        return folds

    return _stratified(split, labels)


def exam_input_profile(
    exams: Sequence[Exam], planes: Sequence[str], seed: int = 0, max_exams: int = 64
) -> dict[str, Any]:
    """Per plane, the input guard's profile of up to ``max_exams`` training exams (seeded),
    each plane's volume *as read* (``Exam.volume``: MRNet's uint8 ``(slices, H, W)``, before
    normalisation and resizing), one single-channel scan per volume (``volume_input``)."""
    rng = np.random.default_rng(seed)
    picks = sorted(
        int(i) for i in rng.choice(len(exams), min(len(exams), max_exams), replace=False)
    )
    return {
        plane: profile_inputs((volume_input(exams[i].volume(plane)) for i in picks), None, seed)
        for plane in planes
    }


def _net_seed(seed: int, *parts: object) -> int:
    return (seed * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % (2**31)


def _new_network(cfg: RunConfig, job: NetworkJob) -> SliceStackNet:
    return SliceStackNet(
        cfg.model.name,
        in_chans=1,
        num_findings=len(job.findings),
        pooling=cfg.exam.pooling,
        pretrained=cfg.model.pretrained,
        **cfg.model.options,
    )


def train_network(
    cfg: RunConfig,
    job: NetworkJob,
    train_exams: list[Exam],
    tune_exams: list[Exam],
    normalization: IntensityNormalization,
    net_dir: Path,
    *,
    seed: int,
    progress: bool = True,
) -> tuple[SliceStackNet, dict[str, Any]]:
    """Train one network (or reuse it when ``net_dir`` says it finished: ``--resume``) and
    return it with its best-epoch weights and a summary row."""
    done = net_dir / "done.json"
    net_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, workers=True, verbose=False)
    net = _new_network(cfg, job)
    findings = list(cfg.exam.findings)
    label_index = [findings.index(f) for f in job.findings]
    y = label_matrix(train_exams, findings)[:, label_index]
    pos_weight = class_weights(y, "multilabel") if cfg.train.class_weights == "balanced" else None
    module = ExamModule(
        net,
        job.plane,
        label_index,
        cfg.train,
        pos_weight,
        {"kind": "exam-network", "format": EXAM_NETWORK_FORMAT},
    )
    if done.is_file():
        info = json.loads(done.read_text())
        _load_best(net, net_dir / info["checkpoint"])
        return net, info
    e, d = cfg.exam, cfg.data
    augment = SeriesAugmentation(e.max_rotation, e.max_shift, e.flip_p) if e.augment else None
    train_set = ExamDataset(
        train_exams, findings, [job.plane], normalization=normalization,
        augmentation=augment, size=cfg.preprocess.size, seed=seed,
    )  # fmt: skip
    tune_set = ExamDataset(
        tune_exams, findings, [job.plane], normalization=normalization, size=cfg.preprocess.size
    )
    loader_kw: dict[str, Any] = {"num_workers": d.num_workers, "collate_fn": collate_exams}
    train_loader = DataLoader(
        train_set, batch_size=d.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed), **loader_kw,
    )  # fmt: skip
    tune_loader = DataLoader(tune_set, batch_size=d.eval_batch_size or d.batch_size, **loader_kw)
    trainer = make_trainer(cfg, net_dir, progress=progress)
    last = net_dir / "checkpoints" / "last.ckpt"
    start = time.perf_counter()
    trainer.fit(module, train_loader, tune_loader, ckpt_path=str(last) if last.exists() else None)
    cb = trainer.checkpoint_callback
    ok = isinstance(cb, ModelCheckpoint)
    best = Path(cb.best_model_path) if ok and cb.best_model_path else last  # type: ignore[union-attr]
    score = cb.best_model_score if ok else None  # type: ignore[union-attr]
    _load_best(net, best)
    info = {
        "network": job.key,
        "plane": job.plane,
        "findings": list(job.findings),
        "n_train": len(train_exams),
        "train_exam_ids": [x.exam_id for x in train_exams],
        "epochs": trainer.current_epoch,
        # The checkpoint callback's score is whatever train.monitor names: file it as such.
        **_best_tune(cfg.train.monitor, score),
        "seconds": round(time.perf_counter() - start, 2),
        "checkpoint": str(best.resolve().relative_to(net_dir.resolve())),
    }
    done.write_text(json.dumps(info))
    return net, info


def _best_tune(monitor: str, score: torch.Tensor | None) -> dict[str, float | None]:
    """``best_tune_auc`` and ``best_tune_loss``: the monitored one set, the other None."""
    value = float(score) if score is not None and torch.isfinite(score) else None
    return {
        "best_tune_auc": value if monitor == "val_auc" else None,
        "best_tune_loss": value if monitor == "val_loss" else None,
    }


def _load_best(net: SliceStackNet, path: Path) -> None:
    from dxkit.infer.checkpoint import read_checkpoint

    state = read_checkpoint(path)["state_dict"]  # kind exam-network: weights for the bundle
    net.load_state_dict(
        {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    )
    net.eval()


def _fold_dir(run_dir: Path, fold: int | None, key: str) -> Path:
    return run_dir / "networks" / ("final" if fold is None else f"fold{fold}") / key


def _latest_exam_run(cfg: RunConfig) -> Path:
    runs = [p for p in cfg.output_dir.glob(f"{cfg.name}*") if (p / "networks").is_dir()]
    if not runs:
        raise CheckpointError(
            f"--resume: no exam run of {cfg.name!r} under {cfg.output_dir}; start without --resume"
        )
    return max(runs, key=lambda p: (p / "networks").stat().st_mtime)


def _aucs(y: np.ndarray, p: np.ndarray) -> list[float | None]:
    return [
        float(roc_auc_score(y[:, j], p[:, j])) if len(np.unique(y[:, j])) == 2 else None
        for j in range(y.shape[1])
    ]


def fit(cfg: RunConfig, resume: bool = False, progress: bool = True) -> FitResult:
    """Train the exam model of ``cfg`` (``task: exam``) and save its bundle."""
    start = time.perf_counter()
    if cfg.task != "exam":
        raise ConfigError(f"task {cfg.task!r}: dxkit.train.exam_fit trains task: exam configs")
    e = cfg.exam
    findings, planes = list(e.findings), [str(p) for p in e.planes]
    exams = list(load_exam_split(cfg, "train"))
    run_dir = _latest_exam_run(cfg) if resume else new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())

    fit_exams, tune_exams = split_tuning(exams, findings, e.holdout_fraction, cfg.seed)
    y_fit = label_matrix(fit_exams, findings)
    if cfg.preprocess.normalize == "dataset":
        norm = IntensityNormalization.fit(fit_exams, planes, seed=cfg.seed)
    else:
        norm = IntensityNormalization()
    folds = assign_folds(y_fit, e.fusion_folds, cfg.seed)
    jobs = network_jobs(cfg)
    size, bs = cfg.preprocess.size, cfg.data.eval_batch_size or cfg.data.batch_size
    rows: list[dict[str, Any]] = []

    # 1. Out-of-fold plane probabilities: fold networks never predict exams they trained on.
    oof = np.full((len(fit_exams), len(planes), len(findings)), np.nan)
    for fold in range(e.fusion_folds):
        train_part = [x for x, f in zip(fit_exams, folds, strict=True) if f != fold]
        held = np.flatnonzero(folds == fold)
        for job in jobs:
            net, info = train_network(
                cfg, job, train_part, tune_exams, norm, _fold_dir(run_dir, fold, job.key),
                seed=_net_seed(cfg.seed, fold, job.key), progress=progress,
            )  # fmt: skip
            probs = network_probabilities(
                net, [fit_exams[i] for i in held], job.plane, norm, size, batch_size=bs
            )
            for j, finding in enumerate(job.findings):
                oof[held, planes.index(job.plane), findings.index(finding)] = probs[:, j]
            rows.append({"fold": fold, **info})
    if not np.isfinite(oof).all():  # every fit exam is in exactly one held-out fold
        raise DataSourceError(
            "out-of-fold predictions are incomplete; the fold assignment is wrong"
        )
    fusion = PlaneFusion(planes, findings, C=e.fusion_c)
    fusion.fit(fusion_training_inputs(e.fusion_inputs, oof, folds), y_fit)

    # 2. The networks that ship: trained on all fit exams, best epoch on the tuning set.
    networks = ExamNetworks(
        cfg.model.name, planes, findings, variant=e.variant, pooling=e.pooling,
        **cfg.model.options,
    )  # fmt: skip
    for job in jobs:
        net, info = train_network(
            cfg, job, fit_exams, tune_exams, norm, _fold_dir(run_dir, None, job.key),
            seed=_net_seed(cfg.seed, "final", job.key), progress=progress,
        )  # fmt: skip
        networks.nets[job.key].load_state_dict(net.state_dict())
        rows.append({"fold": "final", **info})
    networks.eval()

    # 3. Operating points on the tuning exams' fused probabilities (never on MRNet valid).
    y_tune = label_matrix(tune_exams, findings)
    tune_planes = exam_plane_probabilities(networks, tune_exams, norm, size, batch_size=bs)
    inputs = FusionInputs.from_held_out(e.fusion_inputs, tune_planes)
    tune_fused = fusion.predict_proba(inputs(tune_planes))
    ev = cfg.evaluate
    thresholds = [
        choose_threshold(y_tune[:, j], tune_fused[:, j], ev.threshold, ev.target_sensitivity)
        for j in range(len(findings))
    ]
    tune_auc = _aucs(y_tune, tune_fused)
    plane_auc = {plane: _aucs(y_tune, tune_planes[:, i, :]) for i, plane in enumerate(planes)}
    _check_fusion(findings, tune_auc, plane_auc)
    meta = bundle_meta(
        cfg,
        normalization=norm,
        fusion=fusion,
        fusion_inputs=inputs,
        thresholds=thresholds,
        tuning={
            "exam_ids": [x.exam_id for x in tune_exams],
            "auc": tune_auc,
            "plane_auc": plane_auc,
            "fit_exam_ids": [x.exam_id for x in fit_exams],
        },
        oof={
            "exam_ids": [x.exam_id for x in fit_exams],
            "fold_of_exam": torch.from_numpy(folds.astype(np.int64)),
            "oof_plane_probs": torch.from_numpy(oof),
            "labels": torch.from_numpy(y_fit.astype(np.float32)),
        },
        networks={
            r["network"]: {k: v for k, v in r.items() if k != "train_exam_ids"}
            for r in rows
            if r["fold"] == "final"
        },
        input_profile=exam_input_profile(fit_exams, planes, seed=cfg.seed),  # the input guard
    )
    bundle = save_exam_bundle(run_dir / BUNDLE, meta, networks)
    _write_metrics(run_dir / "metrics.csv", rows)
    scored = [a for a in tune_auc if a is not None]
    log.info("exam model saved to %s (tuning AUCs %s)", bundle, tune_auc)
    return FitResult(
        run_dir=run_dir,
        best_checkpoint=bundle,
        last_checkpoint=bundle,
        best_score=float(np.mean(scored)) if scored else None,
        seconds=time.perf_counter() - start,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    )


def _check_fusion(
    findings: list[str], fused: list[float | None], planes: dict[str, list[float | None]]
) -> None:
    """Warn when the fused tuning AUC of a finding falls well below its best plane's: the
    fold networks were too weak (or too few exams) for the regression to learn from."""
    for j, finding in enumerate(findings):
        scored = [a[j] for a in planes.values()]
        best = max((a for a in scored if a is not None), default=None)
        auc = fused[j]
        if auc is not None and best is not None and auc < best - 0.05:
            log.warning(
                "%s: fused tuning AUC %.3f is below the best plane's %.3f; the out-of-fold "
                "networks may be too weak to fit the fusion on (more exams or epochs, fewer "
                "exam.fusion_folds)",
                finding, auc, best,
            )  # fmt: skip


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    cols = [
        "fold", "network", "plane", "findings", "n_train", "epochs",
        "best_tune_auc", "best_tune_loss", "seconds",
    ]  # fmt: skip
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, cols, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "findings": "+".join(r["findings"])})
