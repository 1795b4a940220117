"""Heatmaps of series and volumes: slice-stack exams, 3-D classifiers and segmenters.

**Slice-stack exams** (MRNet style). A plane network scores a series by pooling slice
features; pytorch-grad-cam cannot look through that pooling, but every slice has a logit of
its own (the head on that slice's features, ``SliceStackNet.explain_slices``), so the
network seen as a 2-D classifier of single slices (``SliceLogits``) gives a Grad-CAM map
per slice through the library, all slices of a plane in one batch. The maps stay in raw
units and share ONE scale (``ExamHeatmaps.vmax``) across every slice of every plane: a
slice with half the evidence looks half as hot, instead of each map being stretched to its
own 0–1. Which slice decided the max-pooled score comes from the network's exact logit
decomposition (``SliceScores.decisive_slice``), per finding and plane.

**3-D classifiers**: ``CamExplainer`` with the 3-D target layer (trilinear upsampling);
``peak_slice`` names the slice holding the map's peak. **Segmenters**: the map is the
model's own probability map (``segmentation_map``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dxkit.errors import ConfigError
from dxkit.explain.cam import CAM_CLASSES, compute_maps
from dxkit.explain.geometry import map_to_scan, normalise, prepare_scan, upsample_maps
from dxkit.explain.targets import default_finding, resolve_finding, resolve_layer
from dxkit.preprocess.spec import Preprocessing

log = logging.getLogger(__name__)

SLICE_BATCH = 16  # slices per Grad-CAM pass (bounds memory on 256 px, 60-slice series)


class SliceLogits(nn.Module):
    """A slice-stack network applied to single slices ``(S, C, H, W)``: each slice's own
    logits ``(S, F)`` — the head on that slice's pooled backbone features."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net: Any = net
        self.dxkit_cam_layer = f"net.{net.dxkit_cam_layer}"

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        return self.net.head(self.net.slice_features(slices))


@dataclass
class SeriesMaps:
    """One plane's maps for one finding: ``raw`` ``(D, H, W)`` on the series' own grid
    (``model_map`` on the network input's grid), the per-slice logits and shares of the plane
    logit, and the deciding slice."""

    plane: str
    raw: np.ndarray
    model_map: np.ndarray
    slice_logits: np.ndarray
    contributions: np.ndarray
    deciding_slice: int
    logit: float
    probability: float

    def display(self, vmax: float) -> np.ndarray:
        """The maps on a shared 0–1 scale (``vmax`` common to every plane of the exam)."""
        return normalise(self.raw, vmax)


@dataclass
class ExamHeatmaps:
    """A finding's maps on every slice of every plane, on one common scale (``vmax``)."""

    finding: str
    finding_index: int
    method: str
    layer: str
    series: dict[str, SeriesMaps]
    probability: float | None = None
    fusion_terms: dict[str, float] = field(default_factory=dict)

    @property
    def vmax(self) -> float:
        """The largest value over all slices and planes: the top of the shared scale."""
        return max((float(s.raw.max()) for s in self.series.values()), default=0.0)

    @property
    def deciding_plane(self) -> str | None:
        """The plane whose term weighs most in the fused score (None without fusion)."""
        if not self.fusion_terms:
            return None
        return max(self.fusion_terms, key=lambda p: self.fusion_terms[p])


def explain_series(
    net: Any,
    series: torch.Tensor,
    output_index: int,
    scan_shape: tuple[int, int],
    method: str = "gradcam",
    layer: str | None = None,
    plane: str = "series",
) -> SeriesMaps:
    """Maps of one slice-stack network output on a prepared series ``(C, D, h, w)``,
    resized to ``scan_shape`` (the series' own ``(H, W)``)."""
    if method not in CAM_CLASSES:
        raise ConfigError(f"slice-stack heatmaps support {', '.join(CAM_CLASSES)}, not {method!r}")
    net.eval()
    wrapper = SliceLogits(net).eval()
    layer_name, target = resolve_layer(net, layer)
    series = series.to(next(net.parameters()).device)  # where the exam model runs (CUDA?)
    with torch.no_grad():
        scores = net.explain_slices([series])
    slices = series.movedim(1, 0)  # (D, C, h, w): the slices as a batch of images
    maps = [
        compute_maps(wrapper, target, method, slices[i : i + SLICE_BATCH], output_index, layer_name)
        for i in range(0, slices.shape[0], SLICE_BATCH)
    ]
    model_map = np.concatenate(maps)
    raw = np.maximum(upsample_maps(model_map, scan_shape), 0.0)
    depth = series.shape[1]
    logit = float(scores.logits[0, output_index])
    return SeriesMaps(
        plane=plane,
        raw=raw,
        model_map=model_map,
        slice_logits=scores.slice_logits[0, :depth, output_index].cpu().numpy().astype(np.float32),
        contributions=scores.contributions[0, :depth, output_index]
        .cpu()
        .numpy()
        .astype(np.float32),
        deciding_slice=int(scores.decisive_slice()[0, output_index]),
        logit=logit,
        probability=float(torch.sigmoid(torch.tensor(logit))),
    )


