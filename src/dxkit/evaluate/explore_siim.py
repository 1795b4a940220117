"""The explorer's view of a SIIM-style folder: radiograph DICOMs plus an ``ImageId,EncodedPixels``
run-length CSV. Counts with and without pneumothorax, patients (hashed by the explorer),
mask area as a share of the image, view position and pixel format from the headers, and
examples with the mask tinted red on the radiograph.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dxkit.errors import DataSourceError, DxkitError, MissingFileError
from dxkit.evaluate.explore_catalog import Catalog, Scan, read_dicom_scan

log = logging.getLogger(__name__)
LABEL = "pneumothorax"
# Header tags shown as distributions; none of them identifies a patient.
HEADER_TAGS = ("Modality", "ViewPosition", "Rows", "Columns", "BitsStored",
               "PhotometricInterpretation")  # fmt: skip
MASK_TINT = np.array([255, 40, 40], dtype=np.float32)


def is_rle_csv(path: Path) -> bool:
    """True for a SIIM mask CSV: a header naming ``EncodedPixels``, or (the sample files have
    no header) a first row of two fields whose second is ``-1`` or whitespace-separated
    integers."""
    try:
        with path.open(encoding="utf-8-sig") as f:
            first = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    if "encodedpixels" in first.lower().replace(" ", ""):
        return True
    fields = first.split(",")
    values = fields[1].split() if len(fields) == 2 else []
    return bool(values) and all(v.lstrip("-").isdigit() for v in values)


def find_rle_csv(root: Path) -> Path:
    found = sorted(p for p in root.glob("*.csv") if is_rle_csv(p))
    if not found:
        raise MissingFileError(
            f"{root}: no CSV with an 'ImageId,EncodedPixels' header; give it with --csv"
        )
    return found[0]


def tinted_view(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An RGB tile: the grey tile with the mask (resized to it) tinted red."""
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (grey.shape[1], grey.shape[0]), Image.Resampling.BILINEAR
    )
    alpha = np.asarray(small, dtype=np.float32)[..., None] / 255.0 * 0.5
    rgb = np.repeat(grey[..., None].astype(np.float32), 3, axis=-1)
    return (rgb * (1 - alpha) + MASK_TINT * alpha).round().astype(np.uint8)


def _headers(paths: list[Path]) -> tuple[list[str], pd.DataFrame]:
    from dxkit.io.dicom import open_dataset

    patients: list[str] = []
    rows: list[dict[str, object]] = []
    for path in paths:
        try:
            ds = open_dataset(path, stop_before_pixels=True)
        except DxkitError as err:
            log.warning("%s", err)
            patients.append(f"unreadable:{path.name}")
            rows.append({})
            continue
        patients.append(str(ds.get("PatientID", "") or f"unknown:{path.name}"))
        rows.append({tag: _plain(ds.get(tag)) for tag in HEADER_TAGS})
    return patients, pd.DataFrame(rows, columns=list(HEADER_TAGS))


def _plain(value: object) -> object:
    if value is None:
        return None
    return value if isinstance(value, int | float) else str(value)


def siim_catalog(root: Path, csv: Path | None = None) -> Catalog:
    """A SIIM folder as an explorer catalog (one entry per labelled radiograph)."""
    from dxkit.data.sources.siim import load_siim

    csv = find_rle_csv(root) if csv is None else Path(csv)
    data = load_siim(root, csv, strict=False)
    if len(data) == 0:
        raise DataSourceError(
            f"{csv}: none of its ImageIds has a readable <ImageId>.dcm under {root}; "
            f"{len(data.skipped)} skipped (first: "
            f"{data.skipped[0].reason if data.skipped else 'no rows'})"
        )
    patients, table = _headers(data.image_paths)
    areas = [
        100.0 * float(data.mask(i).sum()) / float(np.prod(data.shapes[i])) for i in range(len(data))
    ]
    table.insert(0, "mask_area_percent", areas)
    notes = [f"{csv.name} has no split column: all images shown as 'all'"]
    if data.skipped:
        notes.append(f"{len(data.skipped)} CSV ImageIds skipped (no image or a bad RLE; see log)")
    if data.unlabelled:
        notes.append(f"{len(data.unlabelled)} DICOM files have no row in {csv.name}")
    notes.append("mask_area_percent: share of the image inside the pneumothorax mask (0 = none)")

    def read(i: int) -> Scan:
        scan = read_dicom_scan(data.image_paths[i])
        return Scan(scan.values, scan.unit, tinted_view(scan.view, data.mask(i)), scan.meta)

    return Catalog(
        kind="siim",
        name=root.name,
        path=root,
        item="image",
        task="binary",
        label_names=[LABEL],
        class_names=[f"no {LABEL}", LABEL],
        splits=np.full(len(data), "all"),
        labels=data.has_pneumothorax[:, None].astype(np.float32),
        read=read,
        groups=np.array(patients),
        table=table,
        notes=notes,
    )
