"""One Predictor shared by the CLI, the server and the explainer.

It is built from a checkpoint alone (``Predictor.from_checkpoint``), so the preprocessing,
label names, validation thresholds and TTA recipe are exactly those the model was trained
and evaluated with; it runs where training would (CUDA when present, fp32 on the CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dxkit.infer.checkpoint import LoadedModel, load_checkpoint
from dxkit.infer.device import ProgressCallback, runtime_for
from dxkit.infer.probabilities import predict_probabilities
from dxkit.infer.thresholds import decide
from dxkit.preprocess.input_profile import check_inputs


@dataclass
class Prediction:
    """Probabilities per finding and the decision at each finding's threshold."""

    source: str
    probabilities: dict[str, float]
    positive: dict[str, bool]
    input_warning: str | None = None  # preprocess.input_profile: unlike the training data

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "probabilities": self.probabilities,
            "positive": self.positive,
            "input_warning": self.input_warning,
        }


def dicom_modality(path: Path) -> str | None:
    """A DICOM file's Modality (header only), None for other formats."""
    from dxkit.io.headers import read_header

    return read_header(path).modality if path.suffix.lower() in (".dcm", ".dicom") else None


class PredictsFiles:
    """``predict_files`` for every predictor with ``predict_arrays`` (eager and ONNX)."""

    def predict_files(
        self,
        paths: Sequence[str | Path],
        batch_size: int = 32,
        progress: ProgressCallback | None = None,
    ) -> list[Prediction]:
        """Read each file (PNG/JPEG/DICOM/npy) and predict; errors name the file."""
        return predict_files_in_batches(self, paths, batch_size, progress)


def flag_inputs(
    predictions: list[Prediction],
    profile: dict[str, Any] | None,
    arrays: Sequence[np.ndarray],
    modalities: Sequence[str | None] | None,
) -> list[Prediction]:
    """Fill each prediction's ``input_warning`` from the input guard (``check_inputs``)."""
    for pred, warning in zip(predictions, check_inputs(profile, arrays, modalities), strict=True):
        pred.input_warning = warning
    return predictions


class Predictor(PredictsFiles):
    """Preprocess scans exactly as in training and run the model on them."""

    def __init__(self, loaded: LoadedModel, device: str | None = None) -> None:
        self.loaded = loaded
        self.runtime = runtime_for(loaded.meta.get("config"), device)
        self.device = self.runtime.device
        self.model = loaded.model.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> Predictor:
        return cls(load_checkpoint(path), device=device)

    @property
    def label_names(self) -> list[str]:
        return self.loaded.label_names

    @property
    def thresholds(self) -> list[float]:
        return self.loaded.thresholds

    @property
    def input_profile(self) -> dict[str, Any] | None:
        """The training inputs' profile (``preprocess.input_profile``; None in old files)."""
        return self.loaded.meta.get("input_profile")

    def describe(self) -> dict[str, Any]:
        """What the model expects and says: for ``/v1/models`` and ``--help`` texts."""
        meta = self.loaded.meta
        return {
            "model": meta["model"]["name"],
            "task": self.loaded.task,
            "findings": self.label_names,
            "thresholds": dict(zip(self.label_names, self.thresholds, strict=True)),
            "preprocessing": self.loaded.preprocessing.model_dump(mode="json"),
            "tta": self.loaded.tta,
            "dxkit_version": meta.get("dxkit_version"),
        }

    def prepare(self, array: np.ndarray, source: str = "scan") -> torch.Tensor:
        return self.loaded.preprocessing.apply(array, source)

    @torch.no_grad()
    def predict_arrays(
        self,
        arrays: Sequence[np.ndarray],
        sources: Sequence[str],
        modalities: Sequence[str | None] | None = None,
    ) -> list[Prediction]:
        batch = torch.stack([self.prepare(a, s) for a, s in zip(arrays, sources, strict=True)])
        loaded = self.loaded
        dims = loaded.preprocessing.spatial_dims
        with self.runtime.amp():
            probs = predict_probabilities(
                self.model, batch.to(self.device), loaded.task, dims, loaded.tta
            ).cpu()
        out = [self._prediction(src, p.numpy()) for src, p in zip(sources, probs, strict=True)]
        return flag_inputs(out, self.input_profile, arrays, modalities)

    def _prediction(self, source: str, probs: np.ndarray) -> Prediction:
        return prediction(source, probs, self.label_names, self.thresholds, self.loaded.task)


def prediction(
    source: str, probs: np.ndarray, names: list[str], thresholds: list[float], task: str
) -> Prediction:
    """Probabilities → ``Prediction`` with the one decision rule (``thresholds.decide``)."""
    values = {n: float(p) for n, p in zip(names, probs, strict=True)}
    return Prediction(source, values, decide(probs, names, thresholds, task))


def predict_files_in_batches(
    predictor: Any,
    paths: Sequence[str | Path],
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
) -> list[Prediction]:
    """Read files in batches of ``batch_size`` and run ``predictor.predict_arrays`` on each
    (eager and ONNX predictors alike); ``progress(done, total)`` after every batch."""
    from dxkit.io import read_scan

    out: list[Prediction] = []
    for start in range(0, len(paths), batch_size):
        chunk = [Path(p) for p in paths[start : start + batch_size]]
        arrays = [read_scan(p) for p in chunk]
        modalities = [dicom_modality(p) for p in chunk]
        out.extend(predictor.predict_arrays(arrays, [str(p) for p in chunk], modalities))
        if progress is not None:
            progress(len(out), len(paths))
    return out
