"""``dxkit predict BUNDLE EXAM_DIR...``: the exams' probabilities as a table or a CSV (the
predictions come from ``dxkit.infer.exam_predict``)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from dxkit.infer.device import ProgressCallback
from dxkit.infer.exam_predict import ExamPrediction, ExamPredictor, predict_batch
from dxkit.infer.prediction_csv import write_exam_csv
from dxkit.io.discover import BadScan


def run_predict(
    ckpt: Path,
    inputs: list[Path],
    out: Path | None,
    exam_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[str | Table, list[BadScan], int]:
    """``dxkit predict BUNDLE EXAM_DIR...`` (or an MRNet split folder, all its exams or
    ``exam_id``): a table of each exam's three probabilities (``+`` marks a call at the
    tuned threshold), or a CSV written to ``out``; with the exams that could not be read and
    the number predicted."""
    predictor = ExamPredictor.from_bundle(ckpt)
    predictions, bad = predict_batch(predictor, inputs, exam_id, progress)
    if not predictions:
        return "", bad, 0
    return _render(predictor, predictions, out), bad, len(predictions)


def _render(
    predictor: ExamPredictor, predictions: list[ExamPrediction], out: Path | None
) -> str | Table:
    names = predictor.findings
    if out is not None:
        write_exam_csv(out, predictions, names, predictor.planes)
        return f"wrote {len(predictions)} exam(s) to {out}"
    thresholds = ", ".join(f"{n} {t:.3f}" for n, t in predictor.thresholds.items())
    table = Table("exam", *names, caption=f"+ : at or above the tuned threshold ({thresholds})")
    for p in predictions:
        cells = [f"{p.probabilities[n]:.3f}{' +' if p.positive[n] else ''}" for n in names]
        table.add_row(p.source, *cells)
    return table
