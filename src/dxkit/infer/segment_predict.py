"""Segment pneumothorax in radiographs with a segmenter checkpoint (``dxkit predict``).

For each radiograph (DICOM, PNG or JPEG; a folder means the radiographs in it) with
``--out DIR``: ``DIR/masks/<ImageId>.png`` (0/255 at the original resolution),
``DIR/overlays/<ImageId>.png`` (the mask tinted over the image), ``DIR/submission.csv`` in
the SIIM format ``ImageId,EncodedPixels`` (relative run-length code, ``-1`` when empty) and
``DIR/predictions.csv`` (image-level probability of each decision path, the call, the mask's
area). The ImageId is the file name without its extension (SIIM names files by ImageId).
The masks are the ones ``dxkit evaluate`` scores (``dxkit.infer.segment_model``).

``dxkit predict`` finds the files (``io.discover``): an unreadable one is skipped and listed
in ``errors.csv``; the others are still segmented and written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dxkit.errors import UnsupportedFormatError
from dxkit.infer.device import ProgressCallback
from dxkit.infer.predictor import dicom_modality
from dxkit.infer.segment_model import (
    SegmentModel,
    full_resolution_mask,
    mask_scores,
)
from dxkit.io.radiograph import read_radiograph
from dxkit.io.raster import read_raster
from dxkit.preprocess.input_profile import check_inputs

if TYPE_CHECKING:
    from dxkit.infer.segment_onnx import OnnxSegmentModel

log = logging.getLogger(__name__)
DICOM_SUFFIXES = {".dcm", ".dicom"}
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class SegmentPrediction:
    """One radiograph's mask (original resolution) and image-level outputs."""

    image_id: str
    source: str
    mask: np.ndarray
    pixels: np.ndarray
    probability: float
    mask_score: float
    classifier: float | None
    positive: bool
    input_warning: str | None = None  # preprocess.input_profile: unlike the training images

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def read_image(path: Path, model: SegmentModel | OnnxSegmentModel) -> np.ndarray:
    """A radiograph file → ``(H, W)`` float32 in [0, 1] (colour images averaged to grey)."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return read_radiograph(path, scaling=model.scaling).pixels
    if suffix in RASTER_SUFFIXES:
        return raster_pixels(read_raster(path))
    raise UnsupportedFormatError(
        f"{path}: {suffix or 'no extension'} is not a radiograph format; pass .dcm, .png or .jpg"
    )


def raster_pixels(raster: np.ndarray) -> np.ndarray:
    """A read PNG/JPEG ``(C, H, W)`` in 0–255 → ``(H, W)`` in [0, 1] (colour averaged)."""
    return np.asarray(raster).mean(axis=0) / 255.0


def operating_point(thresholds: dict[str, Any], has_classifier: bool) -> tuple[str, float]:
    """The path that makes the image-level call (``"classifier"`` or ``"mask"``) and its
    validation threshold: the classifier head when preferred and present, else the mask."""
    if thresholds.get("preferred", "segmenter") == "classifier" and has_classifier:
        return "classifier", float(thresholds["classifier"])
    return "mask", float(thresholds["threshold"])


def image_call(
    mask_score: float, classifier: float | None, thresholds: dict[str, Any]
) -> tuple[float, bool]:
    """The image-level probability and call: the preferred path's (validation) operating
    point — the classifier head's ``p >= t``, else the mask score's ``score > threshold``."""
    path, t = operating_point(thresholds, classifier is not None)
    if path == "classifier":
        assert classifier is not None
        return classifier, classifier >= t
    return mask_score, mask_score > t


def predict_images(
    model: SegmentModel | OnnxSegmentModel,
    images: list[np.ndarray],
    sources: list[str],
    progress: ProgressCallback | None = None,
    modalities: list[str | None] | None = None,
) -> list[SegmentPrediction]:
    """Masks and probabilities of read radiographs (``(H, W)`` in [0, 1]), each with the
    input guard's warning against the training radiographs' profile (``modalities``: the
    DICOM Modality of each image, None for PNG/JPEG)."""
    th = model.thresholds
    t, min_area = float(th["threshold"]), int(th["min_area"])
    maps, cls = model.predict(images, progress=progress)
    scores = mask_scores(maps, min_area)
    warnings = check_inputs(model.input_profile, images, modalities)
    out = []
    for i, (source, pixels) in enumerate(zip(sources, images, strict=True)):
        c = float(cls[i]) if cls is not None else None
        probability, positive = image_call(float(scores[i]), c, th)
        out.append(
            SegmentPrediction(
                image_id=Path(source).stem,
                source=source,
                mask=full_resolution_mask(maps[i], pixels.shape, t, min_area),
                pixels=pixels,
                probability=probability,
                mask_score=float(scores[i]),
                classifier=c,
                positive=positive,
                input_warning=warnings[i],
            )
        )
    return out


def predict_files(
    model: SegmentModel | OnnxSegmentModel,
    files: list[Path],
    progress: ProgressCallback | None = None,
) -> list[SegmentPrediction]:
    """Masks and probabilities for each file (all files are read before any prediction)."""
    images = [read_image(path, model) for path in files]
    modalities = [dicom_modality(path) for path in files]
    return predict_images(model, images, [str(p) for p in files], progress, modalities)
