"""``dxkit explain``: heatmaps of where a model looked, written as PNGs, .npy maps and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dxkit.cli import app
from dxkit.cli.progress import progress_bar

console = Console()


@app.command()
def explain(
    checkpoint: Annotated[
        Path, typer.Argument(help="A classifier .ckpt, an exam bundle.ckpt, or a run folder.")
    ],
    scans: Annotated[
        list[Path],
        typer.Argument(
            help="Scans (PNG/JPEG/DICOM/npy) or folders of them (recursive); exam folders for "
            "an exam bundle. Unreadable ones are skipped and listed in OUT/errors.csv "
            "(exit 1; 2 if none could be read)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs, .npy maps and JSON.")],
    method: Annotated[
        str,
        typer.Option(
            help="gradcam | gradcam++ | scorecam | occlusion (the last two are gradient-free; "
            "scorecam costs one forward pass per channel of the layer)."
        ),
    ] = "gradcam",
    finding: Annotated[
        str | None, typer.Option(help="Finding to explain (default: the most probable).")
    ] = None,
    layer: Annotated[
        str | None, typer.Option(help="Layer path for the CAM (default: the model's own).")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Faithfulness: score drop when the hottest 10% vs a random 10% "
            "of the scan is deleted.",
        ),
    ] = False,
    fill: Annotated[
        str, typer.Option(help="How --check deletes pixels: mean | blur | road (2-D only).")
    ] = "mean",
    strict_inputs: Annotated[
        bool, typer.Option(help="Refuse scans unlike the training data (input_warning).")
    ] = False,
) -> None:
    """Write a heatmap overlay (and a slice montage for volumes and exams) per scan."""
    from dxkit.cli.batch import report_failures
    from dxkit.errors import ConfigError
    from dxkit.explain.faithfulness import FILLS
    from dxkit.explain.run import SUMMARY, explain_scans
    from dxkit.io.discover import BadScan

    if fill not in FILLS:
        raise ConfigError(f"--fill {fill!r} is unknown; use one of {', '.join(FILLS)}")
    with progress_bar("explaining") as progress:
        summary = explain_scans(
            checkpoint, scans, out, method=method, finding=finding, layer=layer, check=check,
            fill=fill, strict_inputs=strict_inputs, progress=progress,  # type: ignore[arg-type]
        )  # fmt: skip
    table = Table(
        "scan", "finding", "probability", "where", *(["drop top / random"] if check else [])
    )
    for row in summary["scans"]:
        if "planes" in row:
            where = ", ".join(f"{p} slice {v['deciding_slice']}" for p, v in row["planes"].items())
            drops = [v.get("faithfulness") for v in row["planes"].values()]
        else:
            where = ", ".join(f"{k} {v}" for k, v in row["peak"].items())
            drops = [row.get("faithfulness")]
        cells = [Path(row["source"]).name, row["finding"], f"{row['probability']:.3f}", where]
        if check:
            cells.append(
                "; ".join(
                    f"{d['drop_top']:+.3f} / {d['drop_random']:+.3f}: {d['verdict']}"
                    for d in drops
                    if d
                )
            )
        table.add_row(*cells)
    console.print(table)
    console.print(f"method {summary['method']} on layer {summary['layer']}; wrote {out / SUMMARY}")
    if check:
        from dxkit.explain.faithfulness import VERDICT_RULE

        console.print(f"verdict: {VERDICT_RULE}", soft_wrap=True)
    bad = [BadScan(f["source"], f["reason"]) for f in summary.get("failed", [])]
    report_failures(bad, len(summary["scans"]), out / SUMMARY)  # errors.csv beside it
