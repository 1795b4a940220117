"""``dxkit predict BUNDLE EXAM_DIR...``: the exams' probabilities as a table or a CSV (the
predictions come from ``dxkit.infer.exam_predict``)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from dxkit.errors import InvalidScanError
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
    strict_inputs: bool = False,
) -> tuple[str | Table, list[BadScan], int]:
    """``dxkit predict BUNDLE EXAM_DIR...`` (or an MRNet split folder, all its exams or
    ``exam_id``): a table of each exam's three probabilities (``+`` marks a call at the
    tuned threshold), or a CSV written to ``out``; with the exams that could not be read and
    the number predicted. ``strict_inputs`` refuses (writing nothing) when an exam's plane is
    unlike the training volumes."""
    predictor = ExamPredictor.from_bundle(ckpt)
    predictions, bad = predict_batch(predictor, inputs, exam_id, progress)
    if not predictions:
        return "", bad, 0
    flagged = [p for p in predictions if p.input_warning]
    if strict_inputs and flagged:
        raise InvalidScanError(
            f"{flagged[0].source}: {flagged[0].input_warning} ({len(flagged)} of "
            f"{len(predictions)} exams); check the inputs, or drop --strict-inputs to predict "
            "with a warning"
        )
    return _render(predictor, predictions, out), bad, len(predictions)


def _render(
    predictor: ExamPredictor, predictions: list[ExamPrediction], out: Path | None
) -> str | Table:
    names = predictor.findings
    flagged = sum(1 for p in predictions if p.input_warning)
    if out is not None:
        write_exam_csv(out, predictions, names, predictor.planes, input_warning=True)
        unlike = (
            f"; warning: {flagged} exam(s) unlike the training data (input_warning)"
            if flagged
            else ""
        )
        return f"wrote {len(predictions)} exam(s) to {out}{unlike}"
    thresholds = ", ".join(f"{n} {t:.3f}" for n, t in predictor.thresholds.items())
    table = Table(
        "exam", *names, *(["input warning"] if flagged else []),
        caption=f"+ : at or above the tuned threshold ({thresholds})",
    )  # fmt: skip
    for p in predictions:
        cells = [f"{p.probabilities[n]:.3f}{' +' if p.positive[n] else ''}" for n in names]
        table.add_row(p.source, *cells, *([p.input_warning or ""] if flagged else []))
    return table
