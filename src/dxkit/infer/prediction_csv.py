"""The ``predictions.csv`` formats, one per model kind, written by ``dxkit predict --out`` and
by ``dxkit evaluate`` (in the run folder) alike, so the two can be diffed row by row.

Classifiers: ``file`` (the scan's path, or its id for in-memory data), one probability
column per finding, then ``<finding>_positive`` (0/1). Exam bundles: ``exam`` (the exam
folder or id), the fused probabilities, the calls, then ``<plane>_<finding>``. Segmenters:
``ImageId, file, probability, positive, mask_score, classifier, area``. ``dxkit predict``
adds ``input_warning`` last to every kind's rows (the input guard), a column ``evaluate``
does not write.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIGITS = 6  # probabilities printed with 6 decimals: the same text from every writer


@dataclass(frozen=True)
class SegmentRow:
    """One radiograph's row of a segmenter's predictions.csv (no mask kept in memory)."""

    image_id: str
    source: str
    probability: float
    positive: bool
    mask_score: float
    classifier: float | None
    area: int


def _number(value: float) -> str:
    return f"{value:.{DIGITS}f}"


def _write(path: Path, header: list[str], rows: Iterable[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)
    return path


def write_classifier_csv(
    path: Path, predictions: Sequence[Any], names: Sequence[str], input_warning: bool = False
) -> Path:
    """``Prediction`` rows (``source``, ``probabilities``, ``positive``) → ``path``;
    ``input_warning`` adds that column last (``dxkit predict``: scans unlike the training
    data), after the columns ``dxkit evaluate`` writes too."""
    extra = ["input_warning"] if input_warning else []
    return _write(
        path,
        ["file", *names, *[f"{n}_positive" for n in names], *extra],
        (
            [p.source, *[_number(p.probabilities[n]) for n in names]]
            + [int(p.positive[n]) for n in names]
            + ([getattr(p, "input_warning", None) or ""] if input_warning else [])
            for p in predictions
        ),
    )


def write_exam_csv(
    path: Path,
    predictions: Sequence[Any],
    names: Sequence[str],
    planes: Sequence[str],
    input_warning: bool = False,
) -> Path:
    """``ExamPrediction`` rows → ``path`` (with each plane network's probability);
    ``input_warning`` adds that column last (``dxkit predict``)."""
    return _write(
        path,
        ["exam", *names, *[f"{n}_positive" for n in names]]
        + [f"{p}_{f}" for p in planes for f in names]
        + (["input_warning"] if input_warning else []),
        (
            [p.source, *[_number(p.probabilities[n]) for n in names]]
            + [int(p.positive[n]) for n in names]
            + [_number(p.planes[pl][f]) for pl in planes for f in names]
            + ([getattr(p, "input_warning", None) or ""] if input_warning else [])
            for p in predictions
        ),
    )


def write_segment_csv(path: Path, predictions: Sequence[Any], input_warning: bool = False) -> Path:
    """``SegmentPrediction`` or ``SegmentRow`` rows → ``path``; ``input_warning`` adds that
    column last (``dxkit predict``), as for classifiers."""
    extra = ["input_warning"] if input_warning else []
    return _write(
        path,
        ["ImageId", "file", "probability", "positive", "mask_score", "classifier", "area", *extra],
        (
            [p.image_id, p.source, _number(p.probability), int(p.positive),
             _number(p.mask_score), "" if p.classifier is None else _number(p.classifier), p.area]
            + ([getattr(p, "input_warning", None) or ""] if input_warning else [])
            for p in predictions
        ),
    )  # fmt: skip
