"""Predict the findings of knee MRI exams with an exam-model bundle.

``ExamPredictor.from_bundle(path)`` rebuilds the plane networks, the plane fusion and the
intensity normalisation exactly as trained (``dxkit.train.exam_module.load_exam_bundle``), so
the CLI (``dxkit predict BUNDLE EXAM_DIR``) and any server share one path from the exam's
volumes to its three probabilities. An exam folder holds ``axial.npy``, ``coronal.npy`` and
``sagittal.npy`` (uint8 ``(slices, H, W)``), or three DICOM series whose planes come from
ImageOrientationPatient (``dxkit.data.sources.mrnet.load_exam_folder``).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from dxkit.data.exam import Exam
from dxkit.data.sources.mrnet import load_exam_folder
from dxkit.errors import DataSourceError
from dxkit.io.discover import READ_ERRORS, BadScan, collect, discover
from dxkit.train.exam_module import ExamModel, load_exam_bundle

log = logging.getLogger(__name__)


@dataclass
class ExamPrediction:
    """One exam's fused probability per finding, the calls at the bundle's thresholds, and
    each plane network's own probability (``planes[plane][finding]``)."""

    exam_id: str
    source: str
    probabilities: dict[str, float]
    positive: dict[str, bool]
    planes: dict[str, dict[str, float]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "exam": self.exam_id,
            "source": self.source,
            "probabilities": self.probabilities,
            "positive": self.positive,
            "planes": self.planes,
        }


class ExamPredictor:
    """A trained exam model ready for single exams (CPU, eval mode, no gradients)."""

    def __init__(self, model: ExamModel) -> None:
        self.model = model

    @classmethod
    def from_bundle(cls, path: str | Path) -> ExamPredictor:
        """Load ``checkpoints/bundle.ckpt`` of an exam run (safely: ``weights_only=True``);
        a ``bundle.int8.ckpt`` (``dxkit export --int8``) runs its int8 graphs."""
        model = load_exam_bundle(path)
        if "quantization" in model.meta:
            from dxkit.serve.quantize_exam import with_int8_networks
            from dxkit.train.checkpoint import read_checkpoint

            model = with_int8_networks(model, read_checkpoint(path))
        return cls(model)

    @property
    def findings(self) -> list[str]:
        return self.model.findings

    @property
    def planes(self) -> list[str]:
        return self.model.planes

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(zip(self.findings, self.model.thresholds, strict=True))

    def predict_exams(self, exams: Sequence[Exam], source: str = "") -> list[ExamPrediction]:
        """Predictions for several exams (each exam's volumes read and checked on access)."""
        planes, fused = self.model.predict(list(exams))
        out = []
        for i, exam in enumerate(exams):
            probs = {f: float(fused[i, j]) for j, f in enumerate(self.findings)}
            out.append(
                ExamPrediction(
                    exam_id=exam.exam_id,
                    source=source or str(exam.meta.get("folder", exam.exam_id)),
                    probabilities=probs,
                    positive={f: probs[f] >= t for f, t in self.thresholds.items()},
                    planes={
                        p: {f: float(planes[i, k, j]) for j, f in enumerate(self.findings)}
                        for k, p in enumerate(self.planes)
                    },
                )
            )
        return out

    def predict_exam(self, exam: Exam) -> dict[str, float]:
        """``{finding: probability}`` for one exam."""
        return self.predict_exams([exam])[0].probabilities

    def predict_folder(self, folder: str | Path) -> ExamPrediction:
        """One exam folder: three ``.npy`` files or three DICOM series."""
        folder = Path(folder)
        if folder.is_file():
            raise DataSourceError(
                f"{folder} is a file; pass the exam folder holding axial.npy, coronal.npy and "
                "sagittal.npy (or three DICOM series)"
            )
        return self.predict_exams([load_exam_folder(folder)], source=str(folder))[0]


def predict_batch(
    predictor: ExamPredictor, inputs: Sequence[Path], exam_id: str | None = None
) -> tuple[list[ExamPrediction], list[BadScan]]:
    """Predictions of every exam found under ``inputs`` (an MRNet split folder: all its exams,
    or only ``exam_id``; else ``io.discover``: exam folders, DICOM studies) and the exams that
    could not be read, each with its reason."""
    from dxkit.data.sources.mrnet import is_mrnet_split, split_exams

    predictions: list[ExamPrediction] = []
    others = []
    for path in inputs:
        if is_mrnet_split(path):
            predictions += predictor.predict_exams(split_exams(path, exam_id))
        else:
            others.append(path)
    items, bad = discover(others, "exam")
    exams, unread = collect(items, lambda item: load_exam_folder(item.paths[0]))
    bad += unread
    for item, exam in exams:  # volumes are read on access: a bad one fails here
        try:
            predictions += predictor.predict_exams([exam], source=item.source)
        except READ_ERRORS as err:
            bad.append(BadScan(item.source, str(err)))
    return predictions, bad


def run_predict(
    ckpt: Path, inputs: list[Path], out: Path | None, exam_id: str | None = None
) -> tuple[str | Table, list[BadScan], int]:
    """``dxkit predict BUNDLE EXAM_DIR...`` (or an MRNet split folder, all its exams or
    ``exam_id``): a table of each exam's three probabilities (``+`` marks a call at the
    tuned threshold), or a CSV written to ``out``; with the exams that could not be read and
    the number predicted."""
    predictor = ExamPredictor.from_bundle(ckpt)
    predictions, bad = predict_batch(predictor, inputs, exam_id)
    if not predictions:
        return "", bad, 0
    return _render(predictor, predictions, out), bad, len(predictions)


def _render(
    predictor: ExamPredictor, predictions: list[ExamPrediction], out: Path | None
) -> str | Table:
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
