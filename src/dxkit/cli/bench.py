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
    seeds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Runs per recipe (the recipe's seed, seed+1, ...); reports mean ± sd, min–max.",
        ),
    ] = 1,
) -> None:
    """Train + test the MedMNIST recipes and compare with the published tables."""
    from dxkit.bench.medmnist import run

    body, _ = run(
        _need(data_root, "MedMNIST folder"),
        configs,
        tuple(sets.split(",")),
        results,
        seeds=seeds,
    )
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


@bench_app.command("dicom")
def bench_dicom(
    data_root: DataRoot = Path("../shared/data/rsna_ich_dicom"),
    seconds: Annotated[float, typer.Option(help="Minimum seconds of work per variant.")] = 10.0,
    results: Results = DEFAULT_RESULTS,
) -> None:
    """Files/s of `dxkit prepare rsna` vs fastai's medical module and the pydicom floor."""
    from dxkit.bench.dicom import run

    body = run(_need(data_root, "RSNA DICOM folder"), seconds=seconds, results_path=results)
    console.print(Markdown(body))


@bench_app.command("seg")
def bench_seg(
    data_root: DataRoot = Path("../shared/data/siim_pneumothorax_sample"),
    overfit_seconds: Annotated[
        float,
        typer.Option(help="Time cap of the overfit check; leave room for all its steps."),
    ] = 2700.0,
    overfit_steps: Annotated[
        int, typer.Option(help="One-cycle steps of the overfit check (stops at the target).")
    ] = 1200,
    overfit_batch: Annotated[int, typer.Option(help="Batch size of the overfit check.")] = 5,
    overfit_size: Annotated[int, typer.Option(help="Image size of the overfit check (px).")] = 256,
    overfit_only: Annotated[
        bool, typer.Option(help="Run only (c), into its own results section per size.")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(help="Torch threads for (b) and (c); default: torch's.")
    ] = None,
    results: Results = DEFAULT_RESULTS,
) -> None:
    """RLE speed vs a per-pixel reference, U-Net step cost per resolution, overfit check."""
    from dxkit.bench.seg import run

    body = run(
        _need(data_root, "SIIM sample folder"),
        overfit_seconds=overfit_seconds,
        overfit_steps=overfit_steps,
        overfit_batch=overfit_batch,
        overfit_size=overfit_size,
        overfit_only=overfit_only,
        threads=threads,
        results_path=results,
    )
    console.print(Markdown(body))


@bench_app.command("serve")
def bench_serve(
    requests: Annotated[int, typer.Option(help="Requests per backend.")] = 500,
    concurrency: Annotated[int, typer.Option(help="Concurrent clients.")] = 8,
    threads: Annotated[int, typer.Option(help="Inference threads per request.")] = 1,
    results: Results = DEFAULT_RESULTS,
) -> None:
    """Loopback load test of the server: eager PyTorch vs ONNX Runtime, side by side."""
    from dxkit.bench.serve import run

    body = run(requests=requests, concurrency=concurrency, threads=threads, results=results)
    console.print(Markdown(body))


@bench_app.command("exam")
def bench_exam(
    part: Annotated[
        list[str], typer.Option(help="Part(s) to run: adrenal, latency (repeat the option).")
    ] = ["adrenal", "latency"],  # noqa: B006 (typer reads list defaults, never mutates them)
    data_root: DataRoot = Path("../shared/data/medmnist"),
    minutes: Annotated[float, typer.Option(help="adrenal: training cap per model.")] = 9.0,
    epochs: Annotated[int, typer.Option(help="adrenal: epochs planned per model.")] = 3,
    repeats: Annotated[int, typer.Option(help="latency: timed rounds.")] = 3,
    threads: Annotated[int, typer.Option(help="torch / ONNX Runtime threads.")] = 1,
    memory: Annotated[bool, typer.Option(help="latency: peak memory per path.")] = True,
    work: Annotated[Path, typer.Option(help="Folder for weights and runs.")] = Path(
        "runs/bench-exam"
    ),
    results: Results = DEFAULT_RESULTS,
) -> None:
    """AdrenalMNIST3D slice-stack vs 3-D, and MRNet exam latency per inference path."""
    from dxkit.bench.exam import run_exam_bench

    body = run_exam_bench(
        data_root, tuple(part), results, minutes, repeats, threads, work, memory, epochs
    )
    console.print(Markdown(body))


@bench_app.command("pacs")
def bench_pacs_command(
    url: Annotated[str, typer.Option(help="Orthanc REST root, e.g. http://127.0.0.1:8042")],
    case: Annotated[
        list[str],
        typer.Option(help="LABEL=MODEL=FOLDER: a model and a folder of DICOM studies (repeat)."),
    ],
    rounds: Annotated[int, typer.Option(min=1, help="Rounds per study.")] = 3,
    results: Results = DEFAULT_RESULTS,
) -> None:
    """Pull → infer → push latency per stage and studies per minute, per modality, beside a
    plain dicomweb-client retrieve + store of the same study (Orthanc: its REST API clears
    earlier results between rounds)."""
    import shlex

    from dxkit.bench.pacs import Case, bench_pacs
    from dxkit.bench.results import write_section
    from dxkit.errors import ConfigError

    cases = []
    for text in case:
        parts = text.split("=", 2)
        if len(parts) != 3:
            raise ConfigError(f"--case {text!r}: write LABEL=MODEL=FOLDER")
        cases.append(
            Case(parts[0], _need(Path(parts[1]), "model"), _need(Path(parts[2]), "folder"))
        )
    root = url.rstrip("/")
    body = bench_pacs(f"{root}/dicom-web", root, cases, rounds=rounds)
    args = ["--url", url, "--rounds", str(rounds)] + [a for c in case for a in ("--case", c)]
    command = "dxkit bench pacs " + " ".join(shlex.quote(a) for a in args)
    path = write_section("pacs", "PACS integration (Orthanc, loopback)", command, body, results)
    console.print(Markdown(body))
    console.print(f"written to {path}")


@bench_app.command("scale")
def bench_scale(
    scratch: Annotated[
        Path, typer.Option(help="Folder for the generated stores (deleted after).")
    ] = Path("/tmp/dxkit-bench-scale"),
    sizes: Annotated[str, typer.Option(help="Comma-separated store sizes (slices).")] = (
        "2000,20000,200000"
    ),
    readers: Annotated[str, typer.Option(help="pread and/or memmap.")] = "pread,memmap",
    steps: Annotated[int, typer.Option(min=11, help="Training steps per run.")] = 120,
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 32,
    results: Results = DEFAULT_RESULTS,
) -> None:
    """Peak RSS and images/s of training on generated 2k/20k/200k-slice stores."""
    from dxkit.bench.scale import run

    size_list = tuple(int(s) for s in sizes.split(","))
    body = run(scratch, results, size_list, tuple(readers.split(",")), steps, batch)
    console.print(Markdown(body))


@bench_app.command("dicom-dask")
def bench_dicom_dask(
    data_root: DataRoot = Path("../shared/data/rsna_ich_dicom"),
    repeats: Annotated[int, typer.Option(min=1, help="Copies of the 100 files per run.")] = 20,
    rounds: Annotated[int, typer.Option(min=1, help="Alternating rounds (best shown).")] = 2,
    results: Results = DEFAULT_RESULTS,
) -> None:
    """Prepare the RSNA files on the process pool and on Dask, 1 and 2 workers, side by side."""
    from dxkit.bench.dicom_dask import run

    body = run(_need(data_root, "RSNA DICOM folder"), repeats, rounds, results)
    console.print(Markdown(body))
