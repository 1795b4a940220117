"""Batch inference on Dask: files → partitions → one merged ``predictions.csv``.

Each partition (``partition_size`` files, a multiple of the batch size so every batch is
the one the single-process ``Predictor.predict_files`` would form) runs as one Dask task:
the worker loads the model once (``_worker_predictor`` is cached per process), predicts
with the same ``Predictor`` the CLI and server use, and writes its own Parquet part under
``<out>.parts/`` (kept beside the merged CSV). A rerun after a kill only predicts
partitions without a part. The main process merges the parts in input order into the CSV
``dxkit predict --out`` writes.
Workers must see the checkpoint and the scans at the same paths (shared filesystem).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dxkit.data.dask_prepare import chunk_key
from dxkit.data.dicom_table import atomic_parquet, chunked
from dxkit.errors import ConfigError, MissingFileError
from dxkit.infer.predictor import Predictor
from dxkit.io.discover import discover


@functools.lru_cache(maxsize=2)
def _worker_predictor(checkpoint: str) -> Predictor:
    """The model of ``checkpoint``, loaded once per worker process."""
    return Predictor.from_checkpoint(checkpoint)


def predict_partition(checkpoint: str, files: Sequence[str], batch_size: int, part: Path) -> int:
    """Worker side: predict ``files`` and write their probabilities to ``part`` (Parquet)."""
    predictor = _worker_predictor(checkpoint)
    predictions = predictor.predict_files(list(files), batch_size=batch_size)
    names = predictor.label_names
    frame = pd.DataFrame(
        {
            "file": [p.source for p in predictions],
            **{n: [p.probabilities[n] for p in predictions] for n in names},
            **{f"{n}_positive": [int(p.positive[n]) for p in predictions] for n in names},
            "input_warning": [p.input_warning or "" for p in predictions],
        }
    )
    atomic_parquet(frame, part)
    return len(frame)


def resolve_inputs(inputs: Sequence[Path]) -> list[Path]:
    """The scan files of ``inputs`` in order: a Parquet/CSV manifest with a ``path`` (or
    ``file``) column, else files and folders as ``dxkit predict`` finds them
    (``io.discover``, one walker), so ``--scheduler`` predicts the same scans."""
    files: list[Path] = []
    for item in inputs:
        if item.is_file() and item.suffix.lower() in (".parquet", ".csv"):
            files += _manifest_paths(item)
            continue
        items, bad = discover([item], "file")
        if bad:
            raise MissingFileError(f"{bad[0].source}: {bad[0].reason}")
        files += [scan.paths[0] for scan in items]
    return files


def _manifest_paths(manifest: Path) -> list[Path]:
    """Scan paths listed in a manifest, relative ones taken from the manifest's folder."""
    table = (
        pd.read_parquet(manifest)
        if manifest.suffix.lower() == ".parquet"
        else pd.read_csv(manifest)
    )
    column = next((c for c in ("path", "file") if c in table.columns), None)
    if column is None:
        raise ConfigError(f"{manifest}: a manifest needs a 'path' column of scan files")
    return [manifest.parent / p if not Path(p).is_absolute() else Path(p) for p in table[column]]


def predict_dask(
    checkpoint: Path | str,
    files: Sequence[Path | str],
    out: Path | str,
    scheduler: str,
    batch_size: int = 32,
    partition_size: int = 256,
) -> pd.DataFrame:
    """Predict every file on ``scheduler``; write ``out`` (CSV) and return the merged table."""
    from distributed import as_completed

    from dxkit.data.dask_cluster import dask_client

    out = Path(out)
    parts_dir = out.with_name(out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    size = max(batch_size, partition_size // batch_size * batch_size)
    partitions = [[str(f) for f in c] for c in chunked(list(files), size)]
    part_paths = [parts_dir / f"part-{chunk_key(c)}.parquet" for c in partitions]
    todo = [(c, p) for c, p in zip(partitions, part_paths, strict=True) if not p.is_file()]
    if todo:
        ckpt = str(Path(checkpoint).resolve())
        with dask_client(scheduler) as client:
            futures = [
                client.submit(predict_partition, ckpt, c, batch_size, p, pure=False)
                for c, p in todo
            ]
            for future in as_completed(futures):
                future.result()
    table = pd.concat([pd.read_parquet(p) for p in part_paths], ignore_index=True)
    write_predictions_csv(table, out)
    return table


def write_predictions_csv(table: pd.DataFrame, out: Path) -> None:
    """The CSV layout of ``dxkit predict --out``: probabilities to 6 decimals, 0/1 calls,
    then the input guard's warning (empty when the scan looks like the training data)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = table.copy()
    for column in table.columns:
        if column not in ("file", "input_warning") and not column.endswith("_positive"):
            text[column] = table[column].map(lambda v: f"{v:.6f}")
    tmp = out.with_name(f".{out.name}.tmp")
    text.to_csv(tmp, index=False, lineterminator="\r\n")
    tmp.replace(out)
