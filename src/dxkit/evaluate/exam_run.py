"""Evaluate an exam-model bundle like the MRNet paper's tables, and write the run's report.

Per finding: AUC with a 95% bootstrap interval that resamples exams, and sensitivity,
specificity and accuracy at threshold 0.5 and at the threshold chosen on the tuning set
(a stratified part of MRNet ``train`` held out during training, see ``dxkit.train.exam_fit``);
each plane network's AUC beside the fused one. MRNet's test labels are not public, so the
default split is ``valid``, which no choice made during training ever looked at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dxkit.data.exam import Exam
from dxkit.errors import ConfigError
from dxkit.evaluate.metrics import auc_with_ci, evaluate_predictions
from dxkit.evaluate.report import write_report
from dxkit.evaluate.run import Evaluation, served_tta
from dxkit.evaluate.selection import mark_split
from dxkit.infer.checkpoint import resolve_checkpoint
from dxkit.infer.device import ProgressCallback
from dxkit.infer.exam_model import ExamModel, load_exam_bundle
from dxkit.infer.exam_predict import exam_predictions
from dxkit.infer.prediction_csv import write_exam_csv
from dxkit.train.config import config_from_dict
from dxkit.train.exam_fit import label_matrix, load_exam_split

log = logging.getLogger(__name__)

# Bien et al. 2018, Table 2: the paper's model on Stanford's (private) MRNet test set.
PAPER_TEST_AUC = {"abnormal": 0.937, "acl": 0.965, "meniscus": 0.847}
SPLITS = {"valid": "valid", "test": "valid", "tune": "tune", "val": "tune", "train": "train"}


@dataclass
class ExamEvaluation(Evaluation):
    """What ``dxkit evaluate`` prints and where the report went, plus per-plane AUCs."""

    plane_aucs: dict[str, dict[str, float | None]]


def exams_for_split(model: ExamModel, split: str) -> list[Exam]:
    """``valid`` (MRNet's validation split, our test), ``tune`` (the held-out train exams the
    thresholds came from) or ``train`` (the exams the shipped networks were fitted on)."""
    cfg = config_from_dict(model.meta["config"], source="bundle config")
    if split == "valid":
        return list(load_exam_split(cfg, "valid"))
    wanted = model.meta["tuning"]["exam_ids" if split == "tune" else "fit_exam_ids"]
    by_id = {e.exam_id: e for e in load_exam_split(cfg, "train")}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise ConfigError(
            f"{split} exams {missing[:5]} of the bundle are not in {cfg.data.path}/train; "
            "evaluate with the data the model was trained on"
        )
    return [by_id[i] for i in wanted]


def _plane_table(
    y: np.ndarray, planes: np.ndarray, fused: np.ndarray, model: ExamModel, n_boot: int, seed: int
) -> tuple[dict[str, dict[str, float | None]], dict[str, Any]]:
    """AUC (and bootstrap CI over exams) of every plane network and of the fusion."""
    aucs: dict[str, dict[str, float | None]] = {}
    table: dict[str, Any] = {}
    for j, finding in enumerate(model.findings):
        aucs[finding], table[finding] = {}, {}
        columns = {p: planes[:, i, j] for i, p in enumerate(model.planes)} | {"fused": fused[:, j]}
        for name, p in columns.items():
            auc, lo, hi = auc_with_ci(y[:, j], p, n_boot=n_boot, seed=seed)
            aucs[finding][name] = None if np.isnan(auc) else auc
            table[finding][name] = {"AUC": auc, "95% CI": [lo, hi]}
    return aucs, table


def _paper_table(payload: dict[str, Any]) -> dict[str, Any]:
    """Per finding, the figures of the paper's Table 2 layout."""
    out: dict[str, Any] = {}
    for entry in payload["labels"]:
        row: dict[str, Any] = {"AUC": entry["auc"], "AUC 95% CI (exams resampled)": entry["auc_ci"]}
        for key, name in (("0.5", "at 0.5"), ("validation", "at tuned threshold")):
            t = entry["tables"].get(key)
            if t:
                row[f"threshold {name}"] = t["threshold"]
                for rate in ("sensitivity", "specificity", "accuracy"):
                    row[f"{rate} {name}"] = t[rate]
        out[entry["name"]] = row
    return out


