"""Find the scans a user named and keep going past the bad ones.

``dxkit predict`` and ``dxkit explain`` take files and folders (searched recursively). A
batch of a thousand scans must not be lost to one truncated file: ``discover`` turns the
arguments into units of work (a file, a DICOM series, an exam) and ``collect`` reads each
one, keeping what worked and a ``BadScan`` (source + one-line reason) for what did not.
``write_errors`` puts those into ``errors.csv`` beside the output. One module so every
model kind (classifier, segmenter, exam bundle) and the explainer behave the same.

Grouping follows what the model reads:

- ``file``: one scan per file (2-D classifiers, segmenters; ``.npy`` volumes).
- ``series``: DICOM files grouped by SeriesInstanceUID (3-D classifiers read a series as one
  volume); other files stay single.
- ``exam``: a folder holding ``axial.npy``/``coronal.npy``/``sagittal.npy`` is one exam;
  for DICOM, the smallest folder holding three series or more (flat or one sub-folder per
  series; SeriesInstanceUID from the headers) — ``data.sources.mrnet.load_exam_folder``
  reads it. Study UIDs are not used: anonymisers often reset them.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from dxkit.errors import DxkitError
from dxkit.io import SCAN_SUFFIXES, sniff_format

log = logging.getLogger(__name__)
Grouping = Literal["file", "series", "exam"]
T = TypeVar("T")
ERRORS_CSV = "errors.csv"
# What reading one bad file can raise: our errors, plus OS/decoder errors of the libraries
# underneath (Pillow's UnidentifiedImageError is an OSError, NumPy raises ValueError/EOFError).
READ_ERRORS: tuple[type[BaseException], ...] = (DxkitError, OSError, ValueError, EOFError)


@dataclass(frozen=True)
class ScanItem:
    """One unit of work: a file, the files of one DICOM series, or one exam folder."""

    source: str  # how outputs name it: the path as given or found
    paths: tuple[Path, ...]
    kind: Literal["file", "series", "exam"] = "file"


@dataclass(frozen=True)
class BadScan:
    """A scan that could not be used, and why (one line)."""

    source: str
    reason: str


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _is_scan(path: Path) -> bool:
    """A file worth trying: a known scan suffix, or a recognised header without one."""
    if path.suffix.lower() in SCAN_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        return sniff_format(path) is not None
    except OSError:
        return False


def _is_dicom(path: Path) -> bool:
    kind = SCAN_SUFFIXES.get(path.suffix.lower())
    if kind is not None:
        return kind == "dicom"
    try:
        return sniff_format(path) == "dicom"
    except OSError:
        return False


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p) and _is_scan(p))


def _header_uid(path: Path, keyword: str) -> str:
    from dxkit.io.dicom import open_dataset

    return str(open_dataset(path, stop_before_pixels=True).get(keyword) or f"file:{path}")


def _group_dicom(files: Iterable[Path], keyword: str, bad: list[BadScan]) -> dict[str, list[Path]]:
    """DICOM files by ``keyword`` (a UID) read from their headers; unreadable ones → ``bad``."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        try:
            groups[_header_uid(path, keyword)].append(path)
        except READ_ERRORS as err:
            bad.append(BadScan(str(path), str(err)))
    return groups


