"""One model of any kind run on retrieved instances through dxkit's own prediction paths:
classifiers through the server's ``ServedModel`` (slice-wise series rule, Grad-CAM),
segmenters through ``segment_predict.predict_files``, exam bundles through
``ExamPredictor.predict_folder``. Instances that fail to decode are skipped and named.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydicom.dataset import Dataset

from dxkit import __version__
from dxkit.dicom_results import Finding, ModelIdentity
from dxkit.errors import DxkitError
from dxkit.pacs.client import hashed
from dxkit.pacs.errors import NoSuitableSeriesError
from dxkit.pacs.rules import SeriesRules, rules_for

log = logging.getLogger(__name__)


@dataclass
class ModelOutput:
    """What one study gave: findings, the instances read per slot (in reading order), the
    masks of a segmenter (``(slot index, mask)``), a heatmap of a classifier, and the
    instances skipped ``(SOP Instance UID, reason)``."""

    findings: list[Finding]
    used: dict[str, list[Dataset]]
    masks: list[tuple[int, np.ndarray]] = field(default_factory=list)
    heatmap: dict[str, Any] | None = None
    mask_label: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _decodes(ds: Dataset) -> str | None:
    """None when the instance's pixels decode, else the reason in plain words."""
    from dxkit.io.dicom import decode_dataset, lenient_values

    try:
        with lenient_values(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decode_dataset(ds, "instance")
    except (DxkitError, ValueError, TypeError, AttributeError, RuntimeError, OSError) as err:
        return f"pixel data could not be decoded ({type(err).__name__})"
    return None


def readable(instances: list[Dataset]) -> tuple[list[Dataset], list[tuple[str, str]]]:
    good, skipped = [], []
    for ds in instances:
        reason = _decodes(ds)
        if reason is None:
            good.append(ds)
        else:
            skipped.append((str(ds.get("SOPInstanceUID", "?")), reason))
            log.warning("instance %s skipped: %s", hashed(str(ds.get("SOPInstanceUID"))), reason)
    return good, skipped


class PacsModel:
    """A checkpoint (classifier / segmenter) or exam bundle, ready for PACS studies."""

    def __init__(self, path: Path) -> None:
        from dxkit.infer.checkpoint import read_checkpoint
        from dxkit.serve.served import model_name

        self.path = Path(path)
        meta = read_checkpoint(self.path)["dxkit"]
        self.kind = str(meta.get("kind", "classify"))
        made_with = meta.get("dxkit_version") or __version__
        self.identity = ModelIdentity.from_checkpoint(
            self.path, model_name(self.path), f"dxkit {made_with}"
        )
        self.rules: SeriesRules = rules_for(self.kind, meta)
        self._model: Any = None

    def _loaded(self) -> Any:
        if self._model is None:
            if self.kind == "segment":
                from dxkit.infer.segment_model import load_segmenter

                self._model = load_segmenter(self.path)
            elif self.kind == "exam":
                from dxkit.infer.exam_predict import ExamPredictor

                self._model = ExamPredictor.from_bundle(self.path)
            else:
                from dxkit.infer.predictor import Predictor
                from dxkit.serve.served import ServedModel

                predictor = Predictor.from_checkpoint(self.path)
                self._model = ServedModel(self.identity.name, self.path, predictor, "pytorch")
        return self._model

    def infer(self, series: dict[str, list[Dataset]]) -> ModelOutput:
        """Run on the chosen series (``{slot: instances}``)."""
        used, skipped = {}, []
        for slot, instances in series.items():
            used[slot], bad = readable(instances)
            skipped += bad
            if not used[slot]:
                raise NoSuitableSeriesError(f"no instance of the {slot} series could be decoded")
        with tempfile.TemporaryDirectory(prefix="dxkit-pacs-") as tmp:
            if self.kind == "segment":
                out = self._segment(used["scan"], Path(tmp))
            elif self.kind == "exam":
                out = self._exam(used, Path(tmp))
            else:
                out = self._classify(used["scan"])
        out.skipped = skipped
        return out

    def _classify(self, instances: list[Dataset]) -> ModelOutput:
        from dxkit.io.dicom import decode_dataset, lenient_values, sort_series
        from dxkit.preprocess.window import file_windows
        from dxkit.serve.uploads import Scan, ScanKind

        served = self._loaded()
        with lenient_values(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = [decode_dataset(ds, f"instance-{i}") for i, ds in enumerate(instances)]
            ordered = sort_series("series", images) if len(images) > 1 else None
        if ordered is not None:
            order = {id(im): i for i, im in enumerate(images)}
            headers = [instances[order[id(im)]] for im in ordered.images]
            array, kind = ordered.volume()[None], cast(ScanKind, "series")
        else:
            headers, kind = instances, cast(ScanKind, "dicom")
            array = images[0].pixels if images[0].pixels.ndim == 3 else images[0].pixels[None]
        meta = images[0].meta
        hounsfield = meta.get("Modality") == "CT" and not any(
            im.meta.get("rescale_missing") for im in images
        )
        scan = Scan(kind, {"scan": array}, len(images), hounsfield, meta.get("Modality"),
                    file_windows(meta), headers)  # fmt: skip
        found = served.predict(scan)
        calls = served.decisions(found.probabilities)
        findings = [
            Finding(n, float(p), float(t), bool(c))
            for n, p, t, c in zip(
                served.label_names, found.probabilities, served.thresholds, calls, strict=True
            )
        ]
        ex = served.explain(scan, None, "gradcam", found)
        index = ex.peak["slice"] if array.ndim == 4 else 0
        column = ex.slices["scan"].index(index)
        top = max(float(m.max()) for m in ex.maps.values())
        heat = ex.maps["scan"][column] / top if top > 0 else ex.maps["scan"][column]
        slice_ = array[0, index] if array.ndim == 4 else array[0]
        pre = served.pre
        windows = pre.windows or (pre.ct.windows if pre.ct else None)
        window = tuple(windows[0]) if windows and hounsfield else None
        heatmap = {"index": index, "slice": slice_, "heat": heat, "finding": ex.finding,
                   "method": ex.method, "window": window}  # fmt: skip
        return ModelOutput(findings, {"scan": headers}, heatmap=heatmap)

    def _segment(self, instances: list[Dataset], tmp: Path) -> ModelOutput:
        from dxkit.infer.segment_predict import operating_point, predict_files

        files = []
        for i, ds in enumerate(instances):
            path = tmp / f"{i:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        model = self._loaded()
        predictions = predict_files(model, files)
        th = model.thresholds
        threshold = operating_point(th, model.has_classifier)[1]  # the deciding path's
        name = str((model.meta.get("label_names") or ["finding"])[0])
        findings = []
        for i, p in enumerate(predictions):
            label = name if len(predictions) == 1 else f"{name} image {i + 1}"
            findings.append(Finding(label, p.probability, threshold, p.positive))
        masks = [(i, p.mask.astype(np.uint8)) for i, p in enumerate(predictions)]
        return ModelOutput(findings, {"scan": instances}, masks=masks, mask_label=name)

    def _exam(self, used: dict[str, list[Dataset]], tmp: Path) -> ModelOutput:
        predictor = self._loaded()
        for plane, instances in used.items():
            (tmp / plane).mkdir()
            for i, ds in enumerate(instances):
                ds.save_as(tmp / plane / f"{i:05d}.dcm", enforce_file_format=True)
        prediction = predictor.predict_folder(tmp)
        findings = [
            Finding(f, prediction.probabilities[f], t, prediction.positive[f])
            for f, t in predictor.thresholds.items()
        ]
        return ModelOutput(findings, used)
