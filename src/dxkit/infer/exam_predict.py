"""Predict the findings of knee MRI exams with an exam-model bundle.

``ExamPredictor.from_bundle(path)`` rebuilds the plane networks, the plane fusion and the
intensity normalisation exactly as trained (``dxkit.infer.exam_model.load_exam_bundle``), so
the CLI (``dxkit predict BUNDLE EXAM_DIR``) and any server share one path from the exam's
volumes to its three probabilities. An exam folder holds ``axial.npy``, ``coronal.npy`` and
``sagittal.npy`` (uint8 ``(slices, H, W)``), or three DICOM series whose planes come from
ImageOrientationPatient (``dxkit.data.sources.mrnet.load_exam_folder``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dxkit.data.exam import Exam
from dxkit.data.sources.mrnet import load_exam_folder
from dxkit.errors import DataSourceError
from dxkit.infer.device import ProgressCallback
from dxkit.infer.exam_model import ExamModel, load_exam_bundle
from dxkit.infer.thresholds import decide
from dxkit.io.discover import READ_ERRORS, BadScan, collect, discover
from dxkit.preprocess.input_profile import check_planes

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
    input_warning: str | None = None  # preprocess.input_profile: a plane unlike training's

    def as_dict(self) -> dict[str, Any]:
        return {
            "exam": self.exam_id,
            "source": self.source,
            "probabilities": self.probabilities,
            "positive": self.positive,
            "planes": self.planes,
            "input_warning": self.input_warning,
        }


class ExamPredictor:
    """A trained exam model ready for single exams (CPU, eval mode, no gradients)."""

    def __init__(self, model: ExamModel) -> None:
        self.model = model

    @classmethod
    def from_bundle(cls, path: str | Path) -> ExamPredictor:
        """Load ``checkpoints/bundle.ckpt`` of an exam run (safely: ``weights_only=True``);
        a ``bundle.int8.ckpt`` (``dxkit export --int8``) runs its int8 graphs, an ``.onnx``
        export (``dxkit export``) its fp32 graphs."""
        if Path(path).suffix.lower() == ".onnx":
            from dxkit.infer.exam_onnx import load_exam_onnx

            return cls(load_exam_onnx(path))
        model = load_exam_bundle(path)
        if "quantization" in model.meta:
            from dxkit.infer.checkpoint import read_checkpoint
            from dxkit.infer.quantize_exam import with_int8_networks

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

    def predict_exams(
        self, exams: Sequence[Exam], source: str = "", progress: ProgressCallback | None = None
    ) -> list[ExamPrediction]:
        """Predictions for several exams (each exam's volumes read and checked on access),
        each with the input guard's warning per plane (``input_warning``)."""
        planes, fused = self.model.predict(list(exams), progress=progress)
        sources = [source] * len(exams) if source else None
        out = exam_predictions(self.model, exams, planes, fused, sources)
        for pred, exam in zip(out, exams, strict=True):
            volumes = {plane: exam.volume(plane) for plane in self.planes}
            pred.input_warning = check_planes(self.model.input_profile, volumes)
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


def exam_predictions(
    model: ExamModel,
    exams: Sequence[Exam],
    planes: np.ndarray,
    fused: np.ndarray,
    sources: Sequence[str] | None = None,
) -> list[ExamPrediction]:
    """``ExamModel.predict``'s arrays → one ``ExamPrediction`` per exam, called at the
    bundle's thresholds (``thresholds.decide``); ``source`` defaults to the exam's folder."""
    findings = model.findings
    out = []
    for i, exam in enumerate(exams):
        probs = {f: float(fused[i, j]) for j, f in enumerate(findings)}
        out.append(
            ExamPrediction(
                exam_id=exam.exam_id,
                source=sources[i] if sources else str(exam.meta.get("folder", exam.exam_id)),
                probabilities=probs,
                positive=decide(fused[i], findings, model.thresholds, "multilabel"),
                planes={
                    p: {f: float(planes[i, k, j]) for j, f in enumerate(findings)}
                    for k, p in enumerate(model.planes)
                },
            )
        )
    return out


def predict_batch(
    predictor: ExamPredictor,
    inputs: Sequence[Path],
    exam_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[list[ExamPrediction], list[BadScan]]:
    """Predictions of every exam found under ``inputs`` (an MRNet split folder: all its exams,
    or only ``exam_id``; else ``io.discover``: exam folders, DICOM studies) and the exams that
    could not be read, each with its reason; ``progress(done, total)`` after each exam."""
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
    for i, (item, exam) in enumerate(exams):  # volumes are read on access: a bad one fails here
        try:
            predictions += predictor.predict_exams([exam], source=item.source)
        except READ_ERRORS as err:
            bad.append(BadScan(item.source, str(err)))
        if progress is not None:
            progress(i + 1, len(exams))
    return predictions, bad
