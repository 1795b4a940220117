"""``dxkit predict BUNDLE EXAM_DIR...``: the exams' probabilities as a table or a CSV (the
predictions come from ``dxkit.infer.exam_predict``)."""

from __future__ import annotations

import csv
from pathlib import Path

from rich.table import Table

from dxkit.infer.exam_predict import ExamPredictor


def run_predict(ckpt: Path, inputs: list[Path], out: Path | None) -> str | Table:
    """``dxkit predict BUNDLE EXAM_DIR...``: a table of each exam's three probabilities
    (``+`` marks a call at the tuned threshold), or a CSV written to ``out``."""
    predictor = ExamPredictor.from_bundle(ckpt)
    predictions = [predictor.predict_folder(path) for path in inputs]
    names = predictor.findings
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        plane_cols = [f"{p}_{f}" for p in predictor.planes for f in names]
        with out.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["exam", *names, *[f"{n}_positive" for n in names], *plane_cols])
            for p in predictions:
                writer.writerow(
                    [p.source, *[f"{p.probabilities[n]:.6f}" for n in names]]
                    + [int(p.positive[n]) for n in names]
                    + [f"{p.planes[pl][f]:.6f}" for pl in predictor.planes for f in names]
                )
        return f"wrote {len(predictions)} exam(s) to {out}"
    thresholds = ", ".join(f"{n} {t:.3f}" for n, t in predictor.thresholds.items())
    table = Table("exam", *names, caption=f"+ : at or above the tuned threshold ({thresholds})")
    for p in predictions:
        cells = [f"{p.probabilities[n]:.4f}{' +' if p.positive[n] else ''}" for n in names]
        table.add_row(p.source, *cells)
    return table
