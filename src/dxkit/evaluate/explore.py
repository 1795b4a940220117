"""Dataset explorer: what a data source holds, summarised before anyone trains on it.

``explore_source`` reads a MedMNIST ``.npz``, a labelled folder, a DICOM metadata table
(written by ``dxkit prepare dicom``) or an MRNet root into one ``Catalog`` (split, labels and
patient id per scan, plus a reader) and summarises it: counts per split and label, label
co-occurrence, patients per split and any overlap between splits, identical images in
several splits, slices per series, intensity histograms (HU for CT), metadata
distributions and example tiles per label. Patient identity never leaves this module: ids
are only counted, or shown hashed unless asked; identity columns are refused; file names
are never shown.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

import dxkit
from dxkit.errors import (
    ConfigError,
    DataSourceError,
    DxkitError,
    MissingFileError,
    UnsupportedFormatError,
)
from dxkit.evaluate.metrics import json_safe

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("medmnist", "folder", "dicom-table", "mrnet")
SPLIT_ORDER = ("train", "val", "valid", "test", "all")
UNIT_HU, UNIT_8BIT, UNIT_RAW = "HU", "pixel value (0-255)", "stored value"
HU_EDGES = np.arange(-1100.0, 3101.0, 25.0)  # air to dense bone; padding counts as "below"
UINT8_EDGES = np.arange(0.0, 257.0, 4.0)
VIEW_SIDE = 160  # montage tiles are at most this many pixels on a side
FILE_HASH_LIMIT = 10_000  # hash file contents for the duplicate check up to this many files

# Identity columns are refused outright (values never read into a summary); identifier
# columns (ids, UIDs, file paths) are used only to count and are never shown.
# fmt: off
_PHI_EXACT = {"sex", "age", "dob", "mrn", "patientsex", "patientage", "patientweight",
              "patientsize", "otherpatientids", "studytime", "seriestime", "acquisitiontime",
              "contenttime"}
_PHI_PARTS = ("birth", "address", "phone", "email", "ssn", "accession", "institution",
              "physician", "operator", "date")
_SAFE_NAMES = {"manufacturermodelname", "protocolname", "sequencename"}
_ID_EXACT = {"file", "path", "filename", "split", "instancenumber", "imagepositionpatient",
             "sliceposition"}
_ID_ENDINGS = ("uid", "patientid", "examid", "studyid", "seriesid", "subjectid", "caseid")
# fmt: on


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def phi_columns(columns: Iterable[str]) -> list[str]:
    """Columns that name patient identity (names, dates, addresses, sex, age...): refused."""
    found = []
    for column in columns:
        n = _norm(column)
        named = "name" in n and n not in _SAFE_NAMES
        if n in _PHI_EXACT or named or any(part in n for part in _PHI_PARTS):
            found.append(str(column))
    return found


def is_identifier_column(column: str) -> bool:
    """Ids, UIDs and file paths: counted, never shown."""
    n = _norm(column)
    if n in _ID_EXACT or n.endswith(_ID_ENDINGS):
        return True
    # "patient_id", "exam-id", "PatientID", "examId"; not "valid" or "fluid"
    return bool(re.search(r"(^|[_\s-])id$", column, re.IGNORECASE) or re.search(r"I[Dd]$", column))


def hash_id(value: object, salt: str) -> str:
    """A pseudonym for a patient id (SHA-256 of salt + id, 12 hex digits)."""
    return hashlib.sha256(f"{salt}{value}".encode()).hexdigest()[:12]


@dataclass
class Scan:
    """One read scan: intensities in ``unit`` (any shape), a display tile, PHI-free metadata."""

    values: np.ndarray
    unit: str
    view: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Catalog:
    """A source reduced to what the explorer needs: one entry per scan (image, file, exam)."""

    kind: str
    name: str
    path: Path
    item: str  # what one entry is: "image", "scan", "file", "exam"
    task: str | None
    label_names: list[str]
    class_names: list[str]
    splits: np.ndarray  # (N,) split name per entry
    labels: np.ndarray  # (N, L) float32, L = 0 without labels
    read: Callable[[int], Scan]
    groups: np.ndarray | None = None  # patient (or exam) ids; never written out as they are
    group_kind: str = "patient"
    fingerprints: Callable[[], np.ndarray] | None = None  # content keys for the duplicate check
    fingerprint_by: str = ""
    slices: dict[str, list[int]] = field(default_factory=dict)  # per plane: slices per series
    table: pd.DataFrame | None = None  # metadata table, PHI columns already dropped
    display: dict[str, np.ndarray] | None = None  # groups for histograms/montage (else labels)
    refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading scans


def _plane_image(array: np.ndarray) -> np.ndarray:
    """The 2-D picture of a channel-first scan: middle slice of a volume, colour as (H, W, 3)."""
    a = np.asarray(array)
    if a.ndim == 4:
        a = a[:, a.shape[1] // 2]
    if a.ndim == 3:
        return np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a[0]
    return a


def view_tile(
    image: np.ndarray, unit: str, window: tuple[float, float] | None = None
) -> np.ndarray:
    """A uint8 display tile: 0-255 data as stored, CT through its window, anything else
    stretched between its 0.5 and 99.5 percentiles; shrunk to at most ``VIEW_SIDE`` px."""
    img = np.asarray(image, dtype=np.float32)
    if unit == UNIT_8BIT:
        lo, hi = 0.0, 255.0
    elif window is not None:
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:
        lo, hi = (float(v) for v in np.percentile(img, [0.5, 99.5]))
    tile = (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)
    scale = VIEW_SIDE / max(tile.shape[:2])
    if scale < 1:
        pil = Image.fromarray(tile)
        size = (max(1, round(tile.shape[1] * scale)), max(1, round(tile.shape[0] * scale)))
        tile = np.asarray(pil.resize(size, Image.Resampling.BILINEAR))
    return tile


def _first(value: Any) -> float | None:
    if value is None:
        return None
    flat = np.atleast_1d(np.asarray(value, dtype=object))
    try:
        return float(flat[0]) if len(flat) else None
    except (TypeError, ValueError):
        return None


def read_dicom_scan(path: Path) -> Scan:
    """A DICOM file in modality units (HU for CT), shown through its own window when CT."""
    from dxkit.io.dicom import read_dicom
    from dxkit.preprocess.window import WINDOWS

    image = read_dicom(path)
    meta = image.meta
    colour = int(_first(meta.get("SamplesPerPixel")) or 1) > 1
    array = image.pixels if colour else image.pixels[None]
    ct = str(meta.get("Modality", "")).upper() == "CT"
    window: tuple[float, float] | None = None
    if ct:
        center, width = _first(meta.get("WindowCenter")), _first(meta.get("WindowWidth"))
        window = WINDOWS["soft_tissue"]  # when the file names no usable window
        if center is not None and width is not None and width > 0:
            window = (center, width)
    unit = UNIT_HU if ct else UNIT_RAW
    return Scan(array, unit, view_tile(_plane_image(array), unit, window), meta)


def read_file_scan(path: Path) -> Scan:
    """Any scan file ``read_scan`` knows; DICOM keeps its metadata and window."""
    from dxkit.io import SCAN_SUFFIXES, read_scan, sniff_format

    if not path.is_file():
        raise MissingFileError(f"{path}: listed scan does not exist; fix the table or the root")
    kind = SCAN_SUFFIXES.get(path.suffix.lower()) or sniff_format(path)
    if kind == "dicom":
        return read_dicom_scan(path)
    array = read_scan(path)
    unit = UNIT_8BIT if kind == "raster" else UNIT_RAW
    return Scan(array, unit, view_tile(_plane_image(array), unit))


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the four sources


def detect_kind(path: Path) -> str:
    """The source kind from the path: ``.npz`` → medmnist, ``.parquet`` → dicom-table, a
    folder with ``train/axial`` (or ``valid/axial``) → mrnet, a folder with a CSV → folder."""
    if not path.exists():
        raise MissingFileError(f"{path}: no such file or folder; check the path")
    if path.is_file():
        kinds = {".npz": "medmnist", ".parquet": "dicom-table"}
        if path.suffix.lower() in kinds:
            return kinds[path.suffix.lower()]
        raise UnsupportedFormatError(
            f"{path}: cannot explore a {path.suffix or 'suffix-less'} file; give a MedMNIST .npz, "
            "a DICOM table .parquet (dxkit prepare dicom), a labelled folder or an MRNet root"
        )
    if any((path / s / "axial").is_dir() for s in ("train", "valid")):
        return "mrnet"
    if any(path.glob("*.csv")):
        return "folder"
    raise DataSourceError(
        f"{path}: neither an MRNet root (train/axial/...) nor a labelled folder (no CSV); "
        f"add a labels.csv or pass --kind ({', '.join(KINDS)})"
    )


def medmnist_catalog(path: Path) -> Catalog:
    from dxkit.data.sources.medmnist import INFO, load_medmnist

    stem = path.stem.lower()
    base = re.sub(r"_\d+$", "", stem)
    data = load_medmnist(base if base in INFO else stem, path=path)
    names = list(data.splits)
    arrays = [np.asarray(data.splits[s].items) for s in names]  # views of the file's arrays
    offsets = np.cumsum([0, *(len(a) for a in arrays)])

    def read(i: int) -> Scan:
        k = int(np.searchsorted(offsets, i, side="right") - 1)
        array = np.asarray(arrays[k][i - offsets[k]])
        return Scan(array, UNIT_8BIT, view_tile(_plane_image(array), UNIT_8BIT))

    def fingerprints() -> np.ndarray:
        return np.array(
            [
                hashlib.blake2b(x.tobytes(), digest_size=16).hexdigest()
                for a in arrays
                for x in np.asarray(a)
            ]
        )

    slices = {}
    if data.spatial_dims == 3:
        slices["volume"] = [int(a.shape[2]) for a in arrays for _ in range(len(a))]
    return Catalog(
        kind="medmnist",
        name=data.name,
        path=path,
        item="image",
        task=data.task,
        label_names=data.label_names,
        class_names=[str(c) for c in data.extra.get("class_names", data.label_names)],  # type: ignore[attr-defined]
        splits=np.repeat(names, [len(a) for a in arrays]),
        labels=np.concatenate([data.splits[s].labels for s in names]),
        read=read,
        fingerprints=fingerprints,
        fingerprint_by="identical pixels",
        slices=slices,
        notes=[
            "MedMNIST has no patient ids: patient overlap between splits cannot be checked; "
            "identical images across splits are checked instead"
        ],
    )


def folder_catalog(root: Path, csv: Path | None = None) -> Catalog:
    from dxkit.data.sources import folder as fs

    csv = fs.find_label_csv(root) if csv is None else Path(csv)
    if not csv.is_file():
        raise MissingFileError(f"{csv}: label CSV not found; give its path with --csv")
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataSourceError(f"{csv}: not a readable CSV ({err}); save it as UTF-8 CSV") from None
    table.columns = [str(c).strip().lstrip("\ufeff") for c in table.columns]
    if fs.PATH_COLUMN not in table.columns or table.empty:
        raise DataSourceError(
            f"{csv}: needs a '{fs.PATH_COLUMN}' column and one row per scan (header: "
            f"{', '.join(table.columns)}); e.g. 'path,label[,patient_id][,split]'"
        )
    refused = phi_columns(c for c in table.columns if c != fs.GROUP_COLUMN)
    table = table.drop(columns=refused).apply(lambda col: col.str.strip())
    labels, label_names, task, class_names = fs.parse_labels(csv, table)
    paths = [root / p for p in table[fs.PATH_COLUMN]]
    missing = [p for p in table[fs.PATH_COLUMN] if not (root / p).is_file()]
    if missing:
        raise DataSourceError(
            f"{csv}: {len(missing)} of {len(paths)} listed scans do not exist under {root} "
            f"(first: {missing[0]}); paths are relative to the folder"
        )
    notes = []
    if fs.SPLIT_COLUMN in table.columns:
        raw = table[fs.SPLIT_COLUMN].str.lower()
        bad = sorted(set(raw) - set(fs.SPLIT_NAMES))
        if bad:
            raise DataSourceError(
                f"{csv}: column '{fs.SPLIT_COLUMN}' has {bad[0]!r}; use train, val or test"
            )
        splits = raw.map(fs.SPLIT_NAMES).to_numpy(dtype=str)
    else:
        splits = np.full(len(paths), "all")
        notes.append(f"{csv.name} has no '{fs.SPLIT_COLUMN}' column: all scans shown as 'all'")
    groups = None
    if fs.GROUP_COLUMN in table.columns:
        groups = table[fs.GROUP_COLUMN].to_numpy(dtype=str)
    else:
        notes.append(f"no '{fs.GROUP_COLUMN}' column: patient overlap cannot be checked")

    def fingerprints() -> np.ndarray:
        return np.array([_file_digest(p) for p in paths])

    small = len(paths) <= FILE_HASH_LIMIT
    if not small:
        notes.append(f"{len(paths)} files: identical-file check skipped (>{FILE_HASH_LIMIT})")
    return Catalog(
        kind="folder",
        name=root.name,
        path=root,
        item="scan",
        task=task,
        label_names=label_names,
        class_names=class_names,
        splits=splits,
        labels=labels,
        read=lambda i: read_file_scan(paths[i]),
        groups=groups,
        fingerprints=fingerprints if small else None,
        fingerprint_by="identical files",
        refused=refused,
        notes=notes,
    )


def dicom_table_catalog(path: Path, root: Path | None = None) -> Catalog:
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise DataSourceError(f"{path}: not a readable Parquet table ({err})") from None
    if "file" not in table.columns:
        raise DataSourceError(
            f"{path}: no 'file' column (has {', '.join(map(str, table.columns[:8]))}...); "
            "explore a table written by 'dxkit prepare dicom'"
        )
    refused = phi_columns(table.columns)
    table = table.drop(columns=refused).reset_index(drop=True)
    notes = []
    split = table["split"].astype(str).to_numpy() if "split" in table else None
    if split is None:
        notes.append("the table has no 'split' column: all files shown as 'all'")
    groups = table["PatientID"].astype(str).to_numpy() if "PatientID" in table else None
    base = Path(root) if root is not None else path.parent
    files = [base / f for f in table["file"].astype(str)]
    readable = bool(files) and files[0].is_file()
    if not readable:
        notes.append(
            f"scan files are not under {base}: pass --root (the folder given to "
            "'dxkit prepare dicom') for intensity histograms and examples"
        )
    series = table["SeriesInstanceUID"].astype(str) if "SeriesInstanceUID" in table else None
    frames = pd.Series(1, index=table.index)
    if "NumberOfFrames" in table:
        frames = pd.to_numeric(table["NumberOfFrames"], errors="coerce").fillna(1)
    slices = {}
    if series is not None:
        slices["series"] = frames.groupby(series).sum().astype(int).tolist()
    # One middle slice per series stands for it in the histograms and the montage.
    order = table.get("slice_position", pd.Series(0.0, index=table.index)).fillna(0.0)
    key = series if series is not None else pd.Series(range(len(table)), index=table.index)
    ranked = pd.DataFrame({"key": key.to_numpy(), "pos": order.to_numpy()})
    ranked = ranked.sort_values(["key", "pos"], kind="stable")
    rank = ranked.groupby("key", sort=False).cumcount()
    size = ranked.groupby("key", sort=False)["pos"].transform("size")
    middle = ranked.index[(rank == size // 2).to_numpy()]
    modality = table.get("Modality", pd.Series("all", index=table.index)).fillna("unknown")
    modality = modality.astype(str).to_numpy()
    display = {}
    if readable:
        reps = np.sort(np.asarray(middle, dtype=int))
        display = {f"Modality {m}": reps[modality[reps] == m] for m in sorted(set(modality[reps]))}
    fingerprints = None
    if "SOPInstanceUID" in table:
        sop = table["SOPInstanceUID"].astype(str).to_numpy()
        fingerprints = lambda: sop  # noqa: E731
    return Catalog(
        kind="dicom-table",
        name=path.stem,
        path=path,
        item="file",
        task=None,
        label_names=[],
        class_names=[],
        splits=split if split is not None else np.full(len(table), "all"),
        labels=np.zeros((len(table), 0), np.float32),
        read=lambda i: read_dicom_scan(files[i]),
        groups=groups,
        fingerprints=fingerprints,
        fingerprint_by="same SOPInstanceUID",
        slices=slices,
        table=table,
        display=display,
        refused=refused,
        notes=notes,
    )


def mrnet_catalog(root: Path) -> Catalog:
    from dxkit.data.exam import MRNET_FINDINGS, PLANES
    from dxkit.data.sources.mrnet import SPLITS, load_mrnet

    exams, splits, notes = [], [], []
    for split in SPLITS:
        if not (root / split).is_dir():
            notes.append(f"no {split} split under the root")
            continue
        loaded = load_mrnet(root, split, strict=False)
        if loaded.skipped:
            notes.append(f"{split}: {len(loaded.skipped)} exams skipped (unreadable or unlabelled)")
        exams += list(loaded)
        splits += [split] * len(loaded)
    if not exams:
        raise DataSourceError(f"{root}: no readable MRNet exams in {', '.join(SPLITS)}")

    def read(i: int) -> Scan:
        vols = [np.asarray(exams[i].volume(p)) for p in PLANES]
        tiles = [view_tile(v[v.shape[0] // 2], UNIT_8BIT) for v in vols]
        height = min(t.shape[0] for t in tiles)
        view = np.concatenate([t[:height] for t in tiles], axis=1)
        return Scan(np.concatenate([v.ravel() for v in vols]), UNIT_8BIT, view)

    return Catalog(
        kind="mrnet",
        name=root.name,
        path=root,
        item="exam",
        task="multilabel",
        label_names=list(MRNET_FINDINGS),
        class_names=list(MRNET_FINDINGS),
        splits=np.array(splits),
        labels=np.array([e.label_vector(MRNET_FINDINGS) for e in exams], np.float32),
        read=read,
        groups=np.array([e.exam_id for e in exams]),
        group_kind="exam",
        slices={p: [e.series[p].num_slices for e in exams] for p in PLANES},
        notes=[
            *notes,
            "MRNet ids are exam ids: overlap is checked on exams; examples show "
            "the middle axial, coronal and sagittal slices",
        ],
    )


# --------------------------------------------------------------------------- summaries


def ordered_splits(names: Iterable[str]) -> list[str]:
    """Split names in reading order: train, val/valid, test, then any others."""
    unique = dict.fromkeys(str(n) for n in names)
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    return sorted(unique, key=lambda s: (rank.get(s, len(rank)), s))


def label_groups(cat: Catalog) -> dict[str, np.ndarray]:
    """Entries per label group: each class (binary, multi-class) or each finding plus
    'no finding' (multi-label); one group 'all' without labels."""
    y = cat.labels
    if cat.task == "binary":
        names, label = cat.class_names, cat.label_names[0]
        if len(names) != 2 or names == ["0", "1"]:
            unnamed = label in ("0", "1")  # a MedMNIST-layout file dxkit does not know
            names = ["class 0", "class 1"] if unnamed else [f"{label} = 0", f"{label} = 1"]
        return {names[0]: np.flatnonzero(y[:, 0] < 0.5), names[1]: np.flatnonzero(y[:, 0] >= 0.5)}
    if cat.task == "multiclass":
        codes = y.argmax(axis=1)
        return {name: np.flatnonzero(codes == k) for k, name in enumerate(cat.class_names)}
    if cat.task == "multilabel":
        groups = {name: np.flatnonzero(y[:, k] >= 0.5) for k, name in enumerate(cat.label_names)}
        groups["no finding"] = np.flatnonzero((y < 0.5).all(axis=1))
        return groups
    return {"all": np.arange(len(cat.splits))}


def count_summary(cat: Catalog) -> dict[str, Any]:
    """Entries per split and per label group (count and share of the split)."""
    groups = label_groups(cat) if cat.labels.shape[1] else {}
    table = cat.table
    out: dict[str, Any] = {"item": cat.item, "total": len(cat.splits), "groups": list(groups)}
    splits = {}
    for split in ordered_splits(cat.splits):
        mask = cat.splits == split
        n = int(mask.sum())
        entry: dict[str, Any] = {"n": n}
        if groups:
            counts = {g: int(mask[idx].sum()) for g, idx in groups.items()}
            entry["labels"] = counts
            entry["share"] = {g: c / n for g, c in counts.items()}
        for column, key in (("StudyInstanceUID", "studies"), ("SeriesInstanceUID", "series")):
            if table is not None and column in table:
                entry[key] = int(table.loc[mask, column].nunique())
        splits[split] = entry
    out["splits"] = splits
    return out


def patient_summary(cat: Catalog, show_ids: bool, salt: str) -> dict[str, Any]:
    """Distinct patients (or exams) per split and every one found in more than one split.

    ``distinct`` counts ids, ``entries`` the scans (files, exams) that carry them. Shared ids
    appear hashed with ``salt`` unless ``show_ids``; other ids are never listed.
    """
    if cat.groups is None:
        return {"checked": False, "kind": cat.group_kind}
    names = ordered_splits(cat.splits)
    members = {s: cat.groups[cat.splits == s] for s in names}
    per_split = {s: {"distinct": len(set(ids)), "entries": len(ids)} for s, ids in members.items()}
    pairs, overlapping = [], set()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = list(set(members[a]) & set(members[b]))
            if shared:
                overlapping.update(shared)
                entries = {s: int(np.isin(members[s], shared).sum()) for s in (a, b)}
                pairs.append({"splits": [a, b], "distinct": len(shared), "entries": entries})
    ids = sorted(overlapping) if show_ids else sorted(hash_id(v, salt) for v in overlapping)
    return {
        "checked": len(names) > 1,
        "kind": cat.group_kind,
        "total": len(set(cat.groups)),
        "per_split": per_split,
        "overlap": {
            "distinct": len(overlapping),
            "entries": int(np.isin(cat.groups, list(overlapping)).sum()),
            "pairs": pairs,
            "shared_ids": ids[:100],
            "shared_ids_are": "as in the source (--show-ids)" if show_ids else "hashed",
        },
    }


def duplicate_summary(cat: Catalog) -> dict[str, Any]:
    """Identical contents (pixels, files or SOP instances) within and across splits."""
    if cat.fingerprints is None:
        return {"checked": False}
    frame = pd.DataFrame({"key": cat.fingerprints(), "split": cat.splits})
    within = int(frame.duplicated(["key", "split"]).sum())
    where = frame.groupby("key")["split"].agg(frozenset)
    across = where[where.map(len) > 1]
    names = ordered_splits(cat.splits)
    pairs = [
        {"splits": [a, b], "contents": int(sum(a in s and b in s for s in across))}
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    return {
        "checked": True,
        "by": cat.fingerprint_by,
        "within_splits": within,
        "across_splits": len(across),
        "pairs": [p for p in pairs if p["contents"]],
    }


def cooccurrence(cat: Catalog) -> dict[str, Any] | None:
    """How often each pair of findings is positive together (multi-label only)."""
    if cat.task != "multilabel":
        return None
    y = (cat.labels >= 0.5).astype(np.int64)
    return {"labels": cat.label_names, "matrix": (y.T @ y).tolist(), "n": len(y)}


def slice_summary(cat: Catalog) -> dict[str, Any]:
    """Slices per series (per plane for MRNet): the distribution and its range."""
    out = {}
    for plane, counts in cat.slices.items():
        if not counts:
            continue
        values, freq = np.unique(np.asarray(counts), return_counts=True)
        out[plane] = {
            "series": len(counts),
            "min": int(values[0]),
            "median": float(np.median(counts)),
            "max": int(values[-1]),
            "counts": {str(int(v)): int(f) for v, f in zip(values, freq, strict=True)},
        }
    return out


def _plane_name(value: Any) -> str | None:
    """The plane a slice normal points along, for counting orientations in a table.

    Not ``dxkit.data.exam.plane_from_orientation`` (the validating version) because that
    module imports torch: seconds and hundreds of MB for a table summary.
    """
    try:
        iop = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    if iop.shape != (6,) or not np.isfinite(iop).all():
        return None
    normal = np.abs(np.cross(iop[:3], iop[3:]))
    return ("sagittal", "coronal", "axial")[int(np.argmax(normal))] if normal.max() > 0 else None


def _category(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def metadata_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The showable columns: no identity, no ids/UIDs/paths; orientation as a plane, spacing
    as text, multi-valued tags by their first value, rows × columns as one matrix size."""
    out = {}
    for column in table.columns:
        if is_identifier_column(str(column)) or phi_columns([str(column)]):
            continue
        col = table[column]
        listy = col.map(lambda v: isinstance(v, list | tuple | np.ndarray))
        if column == "ImageOrientationPatient":
            out["plane"] = col.map(_plane_name)
        elif column == "PixelSpacing":
            out[column] = col.map(
                lambda v: None if v is None else " × ".join(f"{float(x):g}" for x in v)
            )
        elif listy.any():
            out[column] = col.map(_first)
        else:
            out[column] = col
    frame = pd.DataFrame(out, index=table.index)
    if {"Rows", "Columns"} <= set(frame.columns):
        rows, cols = frame.pop("Rows"), frame.pop("Columns")
        frame["matrix"] = [
            None if pd.isna(r) else f"{int(r)}×{int(c)}" for r, c in zip(rows, cols, strict=True)
        ]
    return frame