def plane_network(networks: Any, plane: str, finding_index: int) -> tuple[nn.Module, int]:
    """The network that scores ``finding_index`` on ``plane`` and its output index."""
    if networks.variant == "multitask":
        return networks.nets[plane], finding_index
    return networks.nets[f"{networks.findings[finding_index]}__{plane}"], 0


def exam_inputs(model: Any, exam: Any) -> dict[str, torch.Tensor]:
    """Each plane as the networks see it — through ``ExamDataset``, the training path."""
    from dxkit.data.exam import ExamDataset

    data = ExamDataset(
        [exam], findings=[], planes=model.planes, normalization=model.normalization,
        size=model.size,
    )  # fmt: skip
    return data[0]["planes"]


def explain_exam(
    model: Any,
    exam: Any,
    finding: str | None = None,
    method: str = "gradcam",
    layer: str | None = None,
) -> ExamHeatmaps:
    """Maps of ``finding`` (default: the most probable) on every slice of every plane of an
    exam, for an exam model (``dxkit.train.exam_module.ExamModel``); ``layer`` is a path in
    the plane network (default: its registered CAM layer)."""
    findings = model.findings
    asked = resolve_finding(findings, "multilabel", finding)
    plane_probs, fused = model.predict([exam])
    if asked is None:
        asked = default_finding(fused[0], "multilabel")
    inputs = exam_inputs(model, exam)
    series: dict[str, SeriesMaps] = {}
    layer_name = ""
    for plane in model.planes:
        net, out_index = plane_network(model.networks, plane, asked)
        shape = tuple(exam.volume(plane).shape[-2:])
        series[plane] = explain_series(net, inputs[plane], out_index, shape, method, layer, plane)
        layer_name = layer or str(net.dxkit_cam_layer)
    terms = model.fusion.coef[asked] * model.fusion_inputs(plane_probs)[0, :, asked]
    return ExamHeatmaps(
        finding=findings[asked],
        finding_index=asked,
        method=method,
        layer=layer_name,
        series=series,
        probability=float(fused[0, asked]),
        fusion_terms={p: float(t) for p, t in zip(model.planes, terms, strict=True)},
    )


def peak_slice(raw: np.ndarray) -> int:
    """The slice (first axis) of a volume map holding its hottest voxel."""
    return int(np.unravel_index(int(np.argmax(raw)), raw.shape)[0])


@torch.no_grad()
def segmentation_map(
    model: nn.Module,
    preprocessing: Preprocessing,
    array: np.ndarray,
    class_index: int = 0,
    source: str = "scan",
) -> np.ndarray:
    """A segmenter's probability map of class ``class_index`` on the scan's own grid
    (sigmoid of its logits ``(N, K, H, W)``), through the checkpoint's preprocessing."""
    x = prepare_scan(preprocessing, array, source)[None]
    device = next(model.parameters()).device
    logits = model.eval()(x.to(device)).float().cpu()
    if logits.ndim != x.ndim or not 0 <= class_index < logits.shape[1]:
        raise ConfigError(
            f"segmenter output {tuple(logits.shape)} has no class {class_index}; it has "
            f"{logits.shape[1] if logits.ndim > 1 else 0} mask channel(s)"
        )
    probs = torch.sigmoid(logits[0, class_index]).numpy()
    return np.clip(map_to_scan(preprocessing, array, probs), 0.0, 1.0)
