"""``dxkit explain``: heatmaps of scans (or exams) for a checkpoint, written to a folder.

For every scan: an overlay PNG, the raw map as ``.npy`` (method units, never rescaled) and,
for volumes and exams, a montage PNG of the slices with the deciding (or peak) slice
framed; ``explain.json`` sums up scores, layers, deciding slices and — with ``check`` — the
deletion check. Classifier checkpoints (2-D and 3-D) and segmenters take scan files; exam
bundles take exam folders (three ``.npy`` planes or three DICOM series).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from dxkit.errors import CheckpointError, InvalidScanError
from dxkit.explain.cam import CamExplainer, Heatmap
from dxkit.explain.faithfulness import Fill, deletion_check
from dxkit.explain.geometry import display_image, normalise, prepare_scan
from dxkit.explain.overlay import (
    evidence_weight,
    save_map,
    save_montage,
    save_overlay,
    scale_note,
)
from dxkit.explain.volume import ExamHeatmaps, exam_inputs, explain_exam, peak_slice, plane_network
from dxkit.infer.device import ProgressCallback
from dxkit.io.discover import ScanItem, discover, read_volume, readable

log = logging.getLogger(__name__)
T = TypeVar("T")
SUMMARY = "explain.json"


def _tile(depth: int) -> int:
    return 160 if depth <= 12 else 128 if depth <= 30 else 96


class _Names:
    """Output file stems from scan names, unique within one run."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, path: Path) -> str:
        stem = path.name
        for suffix in (".gz", ".npy", ".npz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg"):
            stem = stem.removesuffix(suffix)
        stem = stem or "scan"
        self.seen[stem] = self.seen.get(stem, 0) + 1
        return stem if self.seen[stem] == 1 else f"{stem}-{self.seen[stem]}"


@dataclass(frozen=True)
class _Request:
    """What to explain and how: the options both the classifier and the exam path take."""

    method: str
    finding: str | None
    layer: str | None
    check: bool
    fill: Fill
    seed: int
    strict_inputs: bool = False  # refuse scans unlike the training data (input_profile)
    progress: ProgressCallback | None = None


def counted(pairs: Iterable[T], total: int, progress: ProgressCallback | None) -> Iterator[T]:
    """``pairs`` unchanged, reporting ``progress(done, total)`` after each one is handled."""
    for i, pair in enumerate(pairs):
        yield pair
        if progress is not None:
            progress(i + 1, total)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "finding"


