"""Evaluate a checkpoint the way a clinical study would, and write the run's report.

Thresholds are chosen on the validation split (Youden's J or a target sensitivity) and
written back into the checkpoint, so the Predictor and the server use the same operating
point that the report describes. Test-split numbers never influence any choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dxkit.data.source import LabelledSet, SourceData
from dxkit.errors import ConfigError
from dxkit.evaluate.metrics import (
    choose_threshold,
    evaluate_predictions,
    label_log_losses,
    medmnist_scores,
    rsna_weights,
    weighted_log_loss,
)
from dxkit.evaluate.operating_point import ThresholdMethod
from dxkit.evaluate.report import write_report
from dxkit.evaluate.selection import mark_split
from dxkit.infer.checkpoint import (
    LoadedModel,
    load_checkpoint,
    resolve_checkpoint,
    update_metadata,
)
from dxkit.infer.device import ProgressCallback
from dxkit.infer.prediction_csv import write_classifier_csv
from dxkit.infer.predictor import prediction
from dxkit.infer.probabilities import predict_set
from dxkit.train.config import config_from_dict
from dxkit.train.sources import load_source

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What ``dxkit evaluate`` prints and where the report went."""

    split: str
    scores: dict[str, float]
    thresholds: list[float]
    report_json: Path
    report_html: Path
    payload: dict[str, Any]


def _thresholds(
    y: np.ndarray, p: np.ndarray, method: ThresholdMethod, target: float
) -> list[float]:
    out = []
    for j in range(y.shape[1]):
        if len(np.unique(y[:, j])) < 2:
            out.append(0.5)
        else:
            out.append(float(choose_threshold(y[:, j], p[:, j], method=method, target=target)))
    return out


def served_tta(recipe: bool, asked: bool | None, ckpt: Path) -> bool:
    """The TTA to evaluate with when the thresholds were fitted during training (exam
    bundles, segmenters): the recorded recipe; asking for the other one is refused, since
    the report would then describe probabilities no predictor serves."""
    if asked is None or asked == recipe:
        return recipe
    raise ConfigError(
        f"{ckpt}: its thresholds were fitted on {'TTA' if recipe else 'plain'} probabilities "
        f"(inference.tta: {str(recipe).lower()}), which every predictor serves; evaluate "
        f"without --{'no-' if recipe else ''}tta"
    )


def workload_metrics(
    label_names: list[str], y: np.ndarray, probs: np.ndarray
) -> tuple[dict[str, Any], dict[str, float]]:
    """A reference workload's own metric: (report section, scores), empty for other data.

    RSNA hemorrhage (the six RSNA labels): the competition's weighted multi-label log loss,
    ``any`` weighted 2, beside each label's log loss.
    """
    from dxkit.data.sources.rsna import RSNA_LABELS

    if sorted(label_names) != sorted(RSNA_LABELS):
        return {}, {}
    weights = rsna_weights(label_names)
    value = weighted_log_loss(y, probs, weights)
    section = {
        "value": value,
        "weights": dict(zip(label_names, weights, strict=True)),
        "log loss per label": dict(zip(label_names, label_log_losses(y, probs), strict=True)),
    }
    return {"RSNA weighted log loss": section}, {"rsna_weighted_log_loss": value}


def evaluate_checkpoint(
    run_or_checkpoint: str | Path,
    split: str | None = None,
    tta: bool | None = None,
    out_dir: Path | None = None,
    source: SourceData | None = None,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Score a checkpoint on ``split`` (default: test if the data has one, else val; a
    split that took part in a choice is flagged in the report, see ``selection``)."""
    ckpt = resolve_checkpoint(run_or_checkpoint)
    loaded = load_checkpoint(ckpt)
    cfg = config_from_dict(loaded.meta["config"], source=f"{ckpt} (saved config)")
    source = source or load_source(cfg)
    split = split or ("test" if "test" in source.splits else "val")
    if split not in source.splits:
        raise ConfigError(f"split {split!r} not in data: choose one of {sorted(source.splits)}")
    use_tta = loaded.tta if tta is None else tta  # the recipe: recorded, else the config
    ev = cfg.evaluate

    val = source.splits["val"]
    val_probs = predict_set(loaded, val, tta=use_tta, progress=progress)
    thresholds = _thresholds(np.asarray(val.labels), val_probs, ev.threshold, ev.target_sensitivity)
    # The thresholds hold for these probabilities only: record how they were made (TTA or
    # not), so the Predictor, the server and the ONNX export serve the same ones.
    if loaded.task != "multiclass":
        update_metadata(
            ckpt, thresholds=thresholds, threshold_method=ev.threshold, inference={"tta": use_tta}
        )
    else:
        update_metadata(ckpt, inference={"tta": use_tta})

    target = source.splits[split]
    probs = val_probs if split == "val" else predict_set(loaded, target, use_tta, progress=progress)
    y = np.asarray(target.labels)
    payload = evaluate_predictions(
        y,
        probs,
        label_names=loaded.label_names,
        task=loaded.task,
        thresholds=thresholds if loaded.task != "multiclass" else None,
        groups=target.groups,
        n_boot=ev.bootstrap,
        seed=cfg.seed,
    )
    scores = medmnist_scores(y, probs, loaded.task)
    extra, workload_scores = workload_metrics(loaded.label_names, y, probs)
    scores.update(workload_scores)
    payload["split"] = split
    payload["tta"] = use_tta
    payload["checkpoint"] = ckpt.name
    payload["model"] = loaded.meta["model"]["name"]
    payload["dataset"] = loaded.meta.get("dataset", source.name)
    payload["source"] = source.extra.get("source", cfg.data.source)  # names the metrics
    payload["threshold_method"] = ev.threshold
    mark_split(payload, "classify", split)
    out_dir = out_dir or ckpt.parent.parent
    title = f"{cfg.name}: {payload['model']} on {payload['dataset']} ({split})"
    json_path, html_path = write_report(out_dir, payload, title=title, extra=extra)
    write_predictions(out_dir / "predictions.csv", loaded, target, probs, thresholds)
    return Evaluation(split, scores, thresholds, json_path, html_path, payload)


def scan_names(labelled: LabelledSet) -> list[str]:
    """Each scan's name in predictions.csv: its file path, else its id, else its index."""
    names = []
    for i, item in enumerate(labelled.items):
        if isinstance(item, Path):
            names.append(str(item))
        else:
            names.append(labelled.ids[i] if labelled.ids is not None else f"{i}")
    return names


def write_predictions(
    path: Path,
    loaded: LoadedModel,
    labelled: LabelledSet,
    probs: np.ndarray,
    thresholds: list[float],
) -> Path:
    """The scored split's probabilities and calls in ``dxkit predict --out``'s format."""
    rows = [
        prediction(name, p, loaded.label_names, thresholds, loaded.task)
        for name, p in zip(scan_names(labelled), probs, strict=True)
    ]
    return write_classifier_csv(path, rows, loaded.label_names)
