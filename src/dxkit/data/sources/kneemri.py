"""kneeMRI (Štajduhar et al. 2017), the external ACL set of MRNet's validation, read safely.

The collection is a ``metadata.csv`` (one row per volume: ``volumeFilename``, ``aclDiagnosis``
0 healthy / 1 partial tear / 2 complete rupture, ``kneeLR``, and a region of interest
``roiX, roiY, roiZ, roiWidth, roiHeight, roiDepth``) plus one pickled NumPy volume per row
(``*.pck``, usually spread over ``vol01``...``vol10`` folders). Each volume becomes an exam
with one sagittal series and the binary label ``acl`` = grade ≥ 1, as in Bien et al.
The pickles are untrusted input: they are read with ``dxkit.data.safe_pickle``, which can
rebuild NumPy arrays and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dxkit.data.exam import UINT8_RANGE, Exam, ExamList, Series, SkippedExam, validate_volume
from dxkit.data.safe_pickle import load_array_pickle
from dxkit.errors import DataSourceError, DxkitError, InvalidScanError, MissingFileError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("volumeFilename", "aclDiagnosis")
ROI_COLUMNS: tuple[str, ...] = ("roiX", "roiY", "roiZ", "roiWidth", "roiHeight", "roiDepth")
Intensity = Literal["uint8", "raw"]


def read_kneemri_volume(
    path: Path,
    *,
    intensity: Intensity = "uint8",
    roi: tuple[int, int, int, int, int, int] | None = None,
) -> np.ndarray:
    """One kneeMRI ``.pck`` volume ``(D, H, W)`` as float32, optionally cropped to its ROI.

    ``intensity="uint8"`` maps the 12-bit values min-max onto 0-255 per volume so models
    trained on MRNet's 8-bit volumes see the same range; ``"raw"`` keeps scanner values.
    """
    vol = load_array_pickle(path)
    if vol.ndim != 3:
        raise InvalidScanError(f"{path}: volume shape {vol.shape}; kneeMRI volumes are (D, H, W)")
    if roi is not None:
        x, y, z, w, h, d = roi
        if (
            min(x, y, z) < 0
            or w <= 0
            or h <= 0
            or d <= 0
            or (z + d > vol.shape[0] or y + h > vol.shape[1] or x + w > vol.shape[2])
        ):
            raise InvalidScanError(
                f"{path}: ROI x={x} y={y} z={z} width={w} height={h} depth={d} lies outside "
                f"the volume of shape (D, H, W) {vol.shape}; fix metadata.csv or load without ROI"
            )
        vol = vol[z : z + d, y : y + h, x : x + w]
    out = np.asarray(vol, dtype=np.float32)
    if intensity == "uint8" and out.size and np.isfinite(out).all():
        lo, hi = float(out.min()), float(out.max())
        out = np.clip((out - lo) * (255.0 / (hi - lo)), 0.0, 255.0) if hi > lo else out * 0
    return out


def _index_volumes(root: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*.pck")):
        index.setdefault(path.name, []).append(path)
    return index


def read_metadata(root: Path) -> pd.DataFrame:
    """``metadata.csv`` with its required columns checked."""
    path = root / "metadata.csv"
    if not path.is_file():
        raise MissingFileError(f"{path}: kneeMRI metadata.csv is missing under {root}")
    try:
        meta = pd.read_csv(path, skipinitialspace=True, dtype={"volumeFilename": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"{path}: unreadable CSV ({exc})") from exc
    meta.columns = [str(c).strip() for c in meta.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise DataSourceError(
            f"{path}: missing column(s) {missing}; found {list(meta.columns)}. kneeMRI's "
            "metadata.csv has volumeFilename, aclDiagnosis, kneeLR and roi* columns"
        )
    if meta["volumeFilename"].duplicated().any():
        dup = meta.loc[meta["volumeFilename"].duplicated(), "volumeFilename"].iloc[0]
        raise DataSourceError(f"{path}: volume {dup} is listed twice")
    return meta


def load_kneemri(
    root: Path | str,
    *,
    strict: bool = True,
    intensity: Intensity = "uint8",
    crop_roi: bool = False,
    check_volumes: bool = True,
    plane: str = "sagittal",
) -> ExamList:
    """All kneeMRI volumes as single-series exams with label ``acl`` (grade 0 vs 1-2).

    With ``check_volumes`` each pickle is read once now so that a bad file is reported (or,
    with ``strict=False``, skipped and listed in ``result.skipped``) before training starts;
    volumes are read again on access rather than held in memory.
    """
    root = Path(root)
    if intensity not in ("uint8", "raw"):
        raise DataSourceError(f"intensity {intensity!r} must be 'uint8' or 'raw'")
    if not root.is_dir():
        raise MissingFileError(f"{root}: no such kneeMRI folder")
    meta = read_metadata(root)
    index = _index_volumes(root)
    skipped: list[SkippedExam] = []

    def problem(error: DxkitError, exam_id: str, where: Path | str) -> None:
        if strict:
            raise error
        skipped.append(SkippedExam(exam_id, str(where), str(error)))
        log.warning("skipping kneeMRI volume %s: %s", exam_id, error)

    csv_path = root / "metadata.csv"
    listed = set(meta["volumeFilename"].astype(str).str.strip())
    for name, paths in index.items():
        if name not in listed:
            problem(
                DataSourceError(f"{paths[0]}: volume has no row in {csv_path}"),
                Path(name).stem,
                paths[0],
            )
    exams: list[Exam] = []
    for row_no, row in enumerate(meta.itertuples(index=False), start=2):
        rec = row._asdict()
        name = str(rec["volumeFilename"]).strip()
        exam_id = Path(name).stem
        grade = pd.to_numeric(rec["aclDiagnosis"], errors="coerce")
        if grade not in (0, 1, 2):
            problem(
                DataSourceError(
                    f"{csv_path}:{row_no}: volume {name} has aclDiagnosis "
                    f"{rec['aclDiagnosis']!r}; must be 0, 1 or 2"
                ),
                exam_id,
                csv_path,
            )
            continue
        paths = index.get(name, [])
        if len(paths) != 1:
            error: DxkitError = (
                MissingFileError(
                    f"exam {exam_id}: {name} (listed in {csv_path}) not found under {root}"
                )
                if not paths
                else DataSourceError(f"exam {exam_id}: {name} found twice: {paths[0]}, {paths[1]}")
            )
            problem(error, exam_id, paths[0] if paths else csv_path)
            continue
        roi: tuple[int, int, int, int, int, int] | None = None
        if crop_roi:
            values = [pd.to_numeric(rec.get(c), errors="coerce") for c in ROI_COLUMNS]
            if any(pd.isna(v) for v in values):
                problem(
                    DataSourceError(f"{csv_path}:{row_no}: volume {name} lacks {ROI_COLUMNS}"),
                    exam_id,
                    csv_path,
                )
                continue
            x, y, z, w, h, d = (int(v) for v in values)
            roi = (x, y, z, w, h, d)
        loader: Callable[[Path], np.ndarray] = partial(
            read_kneemri_volume, intensity=intensity, roi=roi
        )
        value_range = UINT8_RANGE if intensity == "uint8" else None
        shape = None
        if check_volumes:
            try:
                vol = loader(paths[0])
                validate_volume(vol, exam_id=exam_id, source=str(paths[0]), value_range=value_range)
                shape = tuple(vol.shape)
            except InvalidScanError as exc:
                problem(exc, exam_id, paths[0])
                continue
        series = Series(
            plane,
            path=paths[0],
            loader=loader,
            value_range=value_range,
            exam_id=exam_id,
            validated=check_volumes,
            shape=shape,
        )
        extra = {
            k: rec[k].item() if isinstance(rec[k], np.generic) else rec[k]
            for k in ("examId", "seriesNo", "kneeLR", *ROI_COLUMNS)
            if k in rec
        }
        exams.append(
            Exam(
                exam_id,
                {plane: series},
                {"acl": float(grade >= 1)},
                meta={"acl_grade": int(grade), "volume": name, **extra},
            )
        )
    log.info("kneeMRI: %d exams loaded, %d skipped", len(exams), len(skipped))
    return ExamList(exams, skipped)