def evaluate_checkpoint(
    run_or_checkpoint: str | Path,
    split: str | None = None,
    tta: bool | None = None,
    out_dir: Path | None = None,
    exams: list[Exam] | None = None,
    progress: ProgressCallback | None = None,
) -> ExamEvaluation:
    """Score an exam bundle on ``split`` (default ``valid``) and write report.json/.html."""
    ckpt = resolve_checkpoint(run_or_checkpoint)
    model = load_exam_bundle(ckpt)
    cfg = config_from_dict(model.meta["config"], source=f"{ckpt} (saved config)")
    name = split or "valid"
    if name not in SPLITS:
        raise ConfigError(
            f"split {name!r}: exam models are scored on 'valid' (MRNet's validation split, "
            "our test set; alias 'test'), 'tune' (alias 'val') or 'train'"
        )
    split = SPLITS[name]
    use_tta = served_tta(model.tta, tta, ckpt)
    exams = exams if exams is not None else exams_for_split(model, split)
    if not exams:
        raise ConfigError(f"split {split!r} holds no exams to evaluate")
    batch = cfg.data.eval_batch_size or cfg.data.batch_size
    planes, fused = model.predict(exams, tta=use_tta, batch_size=batch, progress=progress)
    y = label_matrix(exams, model.findings)
    ev = cfg.evaluate
    payload = evaluate_predictions(
        y,
        fused,
        label_names=model.findings,
        task="multilabel",
        thresholds=model.thresholds,
        groups=np.array([e.exam_id for e in exams]),  # one row per exam: resample exams
        n_boot=ev.bootstrap,
        seed=cfg.seed,
    )
    plane_aucs, plane_table = _plane_table(y, planes, fused, model, ev.bootstrap, cfg.seed)
    payload.update(
        split=split,
        tta=use_tta,
        checkpoint=ckpt.name,
        model=f"{model.meta['model']['backbone']} ({model.meta['model']['variant']})",
        dataset=model.meta.get("dataset", "mrnet"),
        threshold_method=model.meta.get("threshold_method", "youden"),
        thresholds_chosen_on=model.meta.get("thresholds_from", "unknown"),
    )
    mark_split(payload, "exam", split)
    fusion = model.meta["fusion"]
    coef, intercept = model.fusion.coef, model.fusion.intercept
    assert coef is not None and intercept is not None  # set by load_exam_bundle
    extra = {
        "MRNet paper-style table (fused exam probability)": _paper_table(payload),
        "Per-plane AUC beside the fused AUC (95% bootstrap CI over exams)": plane_table,
        "Plane fusion (logistic regression per finding)": {
            "fitted on": f"out-of-fold plane predictions of {len(fusion['exam_ids'])} training "
            f"exams ({fusion['folds']}-fold; each predicted by networks that never saw it)",
            "inputs": model.fusion_inputs.kind,
            **{
                f: dict(zip(model.planes, coef[j].tolist(), strict=True))
                | {"intercept": float(intercept[j])}
                for j, f in enumerate(model.findings)
            },
        },
        "Bien et al. 2018 test AUC (Stanford's private test set; not the same exams)": {
            f: PAPER_TEST_AUC[f] for f in model.findings if f in PAPER_TEST_AUC
        },
    }
    out_dir = Path(out_dir) if out_dir is not None else ckpt.parent.parent
    title = f"{cfg.name}: exam model on MRNet {split} ({len(exams)} exams)"
    json_path, html_path = write_report(out_dir, payload, title=title, extra=extra)
    rows = exam_predictions(model, exams, planes, fused)
    write_exam_csv(out_dir / "predictions.csv", rows, model.findings, model.planes)
    scores = {f"auc_{e['name']}": e["auc"] for e in payload["labels"] if e["auc"] is not None}
    if payload["overall"]["macro_auc"] is not None:
        scores["macro_auc"] = payload["overall"]["macro_auc"]
    return ExamEvaluation(
        split, scores, list(model.thresholds), json_path, html_path, payload, plane_aucs
    )
