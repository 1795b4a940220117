"""One Predictor shared by the CLI, the server and the explainer.

It is built from a checkpoint alone (``Predictor.from_checkpoint``), so the preprocessing,
label names and validation thresholds are exactly those the model was trained and
evaluated with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dxkit.infer.checkpoint import LoadedModel, load_checkpoint
from dxkit.infer.probabilities import predict_probabilities


@dataclass
class Prediction:
    """Probabilities per finding and the decision at each finding's threshold."""

    source: str
    probabilities: dict[str, float]
    positive: dict[str, bool]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "probabilities": self.probabilities,
            "positive": self.positive,
        }


class Predictor:
    """Preprocess scans exactly as in training and run the model on them."""

    def __init__(self, loaded: LoadedModel, device: str | None = None) -> None:
        self.loaded = loaded
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
        self, arrays: Sequence[np.ndarray], sources: Sequence[str]
    ) -> list[Prediction]:
        batch = torch.stack([self.prepare(a, s) for a, s in zip(arrays, sources, strict=True)])
        loaded = self.loaded
        dims = loaded.preprocessing.spatial_dims
        probs = predict_probabilities(
            self.model, batch.to(self.device), loaded.task, dims, loaded.tta
        ).cpu()
        return [self._prediction(src, p.numpy()) for src, p in zip(sources, probs, strict=True)]

    def predict_files(self, paths: Sequence[str | Path], batch_size: int = 32) -> list[Prediction]:
        """Read each file (PNG/JPEG/DICOM/npy) and predict; errors name the file."""
        from dxkit.io import read_scan

        out: list[Prediction] = []
        for start in range(0, len(paths), batch_size):
            chunk = [Path(p) for p in paths[start : start + batch_size]]
            arrays = [read_scan(p) for p in chunk]
            out.extend(self.predict_arrays(arrays, [str(p) for p in chunk]))
        return out

    def _prediction(self, source: str, probs: np.ndarray) -> Prediction:
        names = self.label_names
        values = {n: float(p) for n, p in zip(names, probs, strict=True)}
        if self.loaded.task == "multiclass":
            top = names[int(np.argmax(probs))]
            positive = {n: n == top for n in names}
        else:
            positive = {n: values[n] >= t for n, t in zip(names, self.thresholds, strict=True)}
        return Prediction(source, values, positive)
