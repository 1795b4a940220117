"""Batches that survive bad files, for ``dxkit predict`` and ``dxkit explain``.

The library finds and reads the scans (``dxkit.io.discover``); this module reports the bad
ones the same way for every command: one console line each, ``errors.csv`` beside the
output, exit code 1 when some failed and 2 when none could be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from dxkit.errors import InvalidScanError
from dxkit.infer.device import ProgressCallback
from dxkit.infer.predictor import dicom_modality
from dxkit.io.discover import BadScan, collect, discover, read_volume, write_errors

err_console = Console(stderr=True)
CHUNK = 32  # scans read and predicted together: bounded memory on large folders


def predict_scans(
    predictor: Any, inputs: Sequence[Path], progress: ProgressCallback | None = None
) -> tuple[list[Any], list[BadScan]]:
    """Predictions of every readable scan (``Predictor`` or ``OnnxPredictor``) and the bad
    ones. A 3-D model reads each DICOM series as one volume; each scan is prepared once
    before its batch runs, so a scan the model cannot take is reported, not fatal;
    ``progress(done, total)`` after each batch."""
    pre = getattr(predictor, "preprocessing", None) or predictor.loaded.preprocessing
    items, bad = discover(inputs, "series" if pre.spatial_dims == 3 else "file")

    def read(item: Any) -> Any:
        array = read_volume(item)
        predictor.prepare(array, item.source)  # shape, channels, finiteness: checked here
        return array

    predictions: list[Any] = []
    for start in range(0, len(items), CHUNK):
        good, failed = collect(items[start : start + CHUNK], read)
        bad += failed
        if good:
            arrays = [array for _, array in good]
            sources = [item.source for item, _ in good]
            modalities = [
                dicom_modality(item.paths[0]) if item.kind == "file" else None for item, _ in good
            ]
            predictions += predictor.predict_arrays(arrays, sources, modalities)
        if progress is not None:
            progress(min(start + CHUNK, len(items)), len(items))
    return predictions, bad


def report_failures(bad: Sequence[BadScan], done: int, out: Path | None) -> None:
    """One line per bad scan; ``errors.csv`` beside ``out``; exit 1 if some scans failed,
    exit 2 (an ``InvalidScanError``) if none could be used."""
    for b in bad:
        err_console.print(
            f"[yellow]skipped[/] {b.source}: {b.reason}", highlight=False, soft_wrap=True
        )
    listed = write_errors(bad, out) if out is not None else None
    if not bad:
        return
    where = f"; listed in {listed}" if listed is not None else ""
    if done == 0:
        raise InvalidScanError(f"none of the {len(bad)} scan(s) could be used{where}")
    err_console.print(f"{len(bad)} scan(s) failed, {done} done{where}", soft_wrap=True)
    raise typer.Exit(1)