def _common_folder(paths: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def _series_items(files: list[Path], bad: list[BadScan]) -> list[ScanItem]:
    dicom = [p for p in files if _is_dicom(p)]
    items = [ScanItem(str(p), (p,)) for p in files if not _is_dicom(p)]
    groups = _group_dicom(dicom, "SeriesInstanceUID", bad)
    for paths in groups.values():
        folder = _common_folder(paths)
        # The folder names the series when it is the only one there, else its first file.
        shared = sum(1 for other in groups.values() if _common_folder(other) == folder) > 1
        source = str(paths[0]) if shared else str(folder)
        items.append(ScanItem(source, tuple(sorted(paths)), "series"))
    return items


def _dicom_exams(root: Path, files: list[Path], bad: list[BadScan]) -> list[ScanItem]:
    """Exam folders of DICOM files: the smallest folders holding three or more series (flat,
    or one folder per series below them). Files outside any such folder are reported."""
    uids = _group_dicom(files, "SeriesInstanceUID", bad)
    below: dict[Path, set[str]] = defaultdict(set)  # folder → series found under it
    for uid, paths in uids.items():
        for path in paths:
            for folder in path.parents:
                below[folder].add(uid)
                if folder == root:
                    break
    full = {f for f, found in below.items() if len(found) >= 3}
    exams = sorted(f for f in full if not any(g.parent == f for g in full))
    if not exams and uids:
        return [ScanItem(str(root), (root,), "exam")]  # the reader says what is missing
    items = [ScanItem(str(f), (f,), "exam") for f in exams]
    loose = sorted(
        {p.parent for paths in uids.values() for p in paths}
        - {f for f in below if any(f == e or e in f.parents for e in exams)}
    )
    for folder in loose:
        n = len(below[folder])
        bad.append(
            BadScan(str(folder), f"{n} DICOM series here, outside any exam; an exam needs three")
        )
    return items


def _exam_items(folder: Path, bad: list[BadScan]) -> list[ScanItem]:
    """Exam folders under ``folder``: ``.npy`` exam folders, then DICOM exams."""
    files = _files_under(folder)
    npy_folders = sorted({p.parent for p in files if p.suffix.lower() == ".npy"})
    items = [ScanItem(str(f), (f,), "exam") for f in npy_folders]
    dicom = [p for p in files if _is_dicom(p) and p.parent not in npy_folders]
    items += _dicom_exams(folder, dicom, bad)
    if not items and not bad:
        bad.append(
            BadScan(str(folder), "no exam here: no axial/coronal/sagittal .npy and no DICOM files")
        )
    return items


def discover(
    inputs: Sequence[str | Path], grouping: Grouping = "file"
) -> tuple[list[ScanItem], list[BadScan]]:
    """Units of work for ``inputs`` (files as given, folders searched recursively, hidden
    files skipped) and the inputs that are not usable at all (missing, empty folder)."""
    items: list[ScanItem] = []
    bad: list[BadScan] = []
    loose: list[Path] = []  # files named one by one; grouped together for ``series``
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            bad.append(BadScan(str(path), "no such file or folder; check the path"))
        elif path.is_dir():
            if grouping == "exam":
                items += _exam_items(path, bad)
                continue
            found = _files_under(path)
            if not found:
                bad.append(
                    BadScan(str(path), "no scan files (DICOM, .npy, PNG/JPEG) in this folder")
                )
            elif grouping == "series":
                items += _series_items(found, bad)
            else:
                items += [ScanItem(str(p), (p,)) for p in found]
        elif grouping == "exam":
            bad.append(
                BadScan(
                    str(path),
                    "is a file; an exam model takes exam folders (axial.npy, coronal.npy, "
                    "sagittal.npy or three DICOM series)",
                )
            )
        else:
            loose.append(path)
    if grouping == "series":
        items += _series_items(loose, bad)
    else:
        items += [ScanItem(str(p), (p,)) for p in loose]
    return items, bad


def collect(
    items: Sequence[ScanItem], read: Callable[[ScanItem], T]
) -> tuple[list[tuple[ScanItem, T]], list[BadScan]]:
    """``read`` each item; the ones that raise a reading error become ``BadScan``s."""
    good: list[tuple[ScanItem, T]] = []
    bad: list[BadScan] = []
    for item in items:
        try:
            good.append((item, read(item)))
        except READ_ERRORS as err:
            log.debug("skipping %s: %s", item.source, err)
            bad.append(BadScan(item.source, str(err) or type(err).__name__))
    return good, bad


def readable(
    items: Iterable[ScanItem], read: Callable[[ScanItem], T], bad: list[BadScan]
) -> Iterator[tuple[ScanItem, T]]:
    """``collect`` one item at a time (streaming: one scan in memory), appending to ``bad``."""
    for item in items:
        good, failed = collect([item], read)
        bad += failed
        yield from good


def read_volume(item: ScanItem) -> np.ndarray:
    """A ``file`` item → ``read_scan``; a ``series`` item → its slices in patient order as
    ``(1, D, H, W)`` (``io.dicom.read_series``: sorted along the slice normal)."""
    from dxkit.io import read_scan
    from dxkit.io.dicom import read_series

    if item.kind != "series":
        return read_scan(item.paths[0])
    (series,) = read_series(item.paths)
    return np.asarray(series.volume())[None]


def errors_path(out: Path) -> Path:
    """Where ``errors.csv`` goes: inside an output folder, beside an output file."""
    return out.parent / ERRORS_CSV if out.suffix else out / ERRORS_CSV


def write_errors(bad: Sequence[BadScan], out: Path) -> Path | None:
    """``errors.csv`` (``file,reason``) beside ``out``; returns its path. Without bad scans
    nothing is written and an ``errors.csv`` left there by an earlier run is removed."""
    path = errors_path(out)
    if not bad:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "reason"])
        for b in bad:
            writer.writerow([b.source, b.reason])
    return path
