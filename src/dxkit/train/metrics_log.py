"""``metrics.csv`` that survives ``--resume``.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it opens a non-empty folder
(lightning 2.6), so a resumed run used to lose the rows of every epoch trained before the
interruption. This logger reads those rows first and writes back the ones the resumed
checkpoint already holds (epochs up to the checkpoint's); rows of a half-finished epoch
are dropped, since that epoch is trained again.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import CSVLogger


def rows_to_keep(metrics_csv: Path, checkpoint: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of ``metrics_csv`` for the epochs ``checkpoint`` has completed."""
    if not metrics_csv.is_file() or not checkpoint.is_file():
        return [], []
    done_epoch = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
    with metrics_csv.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = [r for r in reader if r.get("epoch") and int(float(r["epoch"])) <= done_epoch]
    return header, rows


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` writing ``<run_dir>/metrics.csv``; with ``resume_from`` (the
    checkpoint a resumed run starts from) the earlier epochs' rows are kept."""

    def __init__(self, run_dir: Path, resume_from: str | Path | None = None) -> None:
        super().__init__(save_dir=str(run_dir), name="", version="")
        self._header: list[str] = []
        self._kept: list[dict[str, str]] = []
        if resume_from is not None:
            self._header, self._kept = rows_to_keep(
                Path(run_dir) / "metrics.csv", Path(resume_from)
            )

    @property
    def experiment(self) -> Any:
        fresh = self._experiment is None
        writer = super().experiment
        # Rank 0 only (other ranks get a dummy); the writer has just deleted the file.
        if fresh and self._kept and hasattr(writer, "metrics_file_path"):
            header = sorted(self._header)  # the writer's own column order
            with open(writer.metrics_file_path, "w", newline="") as fh:
                out = csv.DictWriter(fh, fieldnames=header)
                out.writeheader()
                out.writerows(self._kept)
            writer.metrics_keys = header
            self._kept = []
        return writer
