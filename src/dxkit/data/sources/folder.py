"""A labelled folder: scans (PNG/JPEG/DICOM/npy) plus a CSV that says what each one shows.

The CSV has a header and one row per scan: ``path`` (relative to the folder), one or more
label columns, and optionally ``patient_id`` (splits are then made by patient) and
``split`` (``train``/``val``/``test``, used as given). The task follows from the labels:

- one column of 0/1 → binary;
- one column of class names, or of integers with more than two values → multi-class
  (classes sorted);
- several columns of 0/1 → multi-label (one finding per column).

Scans are only listed here and read later by ``dxkit.io.read_scan``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dxkit.data.scan_survey import survey_scans
from dxkit.data.source import InputKind, LabelledSet, SourceData, Task
from dxkit.data.sources.folder_layouts import (
    class_folder_table,
    find_id_column,
    id_pattern_table,
)
from dxkit.data.splits import check_no_leakage, split_indices
from dxkit.errors import DataSourceError, MissingFileError

log = logging.getLogger(__name__)

PATH_COLUMN = "path"
GROUP_COLUMN = "patient_id"
SPLIT_COLUMN = "split"
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
DEFAULT_CSV = "labels.csv"
FolderLayout = Literal["auto", "csv", "class_folders"]


def find_label_csv(root: Path) -> Path:
    """``labels.csv`` in ``root``, else the only CSV there."""
    default = root / DEFAULT_CSV
    if default.is_file():
        return default
    found = sorted(root.glob("*.csv"))
    if len(found) == 1:
        return found[0]
    listed = ", ".join(p.name for p in found) or "none"
    raise MissingFileError(
        f"{root}: no {DEFAULT_CSV} and {len(found)} other CSV files ({listed}); "
        f"name the label file with csv=... (data.csv in a config), or sort the scans into "
        f"class folders ({root}/<class>/...); `dxkit init {root}` shows what it finds"
    )


def _read_table(csv: Path, need_path: bool = True) -> pd.DataFrame:
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataSourceError(
            f"{csv}: the file is empty; write a header line such as 'path,label' and one "
            "row per scan"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataSourceError(f"{csv}: not a readable CSV ({err}); save it as UTF-8 CSV") from None
    table.columns = [str(c).strip().lstrip("\ufeff") for c in table.columns]
    if need_path and PATH_COLUMN not in table.columns:
        raise DataSourceError(
            f"{csv}: no '{PATH_COLUMN}' column (header: {', '.join(table.columns)}); the header "
            f"must be '{PATH_COLUMN},<label>[,<label2>...][,{GROUP_COLUMN}][,{SPLIT_COLUMN}]', "
            "or name the id column with data.id_column (and data.path_pattern)"
        )
    if table.empty:
        raise DataSourceError(f"{csv}: has a header but no rows; add one row per scan")
    return table.apply(lambda col: col.str.strip())


def label_table(
    root: Path,
    csv: Path | None,
    layout: FolderLayout,
    id_column: str | None,
    path_pattern: str | None,
) -> tuple[pd.DataFrame, Path]:
    """The ``path``/labels/split table of ``root`` and the file messages name.

    A CSV without a ``path`` column and without ``id_column`` has its id column guessed
    (``folder_layouts.find_id_column``) and says which in the log."""
    no_csv = csv is None and not any(root.glob("*.csv"))
    if layout == "class_folders" or (layout == "auto" and no_csv):
        table = class_folder_table(root)
        if table is not None:
            return table, root
        if layout == "class_folders":
            raise DataSourceError(
                f"{root}: no class folders with scans (expected {root}/<class>/... or "
                f"{root}/train/<class>/...); check data.path or use a label CSV"
            )
    csv = find_label_csv(root) if csv is None else Path(csv)
    if not csv.is_file():
        raise MissingFileError(f"{csv}: label CSV not found; give its path (data.csv)")
    table = _read_table(csv, need_path=False)
    if id_column is None and PATH_COLUMN not in table.columns:
        id_column, path_pattern = find_id_column(root, table)
        if id_column is None:
            _read_table(csv)  # raises the no-'path'-column error
        log.info("%s: scans named by column %r as %s", csv, id_column, path_pattern)
    if id_column is not None:
        table, _ = id_pattern_table(root, csv, table, id_column, path_pattern)
    return table, csv


def _row(i: int) -> int:
    """The line number of data row ``i`` in the file (header is line 1)."""
    return i + 2


def _as_numbers(csv: Path, table: pd.DataFrame, column: str) -> np.ndarray | None:
    """The column as floats, None when it is all non-numeric, an error when it is mixed."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.all():
        return None
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataSourceError(
            f"{csv}: row {_row(i)}, column '{column}' = {table[column].iloc[i]!r} is not a "
            "number while other rows are; use 0/1 (or class ids) throughout, or class names "
            "throughout"
        )
    return values.to_numpy(dtype=np.float64)


