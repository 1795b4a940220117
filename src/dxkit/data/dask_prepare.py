"""Run prepare chunks as Dask tasks; every worker writes its own cache files and Parquet part.

The same chunk functions as the process pool (``ct_cache._slice_chunk``,
``dicom_table._rows_for_chunk``) run on the workers, so arrays and rows are identical to
the single-process path. The difference is who writes: each task saves its slices and its
rows/errors part (``<out>.parts/rows-dask-<key>.parquet``, written to a temporary name
and renamed) before it returns, and only counts travel back. The part key is a hash of
the chunk's files, so a rerun after a kill recomputes only chunks without a part
(``ResumableParts.done`` lists the finished files) and the final merge is the same as for
the pool. Workers must see the input and output folders at the same paths (a shared
filesystem on a multi-machine cluster).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dxkit.data.dicom_table import ProgressFn, ResumableParts, atomic_parquet

ChunkTask = Callable[..., tuple[list[dict[str, Any]], list[dict[str, str]]]]


def chunk_key(chunk: Sequence[Any]) -> str:
    """A stable name for a chunk of files (or of series): its members' paths hashed."""
    digest = hashlib.sha256()
    for item in chunk:
        members = item if isinstance(item, (list, tuple)) else [item]
        for path in members:
            digest.update(str(path).encode() + b"\0")
    return digest.hexdigest()[:16]


def run_partition(
    task: ChunkTask, chunk: Sequence[Any], args: tuple[Any, ...], parts_dir: Path
) -> int:
    """Worker side: run one chunk, write its Parquet part(s), return how many files it did."""
    rows, errors = task(chunk, *args)
    key = chunk_key(chunk)
    for kind, records in (("rows", rows), ("errors", errors)):
        if records:
            frame = pd.DataFrame.from_records(records)
            atomic_parquet(frame, Path(parts_dir) / f"{kind}-dask-{key}.parquet")
    return len(rows) + len(errors)


def run_chunks_dask(
    task: ChunkTask,
    chunks: Iterable[Sequence[Any]],
    args: tuple[Any, ...],
    parts: ResumableParts,
    scheduler: str,
    progress: ProgressFn | None = None,
) -> None:
    """Map chunks to Dask tasks on ``scheduler`` (see ``dask_cluster.parse_scheduler``)."""
    from distributed import as_completed

    from dxkit.data.dask_cluster import dask_client

    chunks = list(chunks)
    if not chunks:
        return
    parts.parts.mkdir(parents=True, exist_ok=True)
    with dask_client(scheduler) as client:
        futures = [
            client.submit(run_partition, task, chunk, args, parts.parts, pure=False)
            for chunk in chunks
        ]
        for future in as_completed(futures):
            done = future.result()
            if progress:
                progress(done)
