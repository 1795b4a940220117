"""``dxkit prepare ...``: DICOM metadata tables and the RSNA head-CT slice cache.

Both commands run in parallel worker processes with a progress bar, resume an interrupted
run (finished chunks are kept) and list unreadable files with their reason instead of
stopping; ``--strict`` turns any such file into exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dxkit.errors import MissingFileError

app = typer.Typer(
    help="Prepare scans: DICOM metadata tables, the RSNA head-CT cache.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()

Workers = Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes.")]
Strict = Annotated[bool, typer.Option(help="Exit with code 1 if any file could not be read.")]
Scheduler = Annotated[
    str | None,
    typer.Option(
        help="Run on Dask instead of --workers: local, local:N (a LocalCluster of N workers) "
        "or a scheduler address tcp://HOST:PORT; every worker writes its own parts."
    ),
]
SaltFile = Annotated[
    Path | None,
    typer.Option(
        help="Secret key of the PatientID/UID pseudonyms (default: dxkit-salt.key beside "
        "--out, created once; keep it to get the same pseudonyms in later outputs)."
    ),
]


@contextmanager
def _progress(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """(total, advance) callbacks driving a rich progress bar."""
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None)

        def total(n: int) -> None:
            bar.update(task, total=n)

        def advance(n: int) -> None:
            bar.advance(task, n)

        yield total, advance


def _need_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: no such folder of DICOM files; check the path")


def _show_errors(errors: pd.DataFrame, where: Path, limit: int = 10) -> None:
    if errors.empty:
        return
    table = Table("file", "error", "reason", title=f"{len(errors)} unreadable files ({where})")
    for row in errors.head(limit).itertuples():
        table.add_row(str(row.file), str(row.error), str(row.reason))
    console.print(table)
    if len(errors) > limit:
        console.print(f"... and {len(errors) - limit} more in {where}")


@app.command("dicom")
def prepare_dicom(
    folder: Annotated[Path, typer.Argument(help="Folder of DICOM files (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet table to write.")] = Path(
        "meta.parquet"
    ),
    workers: Workers = 1,
    salt_file: SaltFile = None,
    keep_phi: Annotated[
        bool,
        typer.Option(
            help="Export patient identity in clear: PatientID and UIDs unhashed, plus names, "
            "dates, institution. Without it identifiers are keyed pseudonyms."
        ),
    ] = False,
    pixel_stats: Annotated[
        bool, typer.Option(help="Decode pixels: HU min/max/mean/std and brain-window share.")
    ] = False,
    strict: Strict = False,
    scheduler: Scheduler = None,
) -> None:
    """One row per DICOM file with the tags a study needs; no patient identity unless
    --keep-phi (PatientID and UIDs become keyed pseudonyms, names and dates are left out)."""
    from dxkit.data.dicom_table import build_dicom_table

    _need_folder(folder)
    if keep_phi:
        console.print("[yellow]--keep-phi: the table will contain patient identity[/]")
    with _progress("reading headers") as (total, advance):
        result = build_dicom_table(
            folder,
            out,
            workers=workers,
            keep_phi=keep_phi,
            pixel_stats=pixel_stats,
            salt_file=salt_file,
            progress=advance,
            total=total,
            scheduler=scheduler,
        )
    from dxkit.data.dicom_table import errors_path

    console.print(
        f"{len(result.table)} files in {result.out} ({result.processed} read now, "
        f"{result.skipped} already done), {len(result.errors)} unreadable"
    )
    _show_errors(result.errors, errors_path(result.out))
    if strict and len(result.errors):
        raise typer.Exit(1)


@app.command("rsna")
def prepare_rsna(
    dicom_dir: Annotated[Path, typer.Argument(help="Folder of RSNA head-CT DICOM files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Cache folder to write.")],
    labels: Annotated[
        Path | None, typer.Option(help="stage_2_train.csv (ID,Label rows) to join.")
    ] = None,
    windows: Annotated[
        str, typer.Option(help="Comma-separated presets or center:width pairs.")
    ] = "brain,subdural,bone",
    size: Annotated[int, typer.Option(min=16, help="Side of the cached slices.")] = 256,
    min_brain_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Drop slices with fewer brain-window pixels."),
    ] = 0.01,
    context: Annotated[
        bool, typer.Option(help="2.5D: stack each slice with its neighbours (s-1, s, s+1).")
    ] = False,
    workers: Workers = 1,
    salt_file: SaltFile = None,
    keep_phi: Annotated[
        bool,
        typer.Option(
            help="Store PatientID and the study/series UIDs in clear in index.parquet. "
            "Without it they are keyed pseudonyms (enough to split by patient)."
        ),
    ] = False,
    strict: Strict = False,
    scheduler: Scheduler = None,
) -> None:
    """Cache slices as uint8 window channels: HU (+repair) → clean → crop → resize.
    PatientID and UIDs in the index are keyed pseudonyms unless --keep-phi."""
    from dxkit.data.ct_cache import CacheRecipe, prepare_ct_cache
    from dxkit.data.sources.rsna import parse_rsna_labels
    from dxkit.preprocess.window import parse_windows

    _need_folder(dicom_dir)
    recipe = CacheRecipe.build(parse_windows(windows), size, min_brain_share, context)
    label_table = parse_rsna_labels(labels) if labels is not None else None
    if keep_phi:
        console.print("[yellow]--keep-phi: the cache index will contain patient identity[/]")
    with _progress("preparing slices") as (total, advance):
        report = prepare_ct_cache(
            dicom_dir,
            out,
            recipe,
            labels=label_table,
            workers=workers,
            progress=advance,
            total=total,
            scheduler=scheduler,
            keep_phi=keep_phi,
            salt_file=salt_file,
        )
    console.print(
        f"{report.files} files: {report.kept} cached, {report.dropped} dropped "
        f"(brain share < {report.min_brain_share:g}), {report.failed} failed, "
        f"{report.repaired} repaired (bad intercept); {report.skipped} were already done. "
        f"Slices: {report.channels}×{report.size}×{report.size} uint8 in {out / 'slices'}"
    )
    if label_table is not None:
        console.print(f"{report.labelled} slices labelled from {labels}")
    _show_errors(pd.DataFrame(report.errors), out / "index.errors.parquet")
    if strict and report.failed:
        raise typer.Exit(1)
