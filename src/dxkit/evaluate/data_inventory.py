"""What ``dxkit init`` finds in a data folder: its layout, counts, sizes, identity, leakage risk.

Layouts recognised (first match wins): a MedMNIST ``.npz`` (or a folder holding exactly
one), an MRNet root (``train/axial``), a SIIM folder (DICOMs + an RLE mask CSV), a
label CSV (with a ``path`` column, or an id column whose values name the files), class
folders with or without split folders, and an unlabelled DICOM tree (reported, no config:
labels are missing). Everything is read through the loaders training uses, so what the
report says is what ``dxkit train`` will see; images are surveyed from their headers only.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from dxkit.data.scan_survey import ScanSurvey, size_histogram, survey_scans
from dxkit.data.source import SourceData
from dxkit.data.sources.folder_layouts import (
    class_folder_table,
    find_id_column,
    is_scan_file,
)
from dxkit.data.splits import check_no_leakage
from dxkit.errors import DataSourceError, MissingFileError

log = logging.getLogger(__name__)
FRACTIONS = (0.2, 0.2)  # val / test shares when the data has no split (as in the starter config)


@dataclass
class Inventory:
    """A data folder as ``dxkit init`` reports it and the ``data:`` section that reads it."""

    root: Path
    layout: str
    task: str  # classify | exam | segment (the config's task), or "" when not trainable
    data: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    survey: ScanSurvey | None = None
    spatial_dims: int = 2
    size: int | None = None
    modality: str | None = None

    @property
    def trainable(self) -> bool:
        return bool(self.task)


def inspect_data(path: Path) -> Inventory:
    """Recognise the layout of ``path`` and summarise it (see the module docstring)."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise MissingFileError(f"{path}: no such file or folder; give the folder of your scans")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _medmnist(path)
        raise DataSourceError(
            f"{path}: a single {path.suffix or 'suffix-less'} file; give the folder that holds "
            "the scans (or a MedMNIST .npz)"
        )
    npz = sorted(path.glob("*.npz"))
    others = [p for p in path.iterdir() if not p.name.startswith(".") and p.suffix != ".npz"]
    if len(npz) == 1 and not others:
        return _medmnist(npz[0])
    if any((path / s / "axial").is_dir() for s in ("train", "valid")):
        return _mrnet(path)
    csvs = sorted(path.glob("*.csv"))
    from dxkit.evaluate.explore_siim import is_rle_csv

    rle = [c for c in csvs if is_rle_csv(c)]
    if rle:
        return _siim(path, rle[0])
    label_csvs = [c for c in csvs if c not in rle]
    if label_csvs:
        return _label_csv(path, label_csvs)
    if class_folder_table(path) is not None:
        return _folder(path, {"layout": "class_folders"}, "class folders")
    return _unlabelled(path)


# --- layouts --------------------------------------------------------------------------


def _folder(root: Path, keys: dict[str, Any], what: str) -> Inventory:
    from dxkit.data.sources.folder import load_folder

    data = load_folder(root, val_fraction=FRACTIONS[0], test_fraction=FRACTIONS[1], **keys)
    survey = cast(ScanSurvey, data.extra["survey"])  # set by load_folder
    inv = Inventory(
        root,
        keys.get("layout", "csv") if "id_column" not in keys else "csv_ids",
        "classify",
        {"source": "folder", "path": str(root), **{k: str(v) for k, v in keys.items()}},
        survey=survey,
        spatial_dims=survey.spatial_dims,
        size=survey.default_size(),
        modality=_main_modality(survey),
    )
    inv.lines.append(f"layout: {what}; task {data.task}, labels {', '.join(data.label_names)}")
    inv.lines += _split_counts(data)
    inv.lines += _survey_lines(survey)
    inv.lines += _identity_lines(data, survey)
    return inv


def _label_csv(root: Path, csvs: list[Path]) -> Inventory:
    from dxkit.data.sources.folder import DEFAULT_CSV, PATH_COLUMN

    csv = next((c for c in csvs if c.name == DEFAULT_CSV), csvs[0])
    if len(csvs) > 1 and csv.name != DEFAULT_CSV:
        raise DataSourceError(
            f"{root}: {len(csvs)} CSV files ({', '.join(c.name for c in csvs)}) and none is "
            f"{DEFAULT_CSV}; keep one label CSV in the folder or name it {DEFAULT_CSV}"
        )
    table = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True, nrows=50)
    columns = [str(c).strip().lstrip("\ufeff") for c in table.columns]
    table.columns = columns
    keys: dict[str, Any] = {"csv": csv}
    if PATH_COLUMN in columns:
        return _folder(root, keys, f"label CSV {csv.name} with a path column")
    id_column, pattern = find_id_column(root, table)
    if id_column is None or pattern is None:
        raise DataSourceError(
            f"{csv}: no 'path' column and no column whose first value names a scan file under "
            f"{root} (header: {', '.join(columns)}); add a 'path' column, or set data.id_column "
            "and data.path_pattern"
        )
    keys.update(id_column=id_column, path_pattern=pattern)
    return _folder(root, keys, f"label CSV {csv.name}, ids in '{id_column}' → files {pattern}")


def _medmnist(npz: Path) -> Inventory:
    from dxkit.data.sources.medmnist import load_medmnist

    stem = npz.stem.lower()
    name, _, size = stem.partition("_")
    data = load_medmnist(name, path=npz, size=int(size) if size.isdigit() else 28)
    inv = Inventory(
        npz,
        "medmnist",
        "classify",
        {"source": "medmnist", "name": name, "path": str(npz)},
        spatial_dims=data.spatial_dims,
        size=data.native_size,
    )
    inv.lines.append(
        f"layout: MedMNIST file ({name}); task {data.task}, labels {', '.join(data.label_names)}"
    )
    inv.lines += _split_counts(data)
    inv.lines.append(
        f"images: {data.native_size} px, {data.spatial_dims}-D, {data.in_chans} channel(s)"
    )
    inv.lines.append("patients: MedMNIST has no patient ids; its official splits are used")
    return inv


