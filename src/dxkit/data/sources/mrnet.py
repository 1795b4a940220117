"""MRNet-v1.0 knee MRI exams (Bien et al. 2018), read strictly from their published layout.

``ROOT/{train,valid}/{axial,coronal,sagittal}/NNNN.npy``: one uint8 ``(slices, 256, 256)``
volume per exam and plane (17-60 slices, differing between planes), and labels in
``ROOT/{split}-{abnormal,acl,meniscus}.csv`` (no header, rows ``0000,0``). Every volume and
label row must match up; anything else is reported with the exam and the file at fault.
Also reads one exam from a folder of three ``.npy`` files or three DICOM series.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from dxkit.data.exam import (
    MRNET_FINDINGS,
    PLANES,
    UINT8_RANGE,
    Exam,
    ExamList,
    Series,
    SkippedExam,
    plane_from_orientation,
    validate_volume,
)
from dxkit.errors import (
    DataSourceError,
    DxkitError,
    InvalidScanError,
    MissingFileError,
)

log = logging.getLogger(__name__)

SPLITS: tuple[str, str] = ("train", "valid")
_EXAM_ID = re.compile(r"^\d+$")


def normalize_exam_id(raw: str) -> str:
    """MRNet IDs are zero-padded to four digits (``7`` and ``0007`` are the same exam)."""
    return raw.strip().zfill(4)


def read_label_csv(path: Path) -> dict[str, int]:
    """One MRNet label file (no header, ``exam_id,0|1`` rows) → ``{exam_id: label}``."""
    if not path.is_file():
        raise MissingFileError(f"{path}: MRNet label file is missing; expected it in the root")
    labels: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2 or not _EXAM_ID.match(row[0].strip()):
                raise DataSourceError(
                    f"{path}:{lineno}: expected 'exam_id,label' like '0000,0' (no header), "
                    f"got {','.join(row)!r}"
                )
            exam_id, value = normalize_exam_id(row[0]), row[1].strip()
            if value not in ("0", "1"):
                raise DataSourceError(
                    f"{path}:{lineno}: exam {exam_id} has label {value!r}; labels must be 0 or 1"
                )
            if exam_id in labels:
                raise DataSourceError(f"{path}:{lineno}: exam {exam_id} is listed twice")
            labels[exam_id] = int(value)
    return labels


def check_npy_volume(path: Path, exam_id: str) -> tuple[int, ...]:
    """Open ``path`` memory-mapped and validate it (values are scanned only if not uint8)."""
    try:
        vol = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidScanError(
            f"exam {exam_id}: {path}: not a readable .npy volume ({exc}); re-export it"
        ) from exc
    validate_volume(vol, exam_id=exam_id, source=str(path), value_range=UINT8_RANGE)
    if vol.ndim != 3:
        raise InvalidScanError(
            f"exam {exam_id}: {path}: shape {vol.shape}; MRNet volumes are (slices, H, W)"
        )
    return tuple(vol.shape)


def _npy_series(plane: str, path: Path, exam_id: str) -> Series:
    """One plane of an exam from a checked ``.npy`` volume (uint8 values, shape known)."""
    shape = check_npy_volume(path, exam_id)
    return Series(
        plane, path=path, value_range=UINT8_RANGE, exam_id=exam_id, validated=True, shape=shape
    )


def _plane_files(split_dir: Path) -> tuple[dict[str, dict[str, Path]], list[SkippedExam]]:
    files: dict[str, dict[str, Path]] = {}
    stray: list[SkippedExam] = []
    for plane in PLANES:
        plane_dir = split_dir / plane
        if not plane_dir.is_dir():
            raise MissingFileError(
                f"{plane_dir}: MRNet plane folder is missing; expected "
                f"{split_dir}/{{{','.join(PLANES)}}}/NNNN.npy"
            )
        for path in sorted(plane_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix != ".npy" or not _EXAM_ID.match(path.stem):
                reason = f"{path}: not an MRNet volume name (NNNN.npy); move it out of the folder"
                stray.append(SkippedExam(path.stem, str(path), reason))
                continue
            files.setdefault(normalize_exam_id(path.stem), {})[plane] = path
    return files, stray


def load_mrnet(
    root: Path | str,
    split: Literal["train", "valid"] | str,
    *,
    strict: bool | None = None,
) -> ExamList:
    """All exams of one MRNet split, volumes memory-mapped on access.

    Problems (a missing plane file, a volume that is not 3-D, values outside 0-255, NaN, an
    empty series, label IDs without volumes, volumes without labels) raise with the exam and
    file named when ``strict``; when ``strict`` is False those exams are left out and listed
    in ``result.skipped``. The default (None) leaves out only label rows without any volume
    (MRNet as downloaded in parts lists far more exams than it holds) and raises on the rest.
    Skips are logged as one summary line. A missing folder or label file, or a malformed
    label file, always raises.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DataSourceError(f"MRNet split {split!r} does not exist; use one of {SPLITS}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise MissingFileError(f"{split_dir}: MRNet split folder is missing under {root}")
    label_files = {f: root / f"{split}-{f}.csv" for f in MRNET_FINDINGS}
    labels = {f: read_label_csv(p) for f, p in label_files.items()}
    files, skipped = _plane_files(split_dir)
    absent: list[str] = []  # label rows without any volume

    def problem(
        error: DxkitError, exam_id: str, path: Path | str, no_volumes: bool = False
    ) -> None:
        if strict or (strict is None and not no_volumes):
            raise error
        skipped.append(SkippedExam(exam_id, str(path), str(error)))
        if no_volumes:
            absent.append(exam_id)

    if strict is not False and skipped:
        raise DataSourceError(skipped[0].reason)
    exam_ids = sorted(set(files).union(*(set(v) for v in labels.values())))
    exams: list[Exam] = []
    for exam_id in exam_ids:
        planes = files.get(exam_id, {})
        if not planes:
            where = next(p for f, p in label_files.items() if exam_id in labels[f])
            problem(
                DataSourceError(
                    f"exam {exam_id}: listed in {where} but has no volumes "
                    f"({split_dir}/*/{exam_id}.npy missing); add the volumes or drop the row"
                ),
                exam_id,
                where,
                no_volumes=True,
            )
            continue
        missing_planes = [p for p in PLANES if p not in planes]
        if missing_planes:
            path = split_dir / missing_planes[0] / f"{exam_id}.npy"
            problem(
                MissingFileError(
                    f"exam {exam_id}: plane file {path} is missing; every exam needs "
                    "axial, coronal and sagittal volumes"
                ),
                exam_id,
                path,
            )
            continue
        unlabeled = [f for f in MRNET_FINDINGS if exam_id not in labels[f]]
        if unlabeled:
            where = label_files[unlabeled[0]]
            problem(
                DataSourceError(
                    f"exam {exam_id}: has volumes ({next(iter(planes.values()))}...) but no row "
                    f"in {where}; add its label or move the volumes out"
                ),
                exam_id,
                where,
            )
            continue
        try:
            series = {}
            for plane, path in planes.items():
                series[plane] = _npy_series(plane, path, exam_id)
        except InvalidScanError as exc:
            problem(exc, exam_id, path)
            continue
        exam_labels = {f: float(labels[f][exam_id]) for f in MRNET_FINDINGS}
        exams.append(
            Exam(exam_id, dict(sorted(series.items())), exam_labels, meta={"split": split})
        )
    log.info("MRNet %s: %d exams loaded, %d skipped", split, len(exams), len(skipped))
    _log_skips(split_dir, absent, [s for s in skipped if s.exam_id not in set(absent)])
    return ExamList(exams, skipped)


def _log_skips(split_dir: Path, absent: list[str], other: list[SkippedExam]) -> None:
    """One line per kind of skip, never one per exam (MRNet subsets skip thousands)."""
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        log.warning(
            "%s: %d exams in the label CSVs have no volumes (%s); skipped — set exam.strict: "
            "true to stop on them instead",
            split_dir,
            len(absent),
            shown,
        )
    if other:
        log.warning(
            "%s: %d exams skipped (exam.strict: false); first: %s",
            split_dir,
            len(other),
            other[0].reason,
        )


def is_mrnet_split(folder: Path) -> bool:
    """True for an MRNet split folder (``valid/`` holding the three plane folders)."""
    return folder.is_dir() and all((folder / p).is_dir() for p in PLANES)


def split_exams(split_dir: Path | str, exam_id: str | None = None) -> list[Exam]:
    """The exams of an MRNet split folder (labels not needed), or only ``exam_id``.

    For ``dxkit predict RUN MRNET_ROOT/valid [--exam 1130]``: every exam with all three
    planes, in id order; an exam missing a plane is an error naming the file.
    """
    split_dir = Path(split_dir)
    files, stray = _plane_files(split_dir)
    if stray:
        raise DataSourceError(stray[0].reason)
    ids = sorted(files)
    if exam_id is not None:
        wanted = normalize_exam_id(exam_id)
        if wanted not in files:
            raise MissingFileError(
                f"{split_dir}: no exam {wanted} (axial/{wanted}.npy missing); it holds "
                f"{len(ids)} exams ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
            )
        ids = [wanted]
    if not ids:
        raise MissingFileError(f"{split_dir}: no NNNN.npy volumes in its plane folders")
    exams = []
    for eid in ids:
        missing = [p for p in PLANES if p not in files[eid]]
        if missing:
            raise MissingFileError(
                f"exam {eid}: {split_dir / missing[0] / f'{eid}.npy'} is missing; every exam "
                "needs axial, coronal and sagittal volumes"
            )
        series = {p: _npy_series(p, files[eid][p], eid) for p in PLANES}
        exams.append(Exam(eid, series, {}, meta={"folder": f"{split_dir.name}/{eid}"}))
    return exams


def _to_uint8_range(volume: np.ndarray) -> np.ndarray:
    # MRNet volumes are 8-bit per series; DICOM MR intensities have no fixed scale, so each
    # series is mapped min-max onto 0-255 to match what MRNet-trained models saw.
    v = volume.astype(np.float32)
    lo, hi = float(v.min()), float(v.max())
    return np.clip((v - lo) * (255.0 / (hi - lo)), 0.0, 255.0) if hi > lo else np.zeros_like(v)


def _dicom_series(folder: Path, exam_id: str, intensity: str) -> dict[str, Series]:
    from dxkit.io.dicom import read_series

    found = read_series(folder)
    if len(found) != 3:
        raise DataSourceError(
            f"exam {exam_id}: {folder} holds {len(found)} DICOM series; an exam needs three "
            "(axial, coronal, sagittal)"
        )
    series: dict[str, Series] = {}
    for s in found:
        meta = s.images[0].meta
        iop = meta.get("ImageOrientationPatient")
        if iop is None:
            raise InvalidScanError(
                f"exam {exam_id}: {s.paths[0]}: no ImageOrientationPatient, so the plane of "
                f"series {s.series_uid} is unknown"
            )
        plane = plane_from_orientation(iop)
        if plane in series:
            raise DataSourceError(
                f"exam {exam_id}: {folder} has two {plane} series ({series[plane].source} and "
                f"{s.paths[0].parent}); keep one per plane"
            )
        volume = s.volume()
        if intensity == "uint8":
            volume = _to_uint8_range(volume)
        spacing = None
        pixel = meta.get("PixelSpacing")
        steps = np.diff(s.positions)
        if isinstance(pixel, list) and len(pixel) == 2 and len(s) > 1 and np.isfinite(steps).all():
            spacing = (float(np.median(np.abs(steps))), float(pixel[0]), float(pixel[1]))
        series[plane] = Series(
            plane,
            volume,
            path=s.paths[0].parent,
            spacing=spacing,
            orientation=tuple(float(x) for x in iop),
            value_range=UINT8_RANGE if intensity == "uint8" else None,
            exam_id=exam_id,
        )
    return series


def load_exam_folder(
    folder: Path | str,
    *,
    exam_id: str | None = None,
    labels: Mapping[str, float] | None = None,
    intensity: Literal["uint8", "raw"] = "uint8",
) -> Exam:
    """One exam from ``axial.npy``/``coronal.npy``/``sagittal.npy`` or three DICOM series.

    DICOM planes come from ImageOrientationPatient; their intensities are rescaled per
    series to 0-255 (``intensity="uint8"``) like MRNet's 8-bit volumes, or kept raw.
    """
    folder = Path(folder)
    exam_id = exam_id or folder.name
    if intensity not in ("uint8", "raw"):
        raise DataSourceError(f"intensity {intensity!r} must be 'uint8' or 'raw'")
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: no such exam folder")
    npy = {p: folder / f"{p}.npy" for p in PLANES}
    present = [p for p, path in npy.items() if path.is_file()]
    if present or any(folder.glob("*.npy")):
        missing = [str(npy[p]) for p in PLANES if p not in present]
        if missing:
            raise MissingFileError(
                f"exam {exam_id}: {', '.join(missing)} missing; an exam folder needs "
                "axial.npy, coronal.npy and sagittal.npy"
            )
        series = {}
        for plane, path in npy.items():
            series[plane] = _npy_series(plane, path, exam_id)
    else:
        series = _dicom_series(folder, exam_id, intensity)
    return Exam(exam_id, series, dict(labels or {}), meta={"folder": str(folder)})
