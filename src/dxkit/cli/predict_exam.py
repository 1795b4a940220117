"""``dxkit predict BUNDLE EXAM_DIR...``: the exams' probabilities as a table or a CSV (the
predictions come from ``dxkit.infer.exam_predict``)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from dxkit.infer.device import ProgressCallback
from dxkit.infer.exam_predict import ExamPredictor
from dxkit.infer.prediction_csv import write_exam_csv


def run_predict(
    ckpt: Path, inputs: list[Path], out: Path | None, progress: ProgressCallback | None = None
) -> str | Table:
    """``dxkit predict BUNDLE EXAM_DIR...``: a table of each exam's three probabilities
    (``+`` marks a call at the tuned threshold), or a CSV written to ``out``."""
    predictor = ExamPredictor.from_bundle(ckpt)
    predictions = []
    for path in inputs:
        predictions.append(predictor.predict_folder(path))
        if progress is not None:
            progress(len(predictions), len(inputs))
    names = predictor.findings
    if out is not None:
        write_exam_csv(out, predictions, names, predictor.planes)
        return f"wrote {len(predictions)} exam(s) to {out}"
    thresholds = ", ".join(f"{n} {t:.3f}" for n, t in predictor.thresholds.items())
    table = Table("exam", *names, caption=f"+ : at or above the tuned threshold ({thresholds})")
    for p in predictions:
        cells = [f"{p.probabilities[n]:.4f}{' +' if p.positive[n] else ''}" for n in names]
        table.add_row(p.source, *cells)
    return table