def metadata_summary(table: pd.DataFrame, top: int = 12) -> dict[str, Any]:
    """Per column: value counts (categorical) or summary statistics and a histogram
    (numeric with many values); free-text columns with mostly unique values are skipped."""
    columns, skipped = {}, []
    for column, col in metadata_columns(table).items():
        values = col.dropna()
        values = values[values.astype(str) != ""]
        missing = len(col) - len(values)
        if values.empty:
            continue
        numeric = pd.to_numeric(values, errors="coerce") if values.dtype != bool else None
        unique = values.astype(str).nunique()
        if numeric is not None and numeric.notna().all() and unique > top:
            x = numeric.to_numpy(dtype=np.float64)
            counts, edges = np.histogram(x, bins=20)
            columns[column] = {
                "kind": "numeric",
                "n": len(x),
                "missing": missing,
                "min": float(x.min()),
                "median": float(np.median(x)),
                "mean": float(x.mean()),
                "max": float(x.max()),
                "edges": edges.tolist(),
                "counts": counts.tolist(),
            }
            continue
        if unique > 20 and unique > 0.5 * len(values):
            skipped.append(str(column))
            continue
        freq = values.map(_category).value_counts()
        shown = {str(k): int(v) for k, v in freq.head(top).items()}
        if len(freq) > top:
            shown[f"other ({len(freq) - top} values)"] = int(freq.iloc[top:].sum())
        if missing:
            shown["missing"] = missing
        columns[column] = {"kind": "categorical", "n": len(col), "counts": shown}
    return {"columns": columns, "skipped_free_text": skipped}


