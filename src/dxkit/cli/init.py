"""``dxkit init DATA_DIR [--out config.yaml]``: recognise a data folder and write a recipe.

Prints what it found (layout, counts per split and class, image sizes and channels,
modalities, patient ids, leakage risk) and writes a commented YAML config that
``dxkit train`` runs as written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dxkit.cli import app
from dxkit.errors import DataSourceError

console = Console()


def _run_name(root: Path) -> str:
    stem = root.stem if root.is_file() else root.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "my-data"


@app.command()
def init(
    data_dir: Annotated[Path, typer.Argument(help="The folder of scans (or a MedMNIST .npz).")],
    out: Annotated[Path, typer.Option(help="Where to write the config.")] = Path("config.yaml"),
    name: Annotated[str | None, typer.Option(help="Run name (default: the folder's).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
) -> None:
    """Inspect a data folder (headers only) and write a config that trains as it is."""
    from dxkit.evaluate.data_inventory import inspect_data
    from dxkit.train.starter_config import starter_recipe, starter_yaml

    inv = inspect_data(data_dir)
    console.print(f"[bold]{inv.root}[/]")
    for line in inv.lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if not inv.trainable:
        raise DataSourceError(
            f"{inv.root}: no labels found, so no config was written; sort the scans into class "
            "folders (<class>/...) or add a labels.csv with 'path,<label>' rows"
        )
    if out.exists() and not force:
        raise DataSourceError(f"{out} exists; pass --force to overwrite it or choose --out")
    recipe = starter_recipe(
        name or _run_name(inv.root),
        inv.task,
        inv.data,
        spatial_dims=inv.spatial_dims,
        size=inv.size,
        modality=inv.modality,
    )
    header = [
        f"Written by `dxkit init {data_dir}`: {inv.layout} layout.",
        *inv.lines,
        "",
        f"Train: dxkit train {out}    (then: dxkit evaluate runs/{recipe['name']})",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(starter_yaml(recipe, header))
    console.print(f"wrote [bold]{out}[/]; train with: dxkit train {out}", soft_wrap=True)
