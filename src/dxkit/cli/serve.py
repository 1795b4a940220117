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
TOKEN_ENV = "DXKIT_TOKEN"  # as dxkit.serve.auth (not imported here: it loads FastAPI)


@app.command()
def serve(
    models: Annotated[
        list[Path],
        typer.Argument(help="Checkpoints (.ckpt), run folders, exam bundles or exported .onnx."),
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind; loopback unless told (beyond it: a token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=TOKEN_ENV,
            help="Require 'Authorization: Bearer <token>'. Prefer the DXKIT_TOKEN environment "
            "variable or --token-file: a value given as --token is visible to every local "
            "user in the process list.",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="Read the bearer token from this file (first line; keep it 0600)."),
    ] = None,
    insecure_no_token: Annotated[
        bool,
        typer.Option(
            "--insecure-no-token",
            help="Allow binding beyond loopback without a token: anyone who can reach the "
            "port can upload scans.",
        ),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A Host name clients may use besides the loopback names (repeat; '*' for "
            "any). The --host address is added when it is a specific one.",
        ),
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

    secret = read_token(token, token_file)
    if host not in LOOPBACK and not secret and not insecure_no_token:
        raise ConfigError(
            f"--host {host} serves beyond this machine, and no token is set; set one with "
            f"{TOKEN_ENV}=<secret> or --token-file FILE (or pass --insecure-no-token to let "
            "anyone on the network upload scans)"
        )
    hosts = serve_hosts(host, allowed_host or [])
    # Pillow's own decompression-bomb guard, at our limit (this process only serves).
    Image.MAX_IMAGE_PIXELS = max_pixels
    server = create_app(
        models,
        token=secret,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        threads=threads,
        parallel=parallel,
        allowed_hosts=hosts,
    )
    if host not in LOOPBACK and not secret:
        console.print(
            f"[bold yellow]warning:[/] listening on {host} without a token "
            "(--insecure-no-token): anyone who can reach this port can upload scans"
        )
    shown = f"[{host}]" if ":" in host else host
    console.print(f"dxkit serving {len(server.state.models)} model(s) at http://{shown}:{port}/")
    console.print(f"answering to Host names: {', '.join(hosts)}")
    uvicorn.run(server, host=host, port=port, access_log=False, log_level="warning")


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The bearer token from ``--token``/``DXKIT_TOKEN`` or ``--token-file`` (not both)."""
    if token_file is None:
        return token or None
    if token:
        raise ConfigError(f"both a token ({TOKEN_ENV} or --token) and --token-file; give one")
    try:
        lines = token_file.read_text().splitlines()
    except OSError as err:
        raise ConfigError(f"--token-file {token_file}: cannot read it ({err.strerror})") from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigError(f"--token-file {token_file}: the file is empty; write the token in it")
    return secret


def serve_hosts(host: str, extra: list[str]) -> list[str]:
    """Host names the server answers to: loopback, the bound address when specific, extras."""
    hosts = list(LOOPBACK)
    if host not in ("0.0.0.0", "::", ""):
        hosts.append(host)
    hosts += [h.strip().lower() for h in extra if h.strip()]
    return list(dict.fromkeys(hosts))


@app.command()
def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A classifier or segmenter .ckpt, an exam bundle.ckpt, or a run folder."
        ),
    ],
    format: Annotated[str, typer.Option("--format", help="Export format.")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="Output .onnx (default: beside it).")] = None,
    check: Annotated[bool, typer.Option(help="Compare ONNX Runtime with PyTorch after.")] = True,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Static int8 (ONNX Runtime QDQ, conv trunk) calibrated on the run's training "
            "scans, written as <stem>.int8.onnx (an exam bundle: bundle.int8.ckpt, its plane "
            "networks int8); checked against fp32 on the run's held-out "
            "scans and refused (exit 2, with the figures) beyond --max-auc-change / "
            "--max-prob-change. dxkit serve and dxkit predict load it like any .onnx.",
        ),
    ] = False,
    max_auc_change: Annotated[
        float | None,
        typer.Option(help="--int8: largest |ΔAUC| of any finding accepted (default 0.005)."),
    ] = None,
    max_prob_change: Annotated[
        float | None,
        typer.Option(help="--int8: largest |Δ probability| of any scan accepted (default 0.05)."),
    ] = None,
) -> None:
    """Export a checkpoint to ONNX (+ JSON sidecar): a classifier with its preprocessing
    inside the graph, a segmenter's maps, an exam bundle's plane networks."""
    from dxkit.infer.checkpoint import resolve_checkpoint
    from dxkit.infer.export import export_onnx, sidecar_path

    if format.lower() != "onnx":
        raise ConfigError(f"--format {format!r}: only 'onnx' is supported")
    ckpt = resolve_checkpoint(checkpoint)
    if int8:
        from dxkit.evaluate import int8_export
        from dxkit.infer import quantize
        from dxkit.infer.checkpoint import checkpoint_kind

        export_kind = (
            int8_export.export_exam_int8
            if checkpoint_kind(ckpt) == "exam"
            else int8_export.export_int8
        )
        path, result = export_kind(
            ckpt,
            out,
            max_auc_change=quantize.DEFAULT_MAX_AUC_CHANGE
            if max_auc_change is None
            else max_auc_change,
            max_prob_change=quantize.DEFAULT_MAX_PROB_CHANGE
            if max_prob_change is None
            else max_prob_change,
        )
        sidecar = sidecar_path(path)
        console.print(f"wrote {path}" + (f" and {sidecar.name}" if sidecar.is_file() else ""))
        console.print(f"int8 check vs fp32: {result.summary()}", highlight=False)
        return
    path = export_onnx(ckpt, out)
    console.print(f"wrote {path} and {sidecar_path(path).name}")
    if check:
        diff = parity_check(ckpt, path)
        console.print(f"check: max |Δ probability| PyTorch vs ONNX Runtime = {diff:.2e}")


def parity_check(checkpoint: Path, onnx_path: Path, seed: int = 0) -> float:
    """Max absolute probability difference on generated inputs of the checkpoint's kind
    (Hounsfield-like for CT, 0–255 otherwise) at 1.5× the model size (exercising the resize)."""
    from dxkit.infer.checkpoint import checkpoint_kind

    kind = checkpoint_kind(checkpoint)
    if kind == "segment":
        from dxkit.infer.segment_onnx import check_segment_export

        diff = check_segment_export(checkpoint, onnx_path, seed)
    elif kind == "exam":
        from dxkit.infer.exam_onnx import check_exam_export

        diff = check_exam_export(checkpoint, onnx_path, seed)
    else:
        diff = _classifier_difference(checkpoint, onnx_path, seed)
    if diff > 1e-4:
        raise CheckpointError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch by {diff:.2e} in probability "
            "(> 1e-4); do not use this export, and report the model name"
        )
    return diff


def _classifier_difference(checkpoint: Path, onnx_path: Path, seed: int) -> float:
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
    return max(
        abs(x.probabilities[k] - y.probabilities[k])
        for x, y in zip(a, b, strict=True)
        for k in x.probabilities
    )