def _check_binary(csv: Path, column: str, values: np.ndarray) -> None:
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataSourceError(
            f"{csv}: row {_row(i)}, column '{column}' = {values[i]:g}; with several label "
            "columns every label must be 0 or 1 (one column per finding)"
        )


def parse_labels(csv: Path, table: pd.DataFrame) -> tuple[np.ndarray, list[str], Task, list[str]]:
    """Labels ``(N, L)`` float32, label names, task and class names from the label columns."""
    columns = [c for c in table.columns if c not in (PATH_COLUMN, GROUP_COLUMN, SPLIT_COLUMN)]
    if not columns:
        raise DataSourceError(
            f"{csv}: no label column (header: {', '.join(table.columns)}); add one, e.g. "
            f"'{PATH_COLUMN},label'"
        )
    for column in columns:
        empty = (table[column] == "").to_numpy()
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise DataSourceError(
                f"{csv}: row {_row(i)} has no value in label column '{column}'; fill it in "
                "or drop the row"
            )
    if len(columns) > 1:
        numbers = []
        for column in columns:
            values = _as_numbers(csv, table, column)
            if values is None:
                raise DataSourceError(
                    f"{csv}: row {_row(0)}, column '{column}' = {table[column].iloc[0]!r}; "
                    "with several label columns each must hold 0 or 1"
                )
            _check_binary(csv, column, values)
            numbers.append(values)
        labels = np.stack(numbers, axis=1).astype(np.float32)
        return labels, columns, "multilabel", columns

    column = columns[0]
    values = _as_numbers(csv, table, column)
    if values is not None and np.isin(values, (0.0, 1.0)).all():
        if len(np.unique(values)) < 2:
            log.warning("%s: every scan has %s = %g; nothing to tell apart", csv, column, values[0])
        return values[:, None].astype(np.float32), [column], "binary", ["0", "1"]
    if values is not None:
        bad = values != np.round(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataSourceError(
                f"{csv}: row {_row(i)}, column '{column}' = {values[i]:g} is neither 0/1 nor "
                "a whole class id; use 0/1 for a binary finding or integer/named classes"
            )
        classes = np.unique(values.astype(np.int64))
        names = [str(c) for c in classes]
        codes = np.searchsorted(classes, values.astype(np.int64))
    else:
        raw = table[column].to_numpy(dtype=str)
        names = sorted(set(raw.tolist()))
        codes = np.searchsorted(np.array(names), raw)
    if len(names) < 2:
        raise DataSourceError(
            f"{csv}: column '{column}' has a single class {names[0]!r}; a classifier needs "
            "at least two"
        )
    labels = np.eye(len(names), dtype=np.float32)[codes]
    return labels, names, "multiclass", names


def _resolve_paths(csv: Path, root: Path, table: pd.DataFrame) -> list[Path]:
    rel = table[PATH_COLUMN]
    empty = (rel == "").to_numpy()
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise DataSourceError(f"{csv}: row {_row(i)} has an empty '{PATH_COLUMN}'; fill it in")
    paths = [root / p for p in rel]
    missing = [(i, p) for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        shown = ", ".join(f"row {_row(i)}: {rel.iloc[i]}" for i, _ in missing[:5])
        raise DataSourceError(
            f"{csv}: {len(missing)} of {len(paths)} listed scans do not exist under {root} "
            f"({shown}{', ...' if len(missing) > 5 else ''}); paths are relative to the "
            "folder — fix the CSV or add the files"
        )
    return paths


def _given_splits(csv: Path, table: pd.DataFrame) -> dict[str, np.ndarray]:
    raw = table[SPLIT_COLUMN].str.lower()
    unknown = ~raw.isin(list(SPLIT_NAMES)).to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise DataSourceError(
            f"{csv}: row {_row(i)}, column '{SPLIT_COLUMN}' = {table[SPLIT_COLUMN].iloc[i]!r}; "
            "use train, val or test (or drop the column to let dxkit split)"
        )
    canonical = raw.map(SPLIT_NAMES).to_numpy()
    return {s: np.flatnonzero(canonical == s) for s in ("train", "val", "test")}


def load_folder(
    root: Path,
    csv: Path | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    input_kind: InputKind = "uint8",
    layout: FolderLayout = "auto",
    id_column: str | None = None,
    path_pattern: str | None = None,
) -> SourceData:
    """A labelled folder of scans as ``SourceData`` (items are ``Path``s, read lazily).

    Without a ``split`` column the scans are split by patient (when ``patient_id`` is
    given) and stratified on the first label, reproducibly for ``seed``. ``layout``
    ``class_folders`` reads ``root/[split/]class/...`` without a CSV (``auto``: when the
    folder has no CSV); ``id_column`` + ``path_pattern`` read a CSV of ids instead of
    paths (``folder_layouts``). Every scan's header is read (``scan_survey``) to choose the
    size and channels from the whole folder, never from one file.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: no such folder; give the folder that holds the scans")
    table, csv = label_table(root, csv, layout, id_column, path_pattern)
    labels, label_names, task, class_names = parse_labels(csv, table)
    paths = _resolve_paths(csv, root, table)
    groups = table[GROUP_COLUMN].to_numpy(dtype=str) if GROUP_COLUMN in table.columns else None
    if groups is not None and (groups == "").any():
        i = int(np.flatnonzero(groups == "")[0])
        raise DataSourceError(
            f"{csv}: row {_row(i)} has an empty '{GROUP_COLUMN}'; fill it in or drop the column"
        )

    survey = survey_scans(paths, seed=seed)
    if groups is None and (groups := survey.dicom_groups()) is not None:
        log.info("%s: splitting by patient: the DICOM PatientIDs (hashed) group the scans", root)
    if SPLIT_COLUMN in table.columns:
        index = _given_splits(csv, table)
        if groups is not None:
            try:
                check_no_leakage(index, groups)
            except DataSourceError as err:
                raise DataSourceError(f"{csv}: {err}") from None
        if len(index["train"]) == 0:
            raise DataSourceError(f"{csv}: no row has split 'train'; mark the training scans")
    else:
        index = split_indices(
            len(paths), labels, groups, fractions=(val_fraction, test_fraction), seed=seed
        )

    rel = table[PATH_COLUMN].tolist()
    splits = {
        name: LabelledSet(
            items=[paths[i] for i in idx],
            labels=labels[idx],
            groups=None if groups is None else groups[idx],
            ids=[rel[i] for i in idx],
        )
        for name, idx in index.items()
        if len(idx) > 0
    }
    log.info(
        "%s: %d scans, task %s, labels %s, splits %s",
        csv,
        len(paths),
        task,
        label_names,
        {k: len(v) for k, v in splits.items()},
    )
    return SourceData(
        splits=splits,
        label_names=label_names,
        task=task,
        spatial_dims=2 if survey.spatial_dims == 2 else 3,
        in_chans=survey.in_chans,
        native_size=survey.default_size(),
        input_kind=input_kind,
        name=root.name,
        extra={
            "source": "folder",
            "csv": str(csv),
            "class_names": class_names,
            "size_range": survey.size_range,
            "channel_rule": survey.channel_rule(),
            "survey": survey,
        },
    )
