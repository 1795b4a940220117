"""Segment pneumothorax in radiographs with a segmenter checkpoint (``dxkit predict``).

For each radiograph (DICOM, PNG or JPEG; a folder means the radiographs in it) with
``--out DIR``: ``DIR/masks/<ImageId>.png`` (0/255 at the original resolution),
``DIR/overlays/<ImageId>.png`` (the mask tinted over the image), ``DIR/submission.csv`` in
the SIIM format ``ImageId,EncodedPixels`` (relative run-length code, ``-1`` when empty) and
``DIR/predictions.csv`` (image-level probability of each decision path, the call, the mask's
area). The ImageId is the file name without its extension (SIIM names files by ImageId).
The masks are the ones ``dxkit evaluate`` scores (``dxkit.train.segment_model``).

An unreadable file is skipped and reported (``io.discover``; ``dxkit predict`` lists it in
``errors.csv`` and exits 1); the others are still segmented and written.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.table import Table

from dxkit.errors import UnsupportedFormatError
from dxkit.explain.overlay import overlay_rgb
from dxkit.io.discover import BadScan, collect, discover
from dxkit.io.radiograph import read_radiograph
from dxkit.io.raster import read_raster
from dxkit.preprocess.rle import encode_rle
from dxkit.train.segment_model import (
    SegmentModel,
    full_resolution_mask,
    load_segmenter,
    mask_scores,
)

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

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def read_image(path: Path, model: SegmentModel) -> np.ndarray:
    """A radiograph file → ``(H, W)`` float32 in [0, 1] (colour images averaged to grey)."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return read_radiograph(path, scaling=model.scaling).pixels
    if suffix in RASTER_SUFFIXES:
        return read_raster(path).mean(axis=0) / 255.0
    raise UnsupportedFormatError(
        f"{path}: {suffix or 'no extension'} is not a radiograph format; pass .dcm, .png or .jpg"
    )


def predict_files(model: SegmentModel, files: list[Path]) -> list[SegmentPrediction]:
    """Masks and probabilities for each file (all files are read before any prediction)."""
    return predict_images(model, files, [read_image(path, model) for path in files])


def predict_images(
    model: SegmentModel, files: list[Path], images: list[np.ndarray]
) -> list[SegmentPrediction]:
    """Masks and probabilities for radiographs already read (``read_image``) from ``files``."""
    th = model.thresholds
    t, min_area = float(th["threshold"]), int(th["min_area"])
    maps, cls = model.predict(images)
    scores = mask_scores(maps, min_area)
    preferred = th.get("preferred", "segmenter")
    out = []
    for i, (path, pixels) in enumerate(zip(files, images, strict=True)):
        mask = full_resolution_mask(maps[i], pixels.shape, t, min_area)
        c = float(cls[i]) if cls is not None else None
        use_cls = preferred == "classifier" and c is not None
        out.append(
            SegmentPrediction(
                image_id=path.stem,
                source=str(path),
                mask=mask,
                pixels=pixels,
                probability=c if use_cls else float(scores[i]),  # type: ignore[arg-type]
                mask_score=float(scores[i]),
                classifier=c,
                positive=(c >= float(th["classifier"])) if use_cls else bool(scores[i] > t),  # type: ignore[operator]
            )
        )
    return out


def write_outputs(predictions: list[SegmentPrediction], out: Path) -> Path:
    """Mask and overlay PNGs, submission.csv and predictions.csv under ``out``."""
    folder = out.parent if out.suffix.lower() == ".csv" else out
    submission = out if out.suffix.lower() == ".csv" else folder / "submission.csv"
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    (folder / "overlays").mkdir(parents=True, exist_ok=True)
    for p in predictions:
        Image.fromarray((p.mask * 255).astype(np.uint8)).save(
            folder / "masks" / f"{p.image_id}.png"
        )
        tinted = overlay_rgb(p.pixels, p.mask.astype(np.float32), alpha=0.45)
        Image.fromarray(tinted).save(folder / "overlays" / f"{p.image_id}.png")
    submission.parent.mkdir(parents=True, exist_ok=True)
    with submission.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ImageId", "EncodedPixels"])
        for p in predictions:
            writer.writerow([p.image_id, encode_rle(p.mask)])
    with (folder / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["ImageId", "file", "probability", "positive", "mask_score", "classifier", "area"]
        )
        for p in predictions:
            cls = "" if p.classifier is None else f"{p.classifier:.6f}"
            writer.writerow(
                [p.image_id, p.source, f"{p.probability:.6f}", int(p.positive),
                 f"{p.mask_score:.6f}", cls, p.area]
            )  # fmt: skip
    return submission


def run_predict(
    ckpt: Path, inputs: list[Path], out: Path | None
) -> tuple[str | Table, list[BadScan], int]:
    """``dxkit predict CKPT FILES... [--out DIR]``: masks, overlays and a submission CSV
    under ``out``; without ``out`` a table of each image's probability and mask area; with
    the radiographs that could not be read and the number predicted."""
    model = load_segmenter(ckpt)
    items, bad = discover(inputs, "file")
    read, unread = collect(items, lambda item: read_image(item.paths[0], model))
    bad += unread
    if not read:
        return "", bad, 0
    files, images = [item.paths[0] for item, _ in read], [image for _, image in read]
    return _render(predict_images(model, files, images), out), bad, len(read)


def _render(predictions: list[SegmentPrediction], out: Path | None) -> str | Table:
    if out is not None:
        submission = write_outputs(predictions, out)
        return (
            f"wrote {len(predictions)} mask(s) and overlay(s) beside {submission} "
            "(and predictions.csv)"
        )
    table = Table(
        "image", "probability", "mask area (px)",
        caption="+ : pneumothorax called at the validation operating point; "
        "--out DIR writes masks, overlays and the submission CSV",
    )  # fmt: skip
    for p in predictions:
        table.add_row(p.source, f"{p.probability:.4f}{' +' if p.positive else ''}", str(p.area))
    return table
