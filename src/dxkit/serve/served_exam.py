"""Knee MRI exam bundles behind the API: three planes in, fused findings and heatmaps out.

Probabilities come from ``ExamPredictor`` (the same path as ``dxkit predict BUNDLE``). The
deciding slice of each plane is the one ``SliceStackNet.explain_slices`` credits with the
largest share of the finding's logit; the heatmap is Grad-CAM (pytorch-grad-cam through
``dxkit.explain.cam.CamExplainer``) of that slice through the plane network's backbone and
head, since a slice-stack network has no per-pixel map of its own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dxkit.serve.served import Explanation, Findings, peak_of
from dxkit.serve.uploads import RequestError, Scan

EXAM_METHODS = ("gradcam", "gradcam++")


class _SliceHead(nn.Module):
    """A slice-stack network applied to single slices: backbone, spatial mean, head —
    the logit each slice would give alone, so Grad-CAM can explain one slice."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head(self.net.slice_features(x))


class ExamServedModel:
    """An MRNet-style exam bundle (``checkpoints/bundle.ckpt``, or its ``.onnx`` export)
    served like a classifier. An export has no gradients and no per-slice scores: no
    heatmaps and no deciding slices (the probabilities are the bundle's)."""

    kind = "exam"
    task = "multilabel"

    def __init__(self, name: str, path: Path, predictor: Any, slots: Any = None) -> None:
        self.name = name
        self.path = path
        self.predictor = predictor
        self.model = predictor.model
        self.backend = "onnx" if path.suffix.lower() == ".onnx" else "pytorch"
        self.can_explain = self.backend == "pytorch"
        # Predictions and Grad-CAM share the networks (hooks): one call at a time.
        self.lock = threading.Lock()
        self.slots = slots if slots is not None else threading.BoundedSemaphore(1)

    @property
    def label_names(self) -> list[str]:
        return list(self.predictor.findings)

    @property
    def thresholds(self) -> list[float]:
        return [float(self.predictor.thresholds[f]) for f in self.label_names]

    @property
    def planes(self) -> list[str]:
        return list(self.predictor.planes)

    def describe(self) -> dict[str, Any]:
        meta = self.model.meta
        norm = self.model.normalization
        return {
            "name": self.name,
            "file": self.path.name,
            "kind": self.kind,
            "backend": self.backend,
            "model": meta.get("model", {}).get("backbone"),
            "task": self.task,
            "findings": self.label_names,
            "thresholds": dict(zip(self.label_names, self.thresholds, strict=True)),
            "planes": self.planes,
            "expected_input": (
                "an exam: one (slices, H, W) .npy stack per plane ("
                + ", ".join(self.planes)
                + "), 0–255 intensities as in MRNet"
            ),
            "accepts": ["npy-exam"],
            "spatial_dims": 3,
            "hounsfield": False,
            "preprocessing": {
                "size": self.model.size,
                "scale": norm.scale,
                "mean": [norm.mean],
                "std": [norm.std],
                "variant": self.model.networks.variant,
            },
            "explain": self.can_explain,
            "explain_methods": list(EXAM_METHODS) if self.can_explain else [],
            "dxkit_version": meta.get("dxkit_version"),
        }

    def decisions(self, probs: np.ndarray) -> list[bool]:
        from dxkit.infer.thresholds import decide

        return list(decide(probs, self.label_names, self.thresholds, "multilabel").values())

    def _exam(self, scan: Scan) -> Any:
        from dxkit.data.exam import Exam, Series

        if scan.kind != "exam":
            raise RequestError(
                f"model {self.name!r} reads a whole exam; upload the axial, coronal and "
                "sagittal .npy stacks (one per plane field)",
                422,
            )
        series = {p: Series(p, data=scan.planes[p][0], exam_id="upload") for p in self.planes}
        return Exam("upload", series)

    def _networks(self, plane: str, finding: int) -> tuple[Any, int]:
        nets = self.model.networks
        if nets.variant == "multitask":
            return nets.nets[plane], finding
        return nets.nets[f"{self.label_names[finding]}__{plane}"], 0

    def _inputs(self, exam: Any) -> dict[str, torch.Tensor]:
        """Each plane as the networks see it: resized, normalised ``(C, D, h, w)``."""
        from dxkit.data.exam import ExamDataset

        data = ExamDataset(
            [exam], findings=[], planes=self.planes,
            normalization=self.model.normalization, size=self.model.size,
        )  # fmt: skip
        return data[0]["planes"]

    @torch.no_grad()
    def _deciding(self, inputs: dict[str, torch.Tensor]) -> list[dict[str, int]]:
        out: list[dict[str, int]] = [{} for _ in self.label_names]
        for plane in self.planes:
            for f in range(len(self.label_names)):
                net, index = self._networks(plane, f)
                scores = net.explain_slices([inputs[plane]])
                out[f][plane] = int(scores.decisive_slice()[0, index])
        return out

    def predict(self, scan: Scan) -> Findings:
        exam = self._exam(scan)
        with self.lock, self.slots:
            result = self.predictor.predict_exams([exam], source="upload")[0]
            deciding: list[Any] = (
                self._deciding(self._inputs(exam))
                if self.can_explain
                else [None] * len(self.label_names)
            )
        names = self.label_names
        probs = np.array([result.probabilities[n] for n in names])
        per_plane = {p: np.array([result.planes[p][n] for n in names]) for p in self.planes}
        return Findings(probs, None, deciding, per_plane, input_warning=result.input_warning)

    def check_explain(self, method: str) -> None:
        if not self.can_explain:
            raise RequestError(
                f"model {self.name!r} runs as ONNX, which has no gradients for heatmaps; serve "
                "its bundle.ckpt to explain (predictions are identical)",
                409,
            )
        if method not in EXAM_METHODS:
            raise RequestError(
                f"heatmap method {method!r} is not offered for exams; use one of "
                f"{', '.join(EXAM_METHODS)}",
                400,
            )

    def explain(
        self, scan: Scan, finding: str | None, method: str, findings: Findings
    ) -> Explanation:
        """Grad-CAM of the finding on each plane's deciding slice."""
        from dxkit.explain.cam import CamExplainer, default_finding, resolve_finding, upsample_maps
        from dxkit.preprocess.spec import Preprocessing

        self.check_explain(method)
        exam = self._exam(scan)
        index = resolve_finding(self.label_names, self.task, finding)
        if index is None:
            index = default_finding(findings.probabilities, self.task)
        maps: dict[str, np.ndarray] = {}
        slices: dict[str, list[int]] = {}
        layer = ""
        with self.lock, self.slots:
            inputs = self._inputs(exam)
            for plane in self.planes:
                net, out_index = self._networks(plane, index)
                wrapper = _SliceHead(net).eval()
                explainer = CamExplainer(
                    wrapper, Preprocessing(in_chans=1), self.label_names, self.task, method,
                    layer=f"net.{net.dxkit_cam_layer}",
                )  # fmt: skip
                chosen = (findings.deciding[index] or {}).get(plane, 0)
                x = inputs[plane][:, chosen][None]  # (1, C, h, w)
                raw = explainer.maps(x, out_index)
                maps[plane] = np.maximum(upsample_maps(raw, scan.planes[plane].shape[-2:]), 0.0)
                slices[plane] = [chosen]
                layer = explainer.layer.removeprefix("net.")
        return Explanation(
            finding=self.label_names[index],
            method=method,
            layer=layer,
            probability=float(findings.probabilities[index]),
            maps=maps,
            slices=slices,
            peak=peak_of(maps, slices),
        )
