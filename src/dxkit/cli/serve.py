"""``dxkit serve`` (the web page and REST API) and ``dxkit export`` (ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dxkit.cli import app
from dxkit.errors import CheckpointError, ConfigError

console = Console(stderr=True)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    models: Annotated[
        list[Path],
        typer.Argument(help="Checkpoints (.ckpt), run folders, exam bundles or exported .onnx."),
    ],
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless told.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(envvar="DXKIT_TOKEN", help="Require 'Authorization: Bearer <token>'."),
    ] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest request body, MB.")] = 256,
    max_pixels: Annotated[
        int, typer.Option(help="Most decoded pixel values per request (decompression bombs).")
    ] = 64 * 2**20,
    threads: Annotated[int, typer.Option(help="Intra-op threads per inference.")] = 1,
    parallel: Annotated[
        int | None, typer.Option(help="Inferences at a time (default: one per CPU core).")
    ] = None,
) -> None:
    """Serve models behind a web page and a REST API (/docs for the schema)."""
    import uvicorn
    from PIL import Image

    from dxkit.serve.app import create_app

    # Pillow's own decompression-bomb guard, at our limit (this process only serves).
    Image.MAX_IMAGE_PIXELS = max_pixels
    server = create_app(
        models,
        token=token,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        threads=threads,
        parallel=parallel,
    )
    if host not in LOOPBACK and not token:
        console.print(
            f"[bold yellow]warning:[/] listening on {host} without --token: anyone who can reach "
            "this port can upload scans"
        )
    shown = f"[{host}]" if ":" in host else host
    console.print(f"dxkit serving {len(server.state.models)} model(s) at http://{shown}:{port}/")
    uvicorn.run(server, host=host, port=port, access_log=False, log_level="warning")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A classifier .ckpt or its run folder.")],
    format: Annotated[str, typer.Option("--format", help="Export format.")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="Output .onnx (default: beside it).")] = None,
    check: Annotated[bool, typer.Option(help="Compare ONNX Runtime with PyTorch after.")] = True,
) -> None:
    """Export a checkpoint to ONNX with its preprocessing inside the graph (+ JSON sidecar)."""
    from dxkit.infer.checkpoint import resolve_checkpoint
    from dxkit.infer.export import export_onnx, sidecar_path

    if format.lower() != "onnx":
        raise ConfigError(f"--format {format!r}: only 'onnx' is supported")
    ckpt = resolve_checkpoint(checkpoint)
    path = export_onnx(ckpt, out)
    console.print(f"wrote {path} and {sidecar_path(path).name}")
    if check:
        diff = parity_check(ckpt, path)
        console.print(f"check: max |Δ probability| PyTorch vs ONNX Runtime = {diff:.2e}")


def parity_check(checkpoint: Path, onnx_path: Path, seed: int = 0) -> float:
    """Max absolute probability difference on generated inputs of the checkpoint's kind
    (Hounsfield-like for CT, 0–255 otherwise) at 1.5× the model size (exercising the resize)."""
    import numpy as np

    from dxkit.infer.onnx_predictor import OnnxPredictor
    from dxkit.infer.predictor import Predictor

    torch_model = Predictor.from_checkpoint(checkpoint, device="cpu")
    onnx_model = OnnxPredictor.from_path(onnx_path)
    pre = onnx_model.preprocessing
    rng = np.random.default_rng(seed)
    side = int((pre.size or 64) * 1.5)
    shape = (1,) + (side,) * pre.spatial_dims
    if pre.windows or pre.ct is not None:
        arrays = [rng.uniform(-1100, 1500, shape).astype(np.float32) for _ in range(2)]
    else:
        chans = 3 if pre.in_chans == 3 else 1
        shape = (chans, *shape[1:])
        arrays = [rng.uniform(0, 255, shape).astype(np.float32) for _ in range(2)]
    names = ["check-1", "check-2"]
    a = torch_model.predict_arrays(arrays, names)
    b = onnx_model.predict_arrays(arrays, names)
    diff = max(
        abs(x.probabilities[k] - y.probabilities[k])
        for x, y in zip(a, b, strict=True)
        for k in x.probabilities
    )
    if diff > 1e-4:
        raise CheckpointError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch by {diff:.2e} in probability "
            "(> 1e-4); do not use this export, and report the model name"
        )
    return diff
