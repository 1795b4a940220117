"""``dxkit explore SOURCE --out DIR``: the dataset explorer page, in one command.

Writes ``explore.html`` (self-contained, opens from a file) and ``explore.json`` (every
number on the page) for a MedMNIST ``.npz``, a labelled folder, a DICOM metadata table or
an MRNet root, and prints the counts and any patient overlap between splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dxkit.cli import app

console = Console()


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@app.command()
def explore(
    source: Annotated[
        Path,
        typer.Argument(
            help="MedMNIST .npz, labelled folder, DICOM table .parquet, MRNet root or SIIM folder."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the page and JSON.")] = Path(
        "explore"
    ),
    kind: Annotated[
        str | None,
        typer.Option(help="medmnist, folder, dicom-table, mrnet or siim (default: from the path)."),
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Label CSV of a labelled folder.")] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="Folder a DICOM table's file paths are relative to (default: its own)."),
    ] = None,
    max_images: Annotated[
        int, typer.Option(min=1, help="Scans read at most, for histograms and examples.")
    ] = 200,
    per_label: Annotated[int, typer.Option(min=1, help="Examples shown per label.")] = 6,
    show_ids: Annotated[
        bool, typer.Option(help="Show patient ids as they are (default: hashed).")
    ] = False,
    salt: Annotated[
        str | None, typer.Option(help="Salt for hashed ids (default: random, not stored).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampled scans.")] = 0,
) -> None:
    """Counts, patient overlap, slices, intensities, metadata and examples as one HTML page."""
    from dxkit.evaluate.explore import explore_source
    from dxkit.evaluate.explore_html import write_explorer

    with console.status(f"exploring {source}..."):
        exploration = explore_source(
            source,
            kind,
            csv=csv,
            root=root,
            max_images=max_images,
            per_label=per_label,
            show_ids=show_ids,
            salt=salt,
            seed=seed,
        )
        json_path, html_path = write_explorer(exploration, out)
    summary = exploration.summary
    counts = summary["counts"]
    sizes = ", ".join(f"{s} {v['n']}" for s, v in counts["splits"].items())
    console.print(f"{summary['source']['kind']}: {counts['total']} {counts['item']}s ({sizes})")
    item, patients = counts["item"], summary["patients"]
    if patients.get("checked") and patients["overlap"]["distinct"]:
        overlap, kind = patients["overlap"], patients["kind"]
        console.print(
            f"[bold red]{kind} overlap between splits: {_n(overlap['distinct'], kind)} "
            f"({_n(overlap['entries'], item)})[/]"
        )
    if patients.get("note"):
        console.print(f"[bold yellow]{patients['note']}[/]")
    elif patients.get("missing"):
        console.print(f"[yellow]{_n(patients['missing'], item)} without a {patients['kind']} id[/]")
    duplicates = summary["duplicates"]
    if duplicates.get("checked") and duplicates["across_splits"]:
        console.print(
            f"[bold red]{_n(duplicates['across_splits'], item)} in more than one split "
            f"({duplicates['by']})[/]"
        )
    console.print(f"page: [bold]{html_path}[/]  (numbers in {json_path.name})")
