"""A metadata table of a DICOM tree: one row per file, no patient identity by default.

Identifiers (PatientID and the study/series/instance UIDs) are replaced by keyed
pseudonyms (``data.pseudonyms``: HMAC-SHA256 under the project's key file, created once,
mode 0600, beside the table unless another is given). The
other identifying tags (names, dates, institution, accession number: ``PHI_KEYWORDS``)
are not exported at all. ``keep_phi=True`` is the only way to get both in clear.

``build_dicom_table`` scans a folder in parallel worker processes, writes finished chunks
as Parquet parts beside the output (so an interrupted run resumes where it stopped) and
collects unreadable files with their reason into an errors table instead of stopping.
``ResumableParts`` is that part-file mechanism, shared with the RSNA slice cache.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dxkit.data.pseudonyms import hash_id, output_salt
from dxkit.errors import DxkitError, MissingFileError
from dxkit.io.dicom import (
    META_KEYWORDS,
    PHI_KEYWORDS,
    check_pixel_data,
    dataset_meta,
    decode_dataset,
    open_dataset,
    slice_position,
)
from dxkit.preprocess.clean import brain_share

logger = logging.getLogger(__name__)

ID_KEYWORDS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
LIST_KEYWORDS = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "WindowCenter",
    "WindowWidth",
)
ProgressFn = Callable[[int], None]


# Sidecar files that sit beside DICOM exports and are certainly not DICOM.
SIDECAR_SUFFIXES = frozenset(
    {".csv", ".tsv", ".json", ".txt", ".md", ".parquet", ".xml", ".html", ".yaml", ".yml"}
    | {".log", ".py", ".png", ".jpg", ".jpeg", ".npy", ".npz"}
)


def list_files(root: Path | str) -> list[Path]:
    """Every candidate DICOM file below ``root``, sorted.

    DICOM files often have no suffix, so everything counts except hidden files and known
    sidecars (CSV, JSON, images...); a non-DICOM file named ``.dcm`` is reported later.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: no such folder of DICOM files; check the path")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() not in SIDECAR_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _row(path: Path, root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """One table row for ``path`` (raises a ``DxkitError`` when the file is unusable)."""
    ds = open_dataset(path)
    if options["pixel_stats"]:
        image = decode_dataset(ds, path)
        meta = image.meta
        hu = image.pixels
        meta.update(
            pixel_min=float(hu.min()),
            pixel_max=float(hu.max()),
            pixel_mean=float(hu.mean()),
            pixel_std=float(hu.std()),
            brain_share=brain_share(hu),
        )
    else:
        meta = dataset_meta(ds)
        check_pixel_data(ds, path)
    row: dict[str, Any] = {"file": path.relative_to(root).as_posix()}
    for kw in (*META_KEYWORDS, "TransferSyntaxUID"):
        value = meta.get(kw)
        if kw in LIST_KEYWORDS:
            value = None if value is None else [float(v) for v in np.atleast_1d(value)]
        row[kw] = value
    row["slice_position"] = slice_position(meta)
    for key in ("hu_repaired", "rescale_missing", *_STAT_COLUMNS):
        if key in meta:
            row[key] = meta[key]
    if not options["keep_phi"]:
        for kw in ID_KEYWORDS:
            if row.get(kw) is not None:
                row[kw] = hash_id(str(row[kw]), options["salt"])
    else:
        for kw, value in dataset_meta(ds, PHI_KEYWORDS).items():
            row[kw] = str(value)
    return row


_STAT_COLUMNS = ("pixel_min", "pixel_max", "pixel_mean", "pixel_std", "brain_share")


def _rows_for_chunk(
    paths: Sequence[Path], root: Path, options: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Worker task: rows for readable files, (file, error, reason) for the others."""
    rows, errors = [], []
    for path in paths:
        try:
            rows.append(_row(path, root, options))
        except (DxkitError, OSError) as exc:
            errors.append(error_row(path.relative_to(root).as_posix(), exc))
    return rows, errors


def error_row(file: str, exc: BaseException) -> dict[str, str]:
    """An errors-table row: the file, the error class and its message."""
    return {"file": file, "error": type(exc).__name__, "reason": str(exc)}


