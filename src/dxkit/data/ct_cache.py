"""Prepare head-CT DICOM slices into a training cache of uint8 window channels.

read → Hounsfield units (with the RSNA bad-intercept repair) → drop slices with too little
brain → crop to the head → windows → resize → one ``.npy`` ``(C, size, size)`` uint8 per
slice, plus ``index.parquet`` (one row per slice: ids, position, brain share, kept,
repaired, labels) and ``index.errors.parquet``. PatientID and the study/series UIDs are
stored as the project's keyed pseudonyms (``data.pseudonyms``, as in ``dxkit prepare
dicom``; enough to group splits by patient), in clear only with
``keep_phi``. Training then reads small arrays instead of decoding DICOM every epoch.

Every array is written to a temporary name and renamed, and index rows are saved per
finished chunk, so an interrupted run loses nothing and a rerun skips finished slices.
With ``context`` each slice is stacked with its neighbours (s−1, s, s+1) of the same
series, all cropped with the centre slice's box so they stay aligned.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from dxkit.data.dicom_table import (
    ProgressFn,
    ResumableParts,
    atomic_parquet,
    chunked,
    error_row,
    list_files,
    run_chunks,
)
from dxkit.data.pseudonyms import output_salt, pseudonymise
from dxkit.errors import ConfigError, DxkitError, InvalidScanError
from dxkit.io.dicom import DicomImage, dataset_meta, open_dataset, read_dicom, slice_position
from dxkit.preprocess.clean import DEFAULT_MIN_BRAIN_SHARE, brain_share
from dxkit.preprocess.context import neighbour_indices
from dxkit.preprocess.crop import Box, head_box
from dxkit.preprocess.ct_slice import Resize, ct_window_channels
from dxkit.preprocess.window import WindowSpec, resolve_window

logger = logging.getLogger(__name__)

DEFAULT_WINDOWS: tuple[str, ...] = ("brain", "subdural", "bone")
# Tags an index row needs (read_dicom adds those the pixels need): converting only these
# saves ~0.3 ms per file against the full metadata set.
CACHE_KEYWORDS: tuple[str, ...] = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)


@dataclass(frozen=True)
class CacheRecipe:
    """What a cached slice is: windows (center, width), side length, cleaning threshold."""

    windows: tuple[tuple[float, float], ...]
    window_names: tuple[str, ...]
    size: int = 256
    min_brain_share: float = DEFAULT_MIN_BRAIN_SHARE
    context: bool = False
    resize: Resize = "area"

    @classmethod
    def build(
        cls,
        windows: Sequence[WindowSpec] = DEFAULT_WINDOWS,
        size: int = 256,
        min_brain_share: float = DEFAULT_MIN_BRAIN_SHARE,
        context: bool = False,
    ) -> CacheRecipe:
        resolved = tuple(resolve_window(w) for w in windows)
        names = tuple(w if isinstance(w, str) else f"{w[0]:g}:{w[1]:g}" for w in windows)
        return cls(resolved, names, int(size), float(min_brain_share), bool(context))

    @property
    def channels(self) -> int:
        return len(self.windows) * (3 if self.context else 1)


def window_crop_resize(hu: np.ndarray, box: Box, recipe: CacheRecipe) -> np.ndarray:
    """One HU slice → uint8 ``(len(windows), size, size)`` inside ``box``.

    Delegates to ``ct_window_channels``, the function serving replays on raw DICOM: the HU
    crop is resized once (antialiased) and then windowed at the target size, one resize
    instead of one per window. Windowing after resizing differs from the reverse only at
    edges where a window clips.
    """
    return ct_window_channels(hu, box, list(recipe.windows), recipe.size, recipe.resize)


def image_id(path: Path, root: Path) -> str:
    """The cache key of a file: its relative path without suffix ('ID_000012eaf' for RSNA)."""
    return path.relative_to(root).with_suffix("").as_posix().replace("/", "__")


@functools.lru_cache(maxsize=8)
def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    """The ``.npy`` header of a C-ordered array (every cached slice shares one)."""
    buf = io.BytesIO()
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def save_array(array: np.ndarray, path: Path) -> None:
    """Write ``array`` as ``.npy`` to a temporary name, then rename: a cached array is whole
    or absent. The header is formatted once per shape (``np.save`` redoes it per call) and
    header + data go out in one ``write``; ``np.load`` reads the file as usual."""
    array = np.ascontiguousarray(array)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(_npy_header(array.shape, array.dtype.str) + array.tobytes())
    os.replace(tmp, path)


def _base_row(image: DicomImage, root: Path, share: float, salt: str) -> dict[str, Any]:
    """The index row of one slice; identifiers keyed with ``salt`` (clear when empty)."""
    meta = image.meta
    return {
        "image_id": image_id(image.path, root),
        "file": image.path.relative_to(root).as_posix(),
        "PatientID": pseudonymise(meta.get("PatientID"), salt),
        "StudyInstanceUID": pseudonymise(meta.get("StudyInstanceUID"), salt),
        "SeriesInstanceUID": pseudonymise(meta.get("SeriesInstanceUID"), salt),
        "slice_position": slice_position(meta),
        "brain_share": share,
        "hu_repaired": bool(meta.get("hu_repaired", False)),
        "rescale_missing": bool(meta.get("rescale_missing", False)),
    }


def _finish(
    row: dict[str, Any], array: np.ndarray | None, out_dir: Path, recipe: CacheRecipe
) -> dict[str, Any]:
    kept = array is not None
    rel = f"slices/{row['image_id']}.npy"
    if kept:
        save_array(array, out_dir / rel)  # type: ignore[arg-type]
    return {**row, "kept": kept, "array": rel if kept else None}


@contextmanager
def one_opencv_thread() -> Iterator[None]:
    """Run OpenCV single-threaded (restored afterwards) inside a cache task.

    Parallelism comes from worker processes, one slice at a time each; OpenCV's own thread
    pool would otherwise spread each resize over every core and oversubscribe them (and
    make a "1 worker" run use more than one core).
    """
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _slice_chunk(
    paths: Sequence[Path], root: Path, out_dir: Path, recipe: CacheRecipe, salt: str
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Worker task (one slice at a time): prepare and cache each file of the chunk."""
    with one_opencv_thread():
        return _slice_rows(paths, root, out_dir, recipe, salt)