def _mrnet(root: Path) -> Inventory:
    from dxkit.data.sources.mrnet import load_mrnet

    inv = Inventory(root, "mrnet", "exam", {"source": "mrnet", "path": str(root)})
    inv.lines.append("layout: MRNet root (split/{axial,coronal,sagittal}/NNNN.npy + label CSVs)")
    depths: list[int] = []
    for split in ("train", "valid"):
        if not (root / split).is_dir():
            continue
        exams = load_mrnet(root, split, strict=False)
        absent = sum("has no volumes" in s.reason for s in exams.skipped)
        positives = {
            f: int(sum(e.labels.get(f, 0) for e in exams)) for f in ("abnormal", "acl", "meniscus")
        }
        inv.lines.append(
            f"  {split}: {len(exams)} exams ({', '.join(f'{k} {v}' for k, v in positives.items())}"
            f" positive); {absent} label rows without volumes are skipped"
            + (
                f"; {len(exams.skipped) - absent} other exams skipped"
                if len(exams.skipped) > absent
                else ""
            )
        )
        depths += [s.shape[0] for e in exams for s in e.series.values() if s.shape is not None]
    if depths:
        inv.lines.append(f"slices per series: {min(depths)}–{max(depths)}")
    inv.lines.append("patients: one exam per patient (MRNet); exams are the bootstrap unit")
    inv.spatial_dims, inv.size = 3, 64
    return inv


def _siim(root: Path, rle_csv: Path) -> Inventory:
    from dxkit.data.sources.siim import load_siim

    data = load_siim(root, rle_csv)
    inv = Inventory(
        root,
        "siim",
        "segment",
        {"source": "siim", "path": str(root), "csv": str(rle_csv)},
        spatial_dims=2,
        size=256,
        modality="CR/DX",
    )
    positive = sum(int(data.mask(i).any()) for i in range(len(data)))
    inv.lines.append(f"layout: SIIM (DICOM radiographs + RLE masks in {rle_csv.name})")
    inv.lines.append(f"  {len(data)} images, {positive} with a mask")
    skipped = data.skip_report()
    if skipped:
        inv.lines.append(f"  {skipped}")
    inv.lines.append("patients: grouped by the DICOM PatientID (hashed) when splitting")
    return inv


def _unlabelled(root: Path) -> Inventory:
    scans = [p for p in sorted(root.rglob("*")) if is_scan_file(p)]
    if not scans:
        raise DataSourceError(
            f"{root}: no scans (PNG/JPEG/DICOM/.npy), no label CSV and no class folders; "
            "give the folder that holds the scans"
        )
    survey = survey_scans(scans)
    inv = Inventory(root, "unlabelled", "", {}, survey=survey, modality=_main_modality(survey))
    inv.lines.append(f"layout: {len(scans)} scans without labels (no CSV, no class folders)")
    inv.lines += _survey_lines(survey)
    return inv


# --- report pieces --------------------------------------------------------------------


def _class_counts(data: SourceData, labels: np.ndarray) -> str:
    names = [str(c) for c in data.extra.get("class_names", data.label_names)]  # type: ignore[attr-defined]
    if data.task == "multiclass":
        counts = Counter(int(i) for i in labels.argmax(1))
        return ", ".join(f"{names[k]} {counts[k]}" for k in range(len(names)))
    return ", ".join(
        f"{n} {int(labels[:, j].sum())}/{len(labels)}" for j, n in enumerate(data.label_names)
    )


def _split_counts(data: SourceData) -> list[str]:
    return [
        f"  {name}: {len(s)} scans ({_class_counts(data, s.labels)})"
        for name, s in data.splits.items()
    ]


def _survey_lines(survey: ScanSurvey) -> list[str]:
    lo, hi = survey.size_range
    sampled = f" (headers of {survey.surveyed} sampled)" if survey.surveyed < survey.count else ""
    lines = [
        f"images: {survey.count} {survey.spatial_dims}-D scans{sampled}, largest side {lo}–{hi} px "
        f"({size_histogram(survey.sides)}); training size {survey.default_size()}",
        f"channels: {survey.channel_rule()}",
    ]
    if survey.modalities:
        lines.append(
            "modalities: " + ", ".join(f"{m} ×{n}" for m, n in survey.modalities.most_common())
        )
    return lines


def _identity_lines(data: SourceData, survey: ScanSurvey) -> list[str]:
    groups = [s.groups for s in data.splits.values()]
    if all(g is not None for g in groups):
        patients = len({str(x) for g in groups for x in g})  # type: ignore[union-attr]
        try:
            check_no_leakage(data.splits)
            leak = "none: no patient is in two splits"
        except DataSourceError as err:
            leak = f"HIGH: {err}"
        where = (
            "DICOM PatientID, hashed" if survey.dicom_groups() is not None else "patient_id column"
        )
        return [f"patients: {patients} ({where})", f"leakage risk: {leak}"]
    with_id = survey.patient_ids.get(True, 0)
    dicom_note = (
        f"; {with_id} DICOM files carry a PatientID, but the folder source does not read it"
        if with_id
        else ""
    )
    return [
        f"patients: missing (no patient_id column{dicom_note}); scores are per scan",
        "leakage risk: unknown — if a patient has several scans, they may land in both train "
        "and test and scores will be optimistic; add a patient_id column to split by patient",
    ]


def _main_modality(survey: ScanSurvey) -> str | None:
    return survey.modalities.most_common(1)[0][0] if survey.modalities else None
