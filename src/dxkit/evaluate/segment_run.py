"""Evaluate a SIIM segmenter checkpoint and write the run's report.

The workload metric is the challenge's: per-image Dice with the empty rule, averaged, at the
original image resolution (the model-size probability map is upsampled, thresholded, and
emptied when the image-level mask decision is negative — exactly the masks ``dxkit predict``
writes), beside Dice on the positive images only. Image level, for each decision path the
checkpoint has (the mask's score, see ``dxkit.infer.segment_model``; the classifier head):
AUC with a bootstrap interval that resamples patients, and sensitivity/specificity at the
operating points chosen on validation during training; the path with the higher AUC on the
scored split "wins". The default split is ``test`` when the run held one out, else ``val``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dxkit.data.sources.siim import SiimData
from dxkit.errors import ConfigError
from dxkit.evaluate.metrics import evaluate_predictions
from dxkit.evaluate.report import write_report
from dxkit.evaluate.run import served_tta
from dxkit.evaluate.selection import mark_split
from dxkit.infer.checkpoint import resolve_checkpoint
from dxkit.infer.device import ProgressCallback
from dxkit.infer.prediction_csv import SegmentRow, write_segment_csv
from dxkit.infer.segment_decision import dice_per_image
from dxkit.infer.segment_model import (
    LABEL,
    SegmentModel,
    full_resolution_mask,
    load_segmenter,
    mask_scores,
    score_threshold,
)
from dxkit.infer.segment_predict import image_call
from dxkit.train.config import config_from_dict
from dxkit.train.segment_data import indices_of, load_siim_data, patient_groups

log = logging.getLogger(__name__)
PATHS = {"mask": "segmenter", "classifier": "classifier"}


@dataclass
class SegmentEvaluation:
    """What ``dxkit evaluate`` prints and where the report went."""

    split: str
    scores: dict[str, float]
    thresholds: dict[str, Any]
    report_json: Path
    report_html: Path
    payload: dict[str, Any]


@dataclass
class SplitOutputs:
    """Per image of the split: Dice (empty rule, original size), truth label, path scores."""

    dice: np.ndarray
    positive: np.ndarray
    scores: dict[str, np.ndarray]
    rows: list[SegmentRow]  # what predict writes for the same images (predictions.csv)


def score_split(
    model: SegmentModel,
    data: SiimData,
    indices: list[int],
    tta: bool,
    batch_size: int = 4,
    progress: ProgressCallback | None = None,
) -> SplitOutputs:
    """Predict the images at ``indices`` in batches; only per-image numbers are kept."""
    th = model.thresholds
    t, min_area = float(th["threshold"]), int(th["min_area"])
    dice, mask_score, cls_score, rows = [], [], [], []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        images = [data.image(i, model.scaling) for i in chunk]
        maps, cls = model.predict(images, tta=tta, batch_size=batch_size)
        scores = mask_scores(maps, min_area)
        for k, (prob, i) in enumerate(zip(maps, chunk, strict=True)):
            truth = data.mask(i)
            pred = full_resolution_mask(prob, truth.shape, t, min_area)
            dice.append(float(dice_per_image(pred[None], truth[None])[0]))
            c = float(cls[k]) if cls is not None else None
            probability, positive = image_call(float(scores[k]), c, th)
            source = str(data.image_paths[i])
            rows.append(SegmentRow(Path(source).stem, source, probability, positive,
                                   float(scores[k]), c, int(pred.sum())))  # fmt: skip
        mask_score.append(scores)
        if cls is not None:
            cls_score.append(cls)
        if progress is not None:
            progress(min(start + batch_size, len(indices)), len(indices))
    scores_by_path = {"mask": np.concatenate(mask_score)}
    if cls_score:
        scores_by_path["classifier"] = np.concatenate(cls_score)
    truth = np.asarray(data.has_pneumothorax[indices] > 0.5)
    return SplitOutputs(np.asarray(dice), truth, scores_by_path, rows)


def _path_summary(entry: dict[str, Any]) -> dict[str, Any]:
    table = entry["tables"].get("validation") or {}
    return {
        "AUC": entry["auc"],
        "AUC 95% CI (patients resampled)": entry["auc_ci"],
        "threshold (validation)": table.get("threshold"),
        "sensitivity": table.get("sensitivity"),
        "specificity": table.get("specificity"),
    }


def evaluate_checkpoint(
    run_or_checkpoint: str | Path,
    split: str | None = None,
    tta: bool | None = None,
    out_dir: Path | None = None,
    data: SiimData | None = None,
    progress: ProgressCallback | None = None,
) -> SegmentEvaluation:
    """Score a segmenter on ``split`` (default test, else val) and write report.json/.html."""
    ckpt = resolve_checkpoint(run_or_checkpoint)
    model = load_segmenter(ckpt)
    cfg = config_from_dict(model.meta["config"], source=f"{ckpt} (saved config)")
    splits: dict[str, list[str]] = model.meta["splits"]
    name = split or ("test" if splits.get("test") else "val")
    if name not in splits:
        raise ConfigError(f"split {name!r}: a segment run has splits {sorted(splits)}")
    if not splits[name]:
        raise ConfigError(
            f"split {name!r} of {ckpt} holds no images (data.test_fraction was 0?); "
            "evaluate --split val"
        )
    use_tta = served_tta(model.tta, tta, ckpt)
    data = data if data is not None else load_siim_data(cfg)
    indices = indices_of(data, splits[name], f"{ckpt} {name} split")
    batch = cfg.data.eval_batch_size or cfg.data.batch_size
    out = score_split(model, data, indices, use_tta, batch, progress)

    th = model.thresholds
    columns = ["mask"] + (["classifier"] if "classifier" in out.scores else [])
    y = np.repeat(out.positive.astype(np.float64)[:, None], len(columns), axis=1)
    p = np.stack([out.scores[c] for c in columns], axis=1)
    cuts = [score_threshold(float(th["threshold"]))] + (
        [float(th["classifier"])] if "classifier" in columns else []
    )
    ev = cfg.evaluate
    payload = evaluate_predictions(
        y,
        p,
        label_names=[f"{LABEL} ({c})" for c in columns],
        task="binary" if len(columns) == 1 else "multilabel",
        thresholds=cuts,
        groups=patient_groups([data.image_paths[i] for i in indices]),
        n_boot=ev.bootstrap,
        seed=cfg.seed,
    )
    m = model.meta["model"]
    head = " + classifier head" if len(columns) > 1 else ""
    payload.update(
        split=name,
        tta=use_tta,
        checkpoint=ckpt.name,
        model=f"{m['architecture']} / {m['encoder']}{head}",
        dataset="siim",
        input_size=model.size,
        decision=model.decision,
        thresholds_chosen_on=th.get("chosen_on", "validation"),
    )
    mark_split(payload, "segment", name)
    mean_dice = float(out.dice.mean())
    pos = out.positive
    positive_dice = float(out.dice[pos].mean()) if pos.any() else float("nan")
    paths = {c: _path_summary(e) for c, e in zip(columns, payload["labels"], strict=True)}
    aucs = {c: paths[c]["AUC"] for c in columns if paths[c]["AUC"] is not None}
    winner = max(aucs, key=lambda c: aucs[c]) if len(aucs) == len(columns) > 1 else None
    extra = {
        "SIIM Dice (per image, empty rule, at the original resolution)": {
            "mean Dice": mean_dice,
            "Dice on positive images": positive_dice,
            "images": len(indices),
            "positive images": int(pos.sum()),
            "empty images predicted empty": int(((out.dice == 1.0) & ~pos).sum()),
        },
        "Image-level decision: mask vs classifier": {
            **{f"{c} ({PATHS[c]})": paths[c] for c in columns},
            "wins on this split (higher AUC)": winner or "n/a (one path, or AUC undefined)",
            "used by predict (higher validation AUC)": th.get("preferred", "segmenter"),
        },
        "Operating points (chosen on validation during training)": {
            "mask probability threshold": th["threshold"],
            f"mask minimum area (pixels at {model.size} px)": th["min_area"],
            "classifier threshold": th.get("classifier"),
            "validation scores": th.get("validation", {}),
        },
    }
    out_dir = Path(out_dir) if out_dir is not None else ckpt.parent.parent
    title = f"{cfg.name}: pneumothorax segmenter on SIIM {name} ({len(indices)} images)"
    json_path, html_path = write_report(out_dir, payload, title=title, extra=extra)
    write_segment_csv(out_dir / "predictions.csv", out.rows)
    scores = {"mean_dice": mean_dice, "positive_dice": positive_dice}
    scores |= {f"auc_{c}": a for c, a in aucs.items()}
    scores = {k: v for k, v in scores.items() if v == v}  # drop NaN (e.g. no positive image)
    return SegmentEvaluation(name, scores, dict(th), json_path, html_path, payload)