def _slice_rows(
    paths: Sequence[Path], root: Path, out_dir: Path, recipe: CacheRecipe, salt: str
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    rows, errors = [], []
    for path in paths:
        try:
            image = read_dicom(path, CACHE_KEYWORDS)
            hu = _single_slice(image)
            share = brain_share(hu)
            array = None
            if share >= recipe.min_brain_share:
                array = window_crop_resize(hu, head_box(hu), recipe)
            rows.append(_finish(_base_row(image, root, share, salt), array, out_dir, recipe))
        except (DxkitError, OSError) as exc:
            errors.append(error_row(path.relative_to(root).as_posix(), exc))
    return rows, errors


def _single_slice(image: DicomImage) -> np.ndarray:
    if image.pixels.ndim != 2:
        raise InvalidScanError(
            f"{image.path}: expected one grey slice, got pixels of shape {image.pixels.shape}"
        )
    return image.pixels


def _series_chunk(
    series: Sequence[Sequence[Path]],
    root: Path,
    out_dir: Path,
    recipe: CacheRecipe,
    salt: str,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Worker task (whole series, sorted): cache each slice with its neighbours as channels."""
    with one_opencv_thread():
        return _series_rows(series, root, out_dir, recipe, salt)


def _series_rows(
    series: Sequence[Sequence[Path]],
    root: Path,
    out_dir: Path,
    recipe: CacheRecipe,
    salt: str,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    rows, errors = [], []
    for paths in series:
        images, hus = [], []
        for path in paths:
            try:
                image = read_dicom(path, CACHE_KEYWORDS)
                hus.append(_single_slice(image))
                images.append(image)
            except (DxkitError, OSError) as exc:
                errors.append(error_row(path.relative_to(root).as_posix(), exc))
        shapes = {hu.shape for hu in hus}
        if len(shapes) > 1:
            for image in images:
                errors.append(
                    {
                        "file": image.path.relative_to(root).as_posix(),
                        "error": "InvalidScanError",
                        "reason": f"inconsistent slice sizes {sorted(shapes)} in its series",
                    }
                )
            continue
        neighbours = neighbour_indices(len(hus)) if hus else np.zeros((0, 3), int)
        for s, image in enumerate(images):
            share = brain_share(hus[s])
            array = None
            if share >= recipe.min_brain_share:
                box = head_box(hus[s])
                array = np.concatenate(
                    [window_crop_resize(hus[k], box, recipe) for k in neighbours[s]]
                )
            rows.append(_finish(_base_row(image, root, share, salt), array, out_dir, recipe))
    return rows, errors


def _header_chunk(paths: Sequence[Path]) -> list[tuple[Path, str, float | None, int]]:
    """Worker task: (path, series, position along the normal, instance) from headers only."""
    out = []
    for path in paths:
        try:
            meta = dataset_meta(open_dataset(path, stop_before_pixels=True))
        except (DxkitError, OSError):
            meta = {}  # the pixel pass reports the reason
        out.append(
            (
                path,
                str(meta.get("SeriesInstanceUID", f"unknown:{path}")),
                slice_position(meta),
                int(meta.get("InstanceNumber", 0) or 0),
            )
        )
    return out


def group_series(paths: Sequence[Path], workers: int = 1) -> list[list[Path]]:
    """Files grouped by SeriesInstanceUID, each sorted along the slice normal (else instance)."""
    chunks = list(chunked(list(paths), 256))
    if workers > 1 and len(chunks) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            headers = [h for part in pool.map(_header_chunk, chunks) for h in part]
    else:
        headers = [h for chunk in chunks for h in _header_chunk(chunk)]
    groups: dict[str, list[tuple[Path, float | None, int]]] = defaultdict(list)
    for path, series, position, instance in headers:
        groups[series].append((path, position, instance))
    ordered = []
    for members in groups.values():
        if all(m[1] is not None for m in members):
            members.sort(key=lambda m: (m[1], m[2]))
        else:
            members.sort(key=lambda m: (m[2], str(m[0])))
        ordered.append([m[0] for m in members])
    return ordered


@dataclass
class CacheReport:
    """Counts of one prepare run, saved as ``prepare.json`` beside the cache."""

    files: int
    processed: int
    skipped: int
    kept: int
    dropped: int
    failed: int
    repaired: int
    windows: list[str]
    size: int
    channels: int
    min_brain_share: float
    context: bool
    labelled: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


def prepare_ct_cache(
    dicom_dir: Path | str,
    out_dir: Path | str,
    recipe: CacheRecipe | None = None,
    *,
    labels: pd.DataFrame | None = None,
    workers: int = 1,
    chunk_size: int = 32,
    progress: ProgressFn | None = None,
    total: ProgressFn | None = None,
    scheduler: str | None = None,
    keep_phi: bool = False,
    salt_file: Path | str | None = None,
) -> CacheReport:
    """Cache every DICOM slice under ``dicom_dir`` into ``out_dir``; resumes a stopped run.

    ``labels`` (index = image id, e.g. from ``parse_rsna_labels``) are joined into the index.
    ``scheduler`` (``local[:N]`` / ``tcp://...``) runs the chunks as Dask tasks.
    Identifiers are keyed with ``salt_file`` (default: ``dxkit-salt.key`` beside
    ``out_dir``, i.e. in its parent folder, created on first use) unless ``keep_phi``.
    """
    recipe = recipe or CacheRecipe.build()
    root, out = Path(dicom_dir), Path(out_dir)
    _check_same_recipe(out, recipe)
    _check_same_ids(out, keep_phi)
    # Read (or created) here, once, before any worker or Dask task starts.
    salt = output_salt(keep_phi, salt_file, out.parent)
    (out / "slices").mkdir(parents=True, exist_ok=True)
    files = list_files(root)
    parts = ResumableParts(out / "index.parquet")
    done = parts.done()
    if recipe.context:
        # A series is redone whole when any of its slices is missing (neighbours need it).
        units = [
            series
            for series in group_series(files, workers)
            if any(p.relative_to(root).as_posix() not in done for p in series)
        ]
        todo = [p for series in units for p in series]
        task: Callable[..., Any] = _series_chunk
        batches: list[Any] = _series_batches(units, chunk_size)
    else:
        todo = [p for p in files if p.relative_to(root).as_posix() not in done]
        task, batches = _slice_chunk, list(chunked(todo, chunk_size))
    if total:
        total(len(todo))
    run_chunks(task, batches, (root, out, recipe, salt), parts, workers, progress, scheduler)
    table, errors = parts.finalize()
    if labels is not None and len(table):
        table = table.drop(columns=[c for c in labels.columns if c in table.columns])
        table = table.merge(labels, left_on="image_id", right_index=True, how="left")
        atomic_parquet(table, parts.out)
    report = CacheReport(
        files=len(files),
        processed=len(todo),
        skipped=len(files) - len(todo),
        kept=int(table["kept"].sum()) if len(table) else 0,
        dropped=int((~table["kept"].astype(bool)).sum()) if len(table) else 0,
        failed=len(errors),
        repaired=int(table["hu_repaired"].sum()) if len(table) else 0,
        windows=list(recipe.window_names),
        size=recipe.size,
        channels=recipe.channels,
        min_brain_share=recipe.min_brain_share,
        context=recipe.context,
        labelled=int(table[labels.columns[0]].notna().sum())
        if labels is not None and len(table)
        else 0,
        errors=errors.to_dict("records"),
    )
    info = {**asdict(report), "recipe": _recipe_dict(recipe), "patient_ids": _ids(keep_phi)}
    tmp = out / ".prepare.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str))
    os.replace(tmp, out / "prepare.json")
    logger.info(
        "cached %d slices, dropped %d, failed %d, repaired %d",
        report.kept,
        report.dropped,
        report.failed,
        report.repaired,
    )
    return report


def _recipe_dict(recipe: CacheRecipe) -> dict[str, Any]:
    return {
        "windows": [list(w) for w in recipe.windows],
        "size": recipe.size,
        "min_brain_share": recipe.min_brain_share,
        "context": recipe.context,
        "resize": recipe.resize,
    }


def _check_same_recipe(out: Path, recipe: CacheRecipe) -> None:
    """Resuming into a cache made with another recipe would mix two kinds of arrays."""
    info_path = out / "prepare.json"
    if not info_path.is_file():
        return
    before = json.loads(info_path.read_text()).get("recipe")
    if before is not None:
        before.setdefault("resize", "pillow")  # caches written before the field existed
    if before is not None and before != _recipe_dict(recipe):
        raise ConfigError(
            f"{out}: this cache was prepared with {before}, not {_recipe_dict(recipe)}; "
            "use another --out folder or delete this one"
        )


def _ids(keep_phi: bool) -> str:
    return "clear" if keep_phi else "pseudonyms"


def _check_same_ids(out: Path, keep_phi: bool) -> None:
    """Resuming must not mix clear PatientIDs and pseudonyms in one index (caches written
    before the field existed hold them in clear)."""
    info_path = out / "prepare.json"
    if not info_path.is_file():
        return
    before = json.loads(info_path.read_text()).get("patient_ids", "clear")
    if before != _ids(keep_phi):
        raise ConfigError(
            f"{out}: this cache holds patient ids as {before}, this run would write "
            f"{_ids(keep_phi)}; use another --out folder or delete this one"
        )


def _series_batches(series: list[list[Path]], target: int = 16) -> list[list[list[Path]]]:
    """Group whole series into batches of about ``target`` slices per worker task."""
    batches, current, count = [], [], 0
    for s in series:
        current.append(s)
        count += len(s)
        if count >= target:
            batches.append(current)
            current, count = [], 0
    if current:
        batches.append(current)
    return batches
