"""Commands that run models: train, evaluate, predict, lr-find."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dxkit.cli import app
from dxkit.cli.progress import progress_bar
from dxkit.errors import InvalidScanError

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
PREDICTORS = {"segment": "dxkit.cli.predict_segment", "exam": "dxkit.cli.predict_exam"}


def _kind_of(run_or_checkpoint: Path) -> tuple[str, Path]:
    from dxkit.errors import CheckpointError
    from dxkit.infer.checkpoint import checkpoint_kind, resolve_checkpoint

    ckpt = resolve_checkpoint(run_or_checkpoint)
    kind = checkpoint_kind(ckpt)
    if kind not in EVALUATORS:  # an exam run's per-network training checkpoint
        raise CheckpointError(
            f"{ckpt}: a {kind!r} checkpoint (one network of an exam run); pass the run folder "
            "or its checkpoints/bundle.ckpt"
        )
    return kind, ckpt


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
    from dxkit.train.run_folder import cleaned_up_on_failure

    cfg = load_config(config, overrides or [])
    with cleaned_up_on_failure(cfg, resume=resume):
        result = importlib.import_module(TRAINERS[cfg.task]).fit(cfg, resume=resume)
    if not result.is_main_process:
        return
    console.print(f"run folder: [bold]{result.run_dir}[/] (best val score {result.best_score})")
    if evaluate:
        evaluator = importlib.import_module(EVALUATORS[cfg.task])
        with progress_bar("evaluating") as progress:
            ev = evaluator.evaluate_checkpoint(result.best_checkpoint, progress=progress)
        _print_scores(ev.split, ev.scores, getattr(ev, "payload", None))
        console.print(f"report: {ev.report_html}")


@app.command("evaluate")
def evaluate_cmd(
    run_or_checkpoint: Annotated[Path, typer.Argument(help="A run folder or a .ckpt file.")],
    split: Annotated[
        str | None,
        typer.Option(
            help="test, val or train (default: the held-out test split; val chose the "
            "checkpoint and thresholds, and the report says so)"
        ),
    ] = None,
    tta: Annotated[bool | None, typer.Option(help="Average over flipped views.")] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: the run).")] = None,
) -> None:
    """Score a checkpoint and write report.json + report.html."""
    kind, ckpt = _kind_of(run_or_checkpoint)
    evaluator = importlib.import_module(EVALUATORS[kind])
    with progress_bar("evaluating") as progress:
        ev = evaluator.evaluate_checkpoint(
            ckpt, split=split, tta=tta, out_dir=out, progress=progress
        )
    _print_scores(ev.split, ev.scores, getattr(ev, "payload", None))
    console.print(f"report: {ev.report_json} and {ev.report_html}")


@app.command()
def predict(
    checkpoint: Annotated[
        Path, typer.Argument(help="A .ckpt file, a run folder, an exam bundle or an .onnx file.")
    ],
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Scans (PNG/JPEG/DICOM/npy) and folders of them (searched recursively; a 3-D "
            "model reads each DICOM series as one volume), or exam folders. Unreadable scans "
            "are skipped and listed (errors.csv beside --out): exit 1 if some failed, 2 if all."
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="Write a CSV (and masks) here.")] = None,
    exam: Annotated[
        str | None, typer.Option(help="With an MRNet split folder: only this exam id.")
    ] = None,
    strict_inputs: Annotated[
        bool, typer.Option(help="Refuse scans unlike the training data (see input_warning).")
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Classifiers: predict on Dask (local, local:N or tcp://HOST:PORT) over files, "
            "folders or a manifest (path column); needs --out."
        ),
    ] = None,
) -> None:
    """Print (or write as CSV) the probability of each finding for each scan."""
    from dxkit.cli.batch import predict_scans, report_failures
    from dxkit.infer.onnx_predictor import OnnxPredictor, onnx_kind
    from dxkit.infer.predictor import Predictor

    if scheduler is not None:
        _predict_on_dask(checkpoint, files, out, scheduler)
        return
    predictor: Predictor | OnnxPredictor
    if checkpoint.suffix.lower() == ".onnx":
        kind, ckpt = onnx_kind(checkpoint), checkpoint
    else:
        kind, ckpt = _kind_of(checkpoint)
    if kind in PREDICTORS:  # segmenters and exam bundles, checkpoints or ONNX exports
        chosen: dict[str, Any] = {"exam_id": exam} if exam is not None and kind == "exam" else {}
        chosen["strict_inputs"] = strict_inputs
        module = importlib.import_module(PREDICTORS[kind])
        with progress_bar("predicting") as progress:
            renderable, failed, done = module.run_predict(
                ckpt, files, out, progress=progress, **chosen
            )
        if done:
            console.print(renderable)
        report_failures(failed, done, out)
        return
    if checkpoint.suffix.lower() == ".onnx":
        predictor = OnnxPredictor.from_path(checkpoint)
    else:
        predictor = Predictor.from_checkpoint(ckpt)
    with progress_bar("predicting") as progress:
        predictions, bad = predict_scans(predictor, files, progress)
    names = predictor.label_names
    flagged = [p for p in predictions if getattr(p, "input_warning", None)]
    if strict_inputs and flagged:
        raise InvalidScanError(
            f"{flagged[0].source}: {flagged[0].input_warning} ({len(flagged)} of "
            f"{len(predictions)} scans); check the inputs, or drop --strict-inputs to predict "
            "with a warning"
        )
    if out is not None and predictions:
        from dxkit.infer.prediction_csv import write_classifier_csv

        write_classifier_csv(out, predictions, names, input_warning=True)
        console.print(f"wrote {len(predictions)} rows to {out}")
    elif predictions:
        table = Table("file", *names)
        for p in predictions:
            cells = [f"{p.probabilities[n]:.3f}{' +' if p.positive[n] else ''}" for n in names]
            table.add_row(p.source, *cells)
        console.print(table)
    for p in flagged:
        console.print(f"[bold yellow]warning:[/] {p.source}: {p.input_warning}", soft_wrap=True)
    report_failures(bad, len(predictions), out)


def _predict_on_dask(checkpoint: Path, files: list[Path], out: Path | None, scheduler: str) -> None:
    from dxkit.errors import ConfigError
    from dxkit.infer.dask_predict import predict_dask, resolve_inputs

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


def _print_scores(split: str, scores: dict[str, float], payload: Any = None) -> None:
    from dxkit.evaluate.verdicts import score_line

    console.print(score_line(split, scores, payload), soft_wrap=True, highlight=False)
    warning = (payload or {}).get("selection_warning")
    if warning:  # scored on a split that chose the checkpoint/thresholds: say so plainly
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
