"""``dxkit predict`` for segmenter checkpoints: masks, overlays, the SIIM submission and
predictions.csv under ``--out`` (the predictions come from ``dxkit.infer.segment_predict``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from rich.table import Table

from dxkit.errors import InvalidScanError
from dxkit.explain.overlay import overlay_rgb
from dxkit.infer.device import ProgressCallback
from dxkit.infer.prediction_csv import write_segment_csv
from dxkit.infer.predictor import dicom_modality
from dxkit.infer.segment_onnx import load_segment_model
from dxkit.infer.segment_predict import SegmentPrediction, predict_images, read_image
from dxkit.io.discover import BadScan, collect, discover
from dxkit.preprocess.rle import encode_rle


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
    write_segment_csv(folder / "predictions.csv", predictions, input_warning=True)
    return submission


def run_predict(
    ckpt: Path,
    inputs: list[Path],
    out: Path | None,
    progress: ProgressCallback | None = None,
    strict_inputs: bool = False,
) -> tuple[str | Table, list[BadScan], int]:
    """``dxkit predict CKPT|ONNX FILES... [--out DIR]``: masks, overlays and a submission CSV
    under ``out``; without ``out`` a table of each image's probability and mask area; with
    the radiographs that could not be read and the number predicted. ``strict_inputs``
    refuses (writing nothing) when a radiograph is unlike the training ones."""
    model = load_segment_model(ckpt)
    items, bad = discover(inputs, "file")
    read, unread = collect(items, lambda item: read_image(item.paths[0], model))
    bad += unread
    if not read:
        return "", bad, 0
    sources = [str(item.paths[0]) for item, _ in read]
    modalities = [dicom_modality(item.paths[0]) for item, _ in read]
    images = [image for _, image in read]
    predictions = predict_images(model, images, sources, progress, modalities)
    flagged = [p for p in predictions if p.input_warning]
    if strict_inputs and flagged:
        raise InvalidScanError(
            f"{flagged[0].source}: {flagged[0].input_warning} ({len(flagged)} of "
            f"{len(predictions)} radiographs); check the inputs, or drop --strict-inputs to "
            "predict with a warning"
        )
    return _render(predictions, out), bad, len(predictions)


def _render(predictions: list[SegmentPrediction], out: Path | None) -> str | Table:
    flagged = sum(1 for p in predictions if p.input_warning)
    if out is not None:
        submission = write_outputs(predictions, out)
        unlike = (
            f"; warning: {flagged} radiograph(s) unlike the training data (input_warning)"
            if flagged
            else ""
        )
        return (
            f"wrote {len(predictions)} mask(s) and overlay(s) beside {submission} "
            f"(and predictions.csv){unlike}"
        )
    table = Table(
        "image", "probability", "mask area (px)", *(["input warning"] if flagged else []),
        caption="+ : pneumothorax called at the validation operating point; "
        "--out DIR writes masks, overlays and the submission CSV",
    )  # fmt: skip
    for p in predictions:
        cells = [p.source, f"{p.probability:.3f}{' +' if p.positive else ''}", str(p.area)]
        table.add_row(*cells, *([p.input_warning or ""] if flagged else []))
    return table