def _pixels(values: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float32).ravel()
    return flat[rng.integers(0, flat.size, cap)] if flat.size > cap else flat


def intensity_summary(samples: dict[str, list[tuple[int, Scan]]]) -> dict[str, Any]:
    """A histogram and statistics of the sampled intensities per label group: fixed HU bins
    for CT, 4-value bins for 0-255 data, 64 bins between the 0.5 and 99.5 percentiles else."""
    pooled = {
        g: np.concatenate([s.values for _, s in scans]) for g, scans in samples.items() if scans
    }
    if not pooled:
        return {}
    units = {s.unit for scans in samples.values() for _, s in scans}
    unit = units.pop() if len(units) == 1 else "mixed units"
    if unit == UNIT_HU:
        edges = HU_EDGES
    elif unit == UNIT_8BIT:
        edges = UINT8_EDGES
    else:
        lo, hi = np.percentile(np.concatenate(list(pooled.values())), [0.5, 99.5])
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 65)
    groups = {}
    for g, x in pooled.items():
        counts, _ = np.histogram(x, edges)
        p1, p50, p99 = np.percentile(x, [1, 50, 99])
        groups[g] = {
            "images": len(samples[g]),
            "pixels": int(x.size),
            "mean": float(x.mean()),
            "std": float(x.std()),
            "p1": float(p1),
            "median": float(p50),
            "p99": float(p99),
            "below": int((x < edges[0]).sum()),
            "above": int((x > edges[-1]).sum()),
            "counts": counts.tolist(),
        }
    return {"unit": unit, "edges": np.asarray(edges).tolist(), "groups": groups}