class ResumableParts:
    """Chunked Parquet parts beside ``out`` that survive interruption and merge at the end.

    Each finished chunk is written to a temporary name and renamed, so a part is either
    complete or absent. ``done()`` lists keys already in ``out`` or in parts.
    """

    def __init__(self, out: Path, key: str = "file") -> None:
        self.out = Path(out)
        self.key = key
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.errors_out = errors_path(self.out)

    def _frames(self, kind: str) -> list[pd.DataFrame]:
        frames = []
        if kind == "rows" and self.out.exists():
            frames.append(pd.read_parquet(self.out))
        if self.parts.is_dir():
            frames += [pd.read_parquet(p) for p in sorted(self.parts.glob(f"{kind}-*.parquet"))]
        return frames

    def done(self) -> set[str]:
        return {k for frame in self._frames("rows") for k in frame[self.key].astype(str)}

    def write(self, rows: list[dict[str, Any]], errors: list[dict[str, str]]) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        stamp = f"{os.getpid()}-{len(os.listdir(self.parts)):06d}"
        for kind, records in (("rows", rows), ("errors", errors)):
            if records:
                atomic_parquet(
                    pd.DataFrame.from_records(records), self.parts / f"{kind}-{stamp}.parquet"
                )

    def finalize(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Merge everything into ``out`` (+ the errors table) and remove the parts folder."""
        frames = [f for f in self._frames("rows") if len(f)]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({self.key: []})
        table = table.drop_duplicates(self.key, keep="last").sort_values(self.key)
        done = set(table[self.key].astype(str))
        err_frames = [f for f in self._frames("errors") if len(f)]
        errors = (
            pd.concat(err_frames, ignore_index=True)
            if err_frames
            else pd.DataFrame({"file": [], "error": [], "reason": []})
        )
        errors = errors[~errors["file"].isin(done)].drop_duplicates("file", keep="last")
        atomic_parquet(table.reset_index(drop=True), self.out)
        atomic_parquet(errors.sort_values("file").reset_index(drop=True), self.errors_out)
        shutil.rmtree(self.parts, ignore_errors=True)
        return table.reset_index(drop=True), errors.reset_index(drop=True)


def errors_path(out: Path) -> Path:
    """Where the errors table of ``out`` goes: ``meta.parquet`` → ``meta.errors.parquet``."""
    return out.with_name(out.stem + ".errors.parquet")


def atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write Parquet to a temporary name, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class TableResult:
    """The merged table, its errors, and how many files this run read vs. found done."""

    table: pd.DataFrame
    errors: pd.DataFrame
    processed: int
    skipped: int
    out: Path


def run_chunks(
    task: Callable[..., tuple[list[dict[str, Any]], list[dict[str, str]]]],
    chunks: Iterable[Sequence[Any]],
    args: tuple[Any, ...],
    parts: ResumableParts,
    workers: int,
    progress: ProgressFn | None,
    scheduler: str | None = None,
) -> None:
    """Run ``task(chunk, *args)`` in ``workers`` processes (1 = in-process), saving parts.

    ``progress`` receives the number of files each finished chunk handled. With
    ``scheduler`` (``local[:N]`` or ``tcp://...``) the chunks run as Dask tasks instead,
    each worker writing its own part (``dask_prepare.run_chunks_dask``).
    """
    if scheduler:
        from dxkit.data.dask_prepare import run_chunks_dask

        run_chunks_dask(task, chunks, args, parts, scheduler, progress)
        return
    if workers <= 1:
        for chunk in chunks:
            rows, errors = task(chunk, *args)
            parts.write(rows, errors)
            if progress:
                progress(len(rows) + len(errors))
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(task, chunk, *args) for chunk in chunks]
        for future in as_completed(pending):
            rows, errors = future.result()
            parts.write(rows, errors)
            if progress:
                progress(len(rows) + len(errors))


def build_dicom_table(
    root: Path | str,
    out: Path | str,
    *,
    workers: int = 1,
    keep_phi: bool = False,
    pixel_stats: bool = False,
    salt_file: Path | str | None = None,
    chunk_size: int = 32,
    progress: ProgressFn | None = None,
    total: Callable[[int], None] | None = None,
    scheduler: str | None = None,
) -> TableResult:
    """Scan ``root`` into ``out`` (Parquet) plus ``<out>.errors.parquet``; resumes a stopped run.

    Identifiers are pseudonymised with the key in ``salt_file`` (default: ``dxkit-salt.key``
    beside ``out``, created on first use) and other identity is left out, unless
    ``keep_phi``.

    ``total`` is called once with the number of files still to read (for progress bars).
    """
    root, out = Path(root), Path(out)
    files = list_files(root)
    parts = ResumableParts(out)
    done = parts.done()
    todo = [p for p in files if p.relative_to(root).as_posix() not in done]
    if total:
        total(len(todo))
    salt = output_salt(keep_phi, salt_file, out.parent)
    options = {"pixel_stats": pixel_stats, "keep_phi": keep_phi, "salt": salt}
    run_chunks(
        _rows_for_chunk,
        chunked(todo, chunk_size),
        (root, options),
        parts,
        workers,
        progress,
        scheduler,
    )
    table, errors = parts.finalize()
    logger.info("%d files in table, %d unreadable", len(table), len(errors))
    return TableResult(table, errors, processed=len(todo), skipped=len(files) - len(todo), out=out)