def explain_scans(
    checkpoint: str | Path,
    scans: Sequence[str | Path],
    out: str | Path,
    *,
    method: str = "gradcam",
    finding: str | None = None,
    layer: str | None = None,
    check: bool = False,
    fill: Fill = "mean",
    seed: int = 0,
    strict_inputs: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Write heatmaps of ``scans`` under ``out`` and return the ``explain.json`` content
    (``strict_inputs``: a classifier refuses scans its input guard flags;
    ``progress(done, total)`` after each scan)."""
    from dxkit.infer.checkpoint import checkpoint_kind, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    kind = checkpoint_kind(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any]
    if kind in ("exam", "classify"):
        explain_kind = _explain_exams if kind == "exam" else _explain_classifier
        ask = _Request(method, finding, layer, check, fill, seed, strict_inputs, progress)
        summary = explain_kind(path, scans, out, ask)
    elif kind == "segment":
        from dxkit.explain.segmenter import explain_segmenter

        summary = explain_segmenter(
            path, scans, out, method=method, finding=finding, layer=layer, check=check,
            fill=fill, seed=seed, progress=progress,
        )  # fmt: skip
    else:
        raise CheckpointError(
            f"{path}: heatmaps of {kind!r} checkpoints are not available from the command line; "
            "explain classifiers (.ckpt), segmenters (.ckpt) and exam bundles (bundle.ckpt)"
        )
    summary = {"checkpoint": str(path), "kind": kind, **summary}
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


def _explain_classifier(
    path: Path, scans: Sequence[str | Path], out: Path, ask: _Request
) -> dict[str, Any]:
    from dxkit.infer.predictor import Predictor
    from dxkit.preprocess.input_profile import check_input

    predictor = Predictor.from_checkpoint(path)
    explainer = CamExplainer.from_predictor(predictor, ask.method, ask.layer)
    pre = explainer.preprocessing
    names = _Names()
    rows = []
    items, bad = discover(scans, "series" if pre.spatial_dims == 3 else "file")

    def read(item: ScanItem) -> np.ndarray:
        array = read_volume(item)
        prepare_scan(pre, array, item.source)  # a scan the model cannot take is reported
        return array

    for item, array in counted(readable(items, read, bad), len(items), ask.progress):
        scan = Path(item.source)
        warning = check_input(predictor.loaded.meta.get("input_profile"), array)
        if warning and ask.strict_inputs:
            raise InvalidScanError(
                f"{scan}: {warning}; check the input, or drop --strict-inputs to explain it "
                "with a warning"
            )
        if warning:
            log.warning("%s: %s", scan, warning)
        heat = explainer.explain(array, ask.finding, source=str(scan))
        stem = f"{names(scan)}.{_slug(heat.finding)}.{ask.method}"
        row: dict[str, Any] = {
            "source": str(scan),
            "finding": heat.finding,
            "probability": heat.probability,
            "logit": heat.logit,
            "map_max": float(heat.raw.max()),
            "input_warning": warning,
            "files": {"map": save_map(out / f"{stem}.npy", heat.raw).name},
        }
        grey = display_image(pre, array)
        caption = f"{heat.finding}  p={heat.probability:.3f}  {ask.method} @ {heat.layer}"
        threshold = float(predictor.thresholds[heat.finding_index])
        scale = (
            evidence_weight(heat.probability, threshold),
            scale_note(heat.probability, threshold),
        )
        if pre.spatial_dims == 2:
            row["peak"] = dict(zip(("row", "column"), heat.peak, strict=True))
            row["files"]["overlay"] = save_overlay(
                out / f"{stem}.png", grey, heat.normalised * scale[0], title=caption,
                marker=heat.peak, scale=scale[1],
            ).name  # fmt: skip
        else:
            row |= _volume_outputs(out, stem, grey, heat, caption, scale)
        if ask.check:
            x = prepare_scan(pre, array, str(scan))
            result = deletion_check(
                _image_score(explainer, heat.finding_index), x, heat.model_map,
                fill=ask.fill, seed=ask.seed,
            )  # fmt: skip
            row["faithfulness"] = result.as_dict()
        rows.append(row)
        log.info("%s: %s p=%.3f", scan, heat.finding, heat.probability)
    meta = predictor.loaded.meta
    return {
        "failed": [{"source": b.source, "reason": b.reason} for b in bad],
        "model": meta["model"]["name"],
        "task": predictor.loaded.task,
        "findings": predictor.label_names,
        "method": ask.method,
        "layer": explainer.layer,
        "scale": "maps (.npy) in the method's raw units; each overlay is scaled to its own "
        "scan's maximum (the slices of one volume share that volume's scale) times "
        "probability/threshold (at most 1), so only a positive call reaches full heat",
        "scans": rows,
    }


def _image_score(explainer: CamExplainer, index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def score(batch: torch.Tensor) -> torch.Tensor:
        return explainer.score(batch, index)

    return score


def _volume_outputs(
    out: Path, stem: str, grey: np.ndarray, heat: Heatmap, caption: str, scale: tuple[float, str]
) -> dict[str, Any]:
    """Montage of all slices on the volume's one scale, peak slice framed; its overlay."""
    display = heat.normalised * scale[0]
    peak = peak_slice(heat.raw)
    montage = save_montage(
        out / f"{stem}.montage.png",
        grey,
        display,
        deciding=peak,
        deciding_label="peak",
        title=f"{caption}  (one scale for all slices)",
        tile=_tile(len(grey)),
        scale=scale[1],
    )
    overlay = save_overlay(
        out / f"{stem}.png",
        grey[peak],
        display[peak],
        title=f"{caption}  slice {peak}",
        marker=heat.peak[1:],
        scale=scale[1],
    )
    return {
        "peak": dict(zip(("slice", "row", "column"), heat.peak, strict=True)),
        "files": {"map": f"{stem}.npy", "montage": montage.name, "overlay": overlay.name},
    }


def _explain_exams(
    path: Path, scans: Sequence[str | Path], out: Path, ask: _Request
) -> dict[str, Any]:
    from dxkit.data.sources.mrnet import load_exam_folder
    from dxkit.infer.exam_model import load_exam_bundle

    model = load_exam_bundle(path)
    names = _Names()
    rows = []
    layer_used = ask.layer
    items, bad = discover(scans, "exam")
    exams = readable(items, lambda item: load_exam_folder(item.paths[0]), bad)
    for item, exam in counted(exams, len(items), ask.progress):
        scan = Path(item.source)
        maps = explain_exam(model, exam, ask.finding, ask.method, ask.layer)
        layer_used = maps.layer
        stem = f"{names(scan)}.{_slug(maps.finding)}.{ask.method}"
        row = _exam_outputs(out, stem, exam, maps, model.normalization.scale)
        row["source"] = str(scan)
        if ask.check:
            inputs = exam_inputs(model, exam)
            for plane, series in maps.series.items():
                net, index = plane_network(model.networks, plane, maps.finding_index)
                result = deletion_check(
                    _series_score(net, index), inputs[plane], series.model_map,
                    fill=ask.fill, seed=ask.seed,
                )  # fmt: skip
                row["planes"][plane]["faithfulness"] = result.as_dict()
        rows.append(row)
    return {
        "failed": [{"source": b.source, "reason": b.reason} for b in bad],
        "model": model.meta.get("model", {}).get("backbone"),
        "task": "exam",
        "findings": model.findings,
        "planes": model.planes,
        "method": ask.method,
        "layer": layer_used,
        "scale": "every slice of every plane of one exam shares one scale (vmax, raw units)",
        "scans": rows,
    }


def _series_score(net: torch.nn.Module, index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def score(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(net(list(batch))[:, index].float())

    return score


def _exam_outputs(
    out: Path, stem: str, exam: Any, maps: ExamHeatmaps, scale: float
) -> dict[str, Any]:
    """Per plane: montage on the exam's common scale (deciding slice framed), the deciding
    slice's overlay and the raw maps."""
    vmax = maps.vmax
    planes: dict[str, Any] = {}
    for plane, series in maps.series.items():
        volume = np.asarray(exam.volume(plane), dtype=np.float32)
        grey = np.clip((volume[0] if volume.ndim == 4 else volume) / scale, 0.0, 1.0)
        display = normalise(series.raw, vmax)
        s = series.deciding_slice
        notes = [f"{c:+.2f}" for c in series.contributions]
        caption = f"{maps.finding} · {plane}  p={series.probability:.3f}  {maps.method}"
        montage = save_montage(
            out / f"{stem}.{plane}.montage.png",
            grey,
            display,
            deciding=s,
            deciding_label=f"decides {maps.finding}",
            title=f"{caption}  (slice: share of logit; one scale for all planes)",
            slice_notes=notes,
            tile=_tile(len(grey)),
        )
        overlay = save_overlay(
            out / f"{stem}.{plane}.png",
            grey[s],
            display[s],
            title=f"{caption}  deciding slice {s}",
        )
        planes[plane] = {
            "probability": series.probability,
            "logit": series.logit,
            "deciding_slice": s,
            "slice_contributions": [float(c) for c in series.contributions],
            "slice_logits": [float(v) for v in series.slice_logits],
            "map_max": float(series.raw.max()),
            "files": {
                "map": save_map(out / f"{stem}.{plane}.npy", series.raw).name,
                "montage": montage.name,
                "overlay": overlay.name,
            },
        }
    return {
        "finding": maps.finding,
        "probability": maps.probability,
        "vmax": vmax,
        "deciding_plane": maps.deciding_plane,
        "fusion_terms": maps.fusion_terms,
        "planes": planes,
    }
