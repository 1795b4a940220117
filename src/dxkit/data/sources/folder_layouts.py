"""The label tables of common folder layouts, so nobody writes a CSV by hand.

- **class folders**: ``root/{class}/...`` or ``root/{split}/{class}/...`` (splits named
  train / val / valid / validation / test); the folder name is the class, files may sit in
  deeper sub-folders (a patient folder, a DICOM series).
- **id column + path pattern**: a CSV with an ``id`` column instead of paths; the pattern
  (``{id}.png``, ``images/{id:03d}.png``) turns each id into the file's path. Without a
  pattern the first id's file is looked up and the pattern guessed from it.

Both produce the table ``folder.py`` reads (``path``, labels, ``split``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from dxkit.errors import DataSourceError
from dxkit.io import SCAN_SUFFIXES

SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
ID_COLUMN_NAMES = ("id", "image_id", "imageid", "image", "filename", "file", "name", "study_id")
SCAN_FILE_SUFFIXES = frozenset(s for s in SCAN_SUFFIXES if s != ".npz")


def is_scan_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SCAN_FILE_SUFFIXES


def _scans_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_scan_file(p) and not p.name.startswith("."))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folders(root: Path) -> dict[str, Path]:
    """``{canonical split: folder}`` for the split-named sub-folders of ``root``."""
    return {
        SPLIT_FOLDERS[p.name.lower()]: p
        for p in _subfolders(root)
        if p.name.lower() in SPLIT_FOLDERS
    }


def class_folder_table(root: Path) -> pd.DataFrame | None:
    """``path, label[, split]`` for a class-folder layout, None when ``root`` is not one.

    With split folders every split must hold class folders; a class folder must hold scans.
    """
    splits = split_folders(root)
    rows: list[dict[str, str]] = []
    if splits:
        for split, folder in splits.items():
            for cls in _subfolders(folder):
                rows += [
                    {"path": str(p.relative_to(root)), "label": cls.name, "split": split}
                    for p in _scans_under(cls)
                ]
    else:
        for cls in _subfolders(root):
            rows += [
                {"path": str(p.relative_to(root)), "label": cls.name} for p in _scans_under(cls)
            ]
    if not rows:
        return None
    table = pd.DataFrame(rows)
    if table["label"].nunique() < 2:
        return None
    return table


def _format(pattern: str, value: str) -> str:
    try:
        return pattern.format(id=int(value) if re.search(r"\{id:[^}]*d\}", pattern) else value)
    except (ValueError, KeyError, IndexError) as err:
        raise DataSourceError(
            f"data.path_pattern {pattern!r} cannot format id {value!r} ({err}); write it like "
            "'{id}.png' or 'images/{id:03d}.png'"
        ) from None


def guess_path_pattern(root: Path, first_id: str) -> str | None:
    """A pattern that finds ``first_id``'s file under ``root``: ``{id}.png``, ``{id:03d}.png``..."""
    candidates = [p for p in root.rglob("*") if is_scan_file(p)]
    for p in candidates:
        if p.stem == first_id:
            return str(p.relative_to(root).with_name("{id}" + p.suffix))
    if first_id.isdigit():
        for p in candidates:
            if p.stem.isdigit() and int(p.stem) == int(first_id) and p.stem.startswith("0"):
                width = len(p.stem)
                return str(p.relative_to(root).with_name(f"{{id:0{width}d}}{p.suffix}"))
    return None


def id_pattern_table(
    root: Path, csv: Path, table: pd.DataFrame, id_column: str, pattern: str | None
) -> tuple[pd.DataFrame, str]:
    """``table`` with a ``path`` column built from ``id_column`` (which is dropped)."""
    if id_column not in table.columns:
        raise DataSourceError(
            f"{csv}: no '{id_column}' column (header: {', '.join(table.columns)}); set "
            "data.id_column to the column that names each scan"
        )
    ids = table[id_column].astype(str).tolist()
    if pattern is None:
        pattern = guess_path_pattern(root, ids[0]) if ids else None
        if pattern is None:
            raise DataSourceError(
                f"{csv}: no scan file named after the first id {ids[0]!r} under {root}; set "
                "data.path_pattern, e.g. '{id}.png' or 'images/{id:03d}.png'"
            )
    out = table.drop(columns=[id_column])
    out.insert(0, "path", [_format(pattern, v) for v in ids])
    missing = [p for p in out["path"] if not (root / p).is_file()]
    if missing:
        raise DataSourceError(
            f"{csv}: data.path_pattern {pattern!r} names {len(missing)} of {len(ids)} scans "
            f"that do not exist under {root} (first: {missing[0]}); fix the pattern, e.g. "
            "'{id}.png' or 'images/{id:03d}.png'"
        )
    return out, pattern


def find_id_column(root: Path, table: pd.DataFrame) -> tuple[str | None, str | None]:
    """The column whose first value names a scan file under ``root``, and its pattern.

    Columns named like ids (``id``, ``image_id``, ``filename``...) are tried first; 0/1
    columns are never taken for ids (``0`` would match ``000.png``)."""
    named = [c for c in table.columns if str(c).lower() in ID_COLUMN_NAMES]
    rest = [c for c in table.columns if c not in named]
    for column in named + rest:
        values = table[column].astype(str)
        if values.empty or (column in rest and set(values) <= {"0", "1"}):
            continue
        pattern = guess_path_pattern(root, values.iloc[0])
        if pattern is not None:
            return str(column), pattern
    return None, None
