"""Segmenters (SIIM pneumothorax) behind the API: one radiograph in; the image-level
probability and call, and the mask, out.

Everything is computed by ``dxkit.infer.segment_predict.predict_images`` — the function
``dxkit predict`` writes ``predictions.csv`` and the masks with — on a ``SegmentModel``
(``.ckpt``) or an ``OnnxSegmentModel`` (``.onnx``). The mask travels in the JSON as the
SIIM run-length code (``preprocess.rle.encode_rle``: relative starts, column-major, ``-1``
when empty, as in ``submission.csv``) with its height and width.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from dxkit.serve.served import Explanation, Findings
from dxkit.serve.uploads import RequestError, Scan


class SegmentServedModel:
    """A segmenter checkpoint or its ONNX export, served."""

    kind = "segment"
    task = "binary"
    can_explain = False

    def __init__(self, name: str, path: Path, model: Any, slots: Any = None) -> None:
        from dxkit.infer.segment_model import LABEL

        self.name = name
        self.path = path
        self.model = model
        self.backend = "onnx" if path.suffix.lower() == ".onnx" else "pytorch"
        self.label = LABEL
        self.lock = threading.Lock()  # one network, one forward at a time (eval mode)
        self.slots = slots if slots is not None else threading.BoundedSemaphore(1)

    @property
    def radiograph_scaling(self) -> str:
        """How an uploaded DICOM becomes pixels in [0, 1] (the training scaling)."""
        return str(self.model.scaling)

    @property
    def label_names(self) -> list[str]:
        return [self.label]

    @property
    def thresholds(self) -> list[float]:
        """The threshold of the path that makes the call (``operating_point``)."""
        from dxkit.infer.segment_predict import operating_point

        return [operating_point(self.model.thresholds, self.model.has_classifier)[1]]

    def describe(self) -> dict[str, Any]:
        from dxkit.infer.segment_predict import operating_point

        meta = self.model.meta
        th = self.model.thresholds
        path, threshold = operating_point(th, self.model.has_classifier)
        rule = (
            "probability >= threshold"
            if path == "classifier"
            else "mask score (the min_area-th largest pixel probability) > threshold"
        )
        return {
            "name": self.name,
            "file": self.path.name,
            "kind": self.kind,
            "backend": self.backend,
            "model": meta.get("model", {}).get("architecture"),
            "task": self.task,
            "findings": self.label_names,
            "thresholds": {self.label: threshold},
            "decision": {
                "path": path,
                "rule": rule,
                "pixel_threshold": float(th["threshold"]),
                "min_area": int(th["min_area"]),
            },
            "expected_input": "one radiograph: a CR/DX DICOM, PNG or JPEG (any size)",
            "accepts": ["png", "jpeg", "dicom"],
            "spatial_dims": 2,
            "hounsfield": False,
            "preprocessing": {"size": self.model.size, "scaling": self.model.scaling},
            "explain": False,
            "explain_methods": [],
            "tta": bool(self.model.tta),
            "dxkit_version": meta.get("dxkit_version") or meta.get("trained_with"),
        }

    def pixels(self, scan: Scan) -> np.ndarray:
        """The radiograph ``(H, W)`` in [0, 1], as ``segment_predict.read_image`` reads it."""
        from dxkit.infer.segment_predict import raster_pixels

        if scan.kind == "radiograph":
            return scan.planes["scan"][0]
        if scan.kind == "image":
            return raster_pixels(scan.planes["scan"])
        raise RequestError(
            f"model {self.name!r} segments one radiograph; upload one DICOM, PNG or JPEG "
            f"(not a {scan.kind})",
            422,
        )

    def predict(self, scan: Scan) -> Findings:
        from dxkit.infer.segment_predict import predict_images
        from dxkit.preprocess.rle import encode_rle

        pixels = self.pixels(scan)
        with self.lock, self.slots:
            p = predict_images(self.model, [pixels], ["upload"], modalities=[scan.modality])[0]
        height, width = p.mask.shape
        segmentation = {
            "label": self.label,
            "probability": p.probability,
            "mask_score": p.mask_score,
            "classifier": p.classifier,
            "positive": bool(p.positive),
            "mask": {
                "encoding": "rle-relative-column-major",  # SIIM submission.csv; -1 if empty
                "rle": encode_rle(p.mask),
                "height": int(height),
                "width": int(width),
                "area": p.area,
            },
        }
        return Findings(
            np.array([p.probability]), None, [None], positive=[bool(p.positive)],
            segmentation=segmentation, input_warning=p.input_warning,
        )  # fmt: skip

    def decisions(self, probs: np.ndarray) -> list[bool]:
        raise RequestError(f"model {self.name!r}: a segmenter's call comes with its prediction")

    def check_explain(self, method: str) -> None:
        raise RequestError(
            f"model {self.name!r} is a segmenter: its mask is the explanation; use /v1/predict "
            "(the mask is in 'segmentation')",
            409,
        )

    def explain(
        self, scan: Scan, finding: str | None, method: str, findings: Findings
    ) -> Explanation:
        self.check_explain(method)
        raise AssertionError("unreachable")  # check_explain always refuses
