"""``dxkit bench ...``: benchmarks that write their tables into benchmarks/RESULTS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown

from dxkit.cli import app
from dxkit.errors import MissingFileError

bench_app = typer.Typer(help="Benchmarks; each writes its table into benchmarks/RESULTS.md.")
app.add_typer(bench_app, name="bench")
console = Console()
DataRoot = Annotated[Path, typer.Option(help="Folder with the real data sets.")]
Results = Annotated[Path, typer.Option(help="Results file to update.")]
DEFAULT_RESULTS = Path("benchmarks/RESULTS.md")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise MissingFileError(f"{what} not found at {path}; pass --data-root")
    return path


@bench_app.command("medmnist")
def bench_medmnist(
    data_root: DataRoot = Path("../shared/data/medmnist"),
    sets: Annotated[str, typer.Option(help="Comma-separated sets.")] = (
        "adrenalmnist3d,breastmnist,pneumoniamnist"
    ),
    configs: Annotated[Path, typer.Option(help="Folder of recipes.")] = Path("configs"),
    results: Results = DEFAULT_RESULTS,
) -> None:
    """Train + test the MedMNIST recipes and compare with the published tables."""
    from dxkit.bench.medmnist import run

    body, _ = run(_need(data_root, "MedMNIST folder"), configs, tuple(sets.split(",")), results)
    console.print(Markdown(body))


@bench_app.command("overhead")
def bench_overhead(
    config: Annotated[Path, typer.Option(help="Recipe to time.")] = Path(
        "configs/pneumoniamnist.yaml"
    ),
    data_root: DataRoot = Path("../shared/data/medmnist"),
    repeats: Annotated[int, typer.Option(help="Alternating repeats.")] = 3,
    results: Results = DEFAULT_RESULTS,
) -> None:
    """Images/s of the Lightning engine vs a bare PyTorch loop (same model and data)."""
    from dxkit.bench.overhead import run

    console.print(Markdown(run(config, _need(data_root, "MedMNIST folder"), repeats, results)))
