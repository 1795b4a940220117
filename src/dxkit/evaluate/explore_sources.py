"""One ``Catalog`` per source kind: MedMNIST ``.npz``, labelled folder, DICOM metadata
table (``dxkit prepare dicom``) or MRNet root; ``detect_kind`` tells them apart by path.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dxkit.errors import DataSourceError, MissingFileError, UnsupportedFormatError
from dxkit.evaluate.explore_catalog import (
    UNIT_8BIT,
    Catalog,
    Scan,
    file_digest,
    plane_image,
    read_dicom_scan,
    read_file_scan,
    view_tile,
)
from dxkit.evaluate.explore_privacy import phi_columns

KINDS: tuple[str, ...] = ("medmnist", "folder", "dicom-table", "mrnet", "siim")
FILE_HASH_LIMIT = 10_000  # hash file contents for the duplicate check up to this many files


def detect_kind(path: Path, csv: Path | None = None) -> str:
    """The source kind from the path: ``.npz`` → medmnist, ``.parquet`` → dicom-table, a
    folder with ``train/axial`` (or ``valid/axial``) → mrnet, a folder with an
    ``ImageId,EncodedPixels`` CSV → siim, a folder with another CSV (or class folders, or
    a folder given with ``csv``) → folder."""
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
    if csv is not None:
        from dxkit.evaluate.explore_siim import is_rle_csv

        return "siim" if is_rle_csv(Path(csv)) else "folder"
    csvs = list(path.glob("*.csv"))
    if csvs:
        from dxkit.evaluate.explore_siim import is_rle_csv

        return "siim" if any(is_rle_csv(c) for c in csvs) else "folder"
    from dxkit.data.sources.folder_layouts import class_folder_table

    if class_folder_table(path) is not None:
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
        return Scan(array, UNIT_8BIT, view_tile(plane_image(array), UNIT_8BIT))

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

    table, csv = fs.label_table(root, csv, "auto", None, None)  # CSV, ids or class folders
    if table.empty:
        raise DataSourceError(f"{csv}: no scans listed; add one row per scan")
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
        return np.array([file_digest(p) for p in paths])

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
