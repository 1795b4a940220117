"""Commands that run models: train, evaluate, predict, lr-find."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dxkit.cli import app

console = Console()
# Each task kind has its own training, evaluation and prediction module with the same
# function names, so the commands stay one set for every workload.
TRAINERS = {
    "classify": "dxkit.train.fit",
    "segment": "dxkit.train.segment_fit",
    "exam": "dxkit.train.exam_fit",
}
EVALUATORS = {
    "classify": "dxkit.evaluate.run",
    "segment": "dxkit.evaluate.segment_run",
    "exam": "dxkit.evaluate.exam_run",
}
PREDICTORS = {"segment": "dxkit.serve.segment_predict", "exam": "dxkit.serve.exam_predict"}


def _kind_of(run_or_checkpoint: Path) -> tuple[str, Path]:
    from dxkit.evaluate.run import resolve_checkpoint
    from dxkit.train.checkpoint import checkpoint_kind

    ckpt = resolve_checkpoint(run_or_checkpoint)
    return checkpoint_kind(ckpt), ckpt


Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set train.epochs=5 (repeatable)."),
]


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML recipe, e.g. configs/breastmnist.yaml")],
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option(help="Continue the latest run of this config.")] = False,
    evaluate: Annotated[bool, typer.Option(help="Evaluate the best checkpoint after.")] = True,
) -> None:
    """Train a model from a recipe into runs/<name>/ and evaluate it."""
    from dxkit.train.config import load_config

    cfg = load_config(config, overrides or [])
    result = importlib.import_module(TRAINERS[cfg.task]).fit(cfg, resume=resume)
    if not result.is_main_process:
        return
    console.print(f"run folder: [bold]{result.run_dir}[/] (best val score {result.best_score})")
    if evaluate:
        evaluator = importlib.import_module(EVALUATORS[cfg.task])
        ev = evaluator.evaluate_checkpoint(result.best_checkpoint)
        _print_scores(ev.split, ev.scores)
        console.print(f"report: {ev.report_html}")


@app.command("evaluate")
def evaluate_cmd(
    run_or_checkpoint: Annotated[Path, typer.Argument(help="A run folder or a .ckpt file.")],
    split: Annotated[str | None, typer.Option(help="test, val or train (default: test)")] = None,
    tta: Annotated[bool | None, typer.Option(help="Average over flipped views.")] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: the run).")] = None,
) -> None:
    """Score a checkpoint and write report.json + report.html."""
    kind, ckpt = _kind_of(run_or_checkpoint)
    evaluator = importlib.import_module(EVALUATORS[kind])
    ev = evaluator.evaluate_checkpoint(ckpt, split=split, tta=tta, out_dir=out)
    _print_scores(ev.split, ev.scores)
    console.print(f"report: {ev.report_json} and {ev.report_html}")


@app.command()
def predict(
    checkpoint: Annotated[
        Path, typer.Argument(help="A .ckpt file, a run folder, an exam bundle or an .onnx file.")
    ],
    files: Annotated[
        list[Path], typer.Argument(help="Scans (PNG/JPEG/DICOM/npy) or an exam folder.")
    ],
    out: Annotated[Path | None, typer.Option(help="Write a CSV (and masks) here.")] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Classifiers: predict on Dask (local, local:N or tcp://HOST:PORT) over files, "
            "folders or a manifest (path column); needs --out."
        ),
    ] = None,
) -> None:
    """Print (or write as CSV) the probability of each finding for each scan."""
    from dxkit.serve.predictor import Predictor

    if scheduler is not None:
        _predict_on_dask(checkpoint, files, out, scheduler)
        return
    if checkpoint.suffix.lower() == ".onnx":
        from dxkit.serve.onnx_predictor import OnnxPredictor

        predictor: Predictor | OnnxPredictor = OnnxPredictor.from_path(checkpoint)
    else:
        kind, ckpt = _kind_of(checkpoint)
        if kind in PREDICTORS:
            renderable = importlib.import_module(PREDICTORS[kind]).run_predict(ckpt, files, out)
            console.print(renderable)
            return
        predictor = Predictor.from_checkpoint(ckpt)
    predictions = predictor.predict_files(files)
    names = predictor.label_names
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", *names, *[f"{n}_positive" for n in names]])
            for p in predictions:
                writer.writerow(
                    [p.source, *[f"{p.probabilities[n]:.6f}" for n in names]]
                    + [int(p.positive[n]) for n in names]
                )
        console.print(f"wrote {len(predictions)} rows to {out}")
        return
    table = Table("file", *names)
    for p in predictions:
        cells = [f"{p.probabilities[n]:.4f}{' +' if p.positive[n] else ''}" for n in names]
        table.add_row(p.source, *cells)
    console.print(table)


def _predict_on_dask(checkpoint: Path, files: list[Path], out: Path | None, scheduler: str) -> None:
    from dxkit.errors import ConfigError
    from dxkit.serve.dask_predict import predict_dask, resolve_inputs

    kind, ckpt = _kind_of(checkpoint)
    if kind != "classify" or out is None:
        raise ConfigError(
            f"{checkpoint}: --scheduler runs classifier checkpoints (this is {kind!r}) and "
            "needs --out predictions.csv"
        )
    table = predict_dask(ckpt, resolve_inputs(files), out, scheduler)
    console.print(f"wrote {len(table)} rows to {out} (parts in {out}.parts)")


@app.command("lr-find")
def lr_find(
    config: Annotated[Path, typer.Argument(help="YAML recipe.")],
    overrides: Overrides = None,
    out: Annotated[Path | None, typer.Option(help="Folder for lr_find.png.")] = None,
    steps: Annotated[int, typer.Option(help="Number of learning rates to try.")] = 100,
) -> None:
    """Sweep the learning rate (Lightning's LR finder), plot loss vs lr, suggest one."""
    from dxkit.train.config import load_config
    from dxkit.train.lr_find import find_lr

    cfg = load_config(config, overrides or [])
    result = find_lr(cfg, out_dir=out, num_training=steps)
    console.print(f"suggested learning rate: [bold]{result.suggestion:.3g}[/]")
    console.print(f"plot: {result.plot}")


def _print_scores(split: str, scores: dict[str, float]) -> None:
    text = ", ".join(f"{k.upper()} {v:.4f}" for k, v in scores.items())
    console.print(f"{split}: {text}")