# --------------------------------------------------------------------------- the whole page


@dataclass
class Exploration:
    """Every number of the explorer page (``summary``, JSON-ready) and its example tiles
    (``montage``: label group → list of (uint8 tile, split name))."""

    summary: dict[str, Any]
    montage: dict[str, list[tuple[np.ndarray, str]]]


def _read_samples(
    cat: Catalog,
    groups: dict[str, np.ndarray],
    max_images: int,
    pixel_cap: int,
    rng: np.random.Generator,
) -> tuple[dict[str, list[tuple[int, Scan]]], dict[int, Scan | None]]:
    """At most ``max_images`` scans in all, shared evenly among the groups, read once each;
    intensities are kept as a ``pixel_cap`` sample per scan."""
    per_group = max(1, max_images // max(1, len(groups)))
    cache: dict[int, Scan | None] = {}
    out: dict[str, list[tuple[int, Scan]]] = {}
    for group, idx in groups.items():
        picked = rng.choice(idx, size=min(len(idx), per_group), replace=False) if len(idx) else idx
        scans = []
        for i in map(int, picked):
            if i not in cache:
                try:
                    got = cat.read(i)
                    cache[i] = Scan(
                        _pixels(got.values, pixel_cap, rng), got.unit, got.view, got.meta
                    )
                except DxkitError as err:
                    log.warning("explore: %s", err)
                    cache[i] = None
            if (scan := cache[i]) is not None:
                scans.append((i, scan))
        out[group] = scans
    return out, cache


def explore_source(
    source: Path | str,
    kind: str | None = None,
    *,
    csv: Path | None = None,
    root: Path | None = None,
    max_images: int = 200,
    per_label: int = 6,
    pixels_per_image: int = 65_536,
    show_ids: bool = False,
    salt: str | None = None,
    seed: int = 0,
) -> Exploration:
    """Summarise a data source for the explorer page (see the module docstring).

    ``kind`` is detected from the path when None; ``csv`` names a labelled folder's CSV,
    ``root`` the folder a DICOM table's ``file`` paths are relative to. At most
    ``max_images`` scans are read (``pixels_per_image`` intensities kept from each) and
    ``per_label`` of them per label group are shown. Patient ids are hashed with ``salt``
    (a random one per run when None) unless ``show_ids``.
    """
    source = Path(source)
    kind = kind or detect_kind(source)
    if kind not in KINDS:
        raise ConfigError(f"unknown source kind {kind!r}; use one of {', '.join(KINDS)}")
    for name, value in (
        ("max_images", max_images),
        ("per_label", per_label),
        ("pixels_per_image", pixels_per_image),
    ):
        if value < 1:
            raise ConfigError(f"{name} = {value}; it must be at least 1")
    if not source.exists():
        raise MissingFileError(f"{source}: no such file or folder; check the path")
    if kind == "medmnist":
        cat = medmnist_catalog(source)
    elif kind == "folder":
        cat = folder_catalog(source, None if csv is None else Path(csv))
    elif kind == "dicom-table":
        cat = dicom_table_catalog(source, root)
    else:
        cat = mrnet_catalog(source)
    rng = np.random.default_rng(seed)
    groups = cat.display if cat.display is not None else label_groups(cat)
    samples, cache = _read_samples(cat, groups, max_images, pixels_per_image, rng)
    notes = list(cat.notes)
    failed = sum(s is None for s in cache.values())
    if failed:
        notes.append(f"{failed} of {len(cache)} sampled {cat.item}s could not be read (see log)")
    metadata = None
    if cat.table is not None:
        metadata = {
            "from": f"all {len(cat.table)} rows of the table",
            **metadata_summary(cat.table),
        }
    elif metas := [s.meta for s in cache.values() if s is not None and s.meta]:
        metadata = {"from": f"{len(metas)} sampled files", **metadata_summary(pd.DataFrame(metas))}
    montage = {
        g: [(s.view, str(cat.splits[i])) for i, s in scans[:per_label]]
        for g, scans in samples.items()
        if scans
    }
    summary = {
        "title": f"Dataset explorer: {cat.name}",
        "source": {
            "kind": cat.kind,
            "name": cat.name,
            "path": str(source),
            "item": cat.item,
            "task": cat.task,
            "label_names": cat.label_names,
            "class_names": cat.class_names,
            "splits": ordered_splits(cat.splits),
        },
        "counts": count_summary(cat),
        "patients": patient_summary(cat, show_ids, salt or secrets.token_hex(16)),
        "duplicates": duplicate_summary(cat),
        "cooccurrence": cooccurrence(cat),
        "slices_per_series": slice_summary(cat),
        "intensity": intensity_summary(samples),
        "metadata": metadata,
        "examples": {g: {"shown": len(t), "splits": [s for _, s in t]} for g, t in montage.items()},
        "sampling": {
            "max_images": max_images,
            "read": len(cache),
            "unreadable": failed,
            "pixels_per_image": pixels_per_image,
            "seed": seed,
        },
        "privacy": {
            "refused_columns": cat.refused,
            "ids": "shown (--show-ids)"
            if show_ids
            else ("hashed with the given salt" if salt else "hashed, random salt not stored"),
        },
        "notes": notes,
        "dxkit_version": dxkit.__version__,
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return Exploration(json_safe(summary), montage)
