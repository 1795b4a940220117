"""``dxkit bench serve``: a bounded load run against the server on loopback.

One server process holds the same 256 px 2-D classifier twice — the PyTorch checkpoint
(eager) and its ONNX export — and an asynchronous httpx client sends PNG uploads to
``/v1/predict`` at a fixed concurrency, alternating the two backends in blocks so machine
load drifts hit both alike. Reported per backend: p50/p99 latency, requests/s, errors, and
the server's resident memory before and after (a leak shows as growth). A last row sends
``OVERSIZED_UPLOADS`` concurrent chunked uploads (no Content-Length) well over the
server's limit and reports their answers and the server's peak RSS growth meanwhile
(target < ``TARGET_OVERSIZED_MB``: refused bodies must not be held in memory).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dxkit import __version__
from dxkit.bench.results import write_section
from dxkit.errors import DxkitError

log = logging.getLogger(__name__)
TARGET_SPEEDUP = 1.5
TARGET_TAIL = 3.0
SERVER_LIMIT_MB = 64  # --max-upload-mb of the bench server (PNG uploads are ~70 KB)
OVERSIZED_UPLOADS = 4
OVERSIZED_MB = 250  # each, the size the issue-16 review sent
TARGET_OVERSIZED_MB = 50.0


def write_random_checkpoint(
    path: Path,
    model: str = "resnet18",
    size: int = 256,
    seed: int = 0,
    spatial_dims: int = 2,
    options: dict[str, Any] | None = None,
) -> Path:
    """A dxkit checkpoint of a randomly initialised 1-channel binary classifier (for timing
    and plumbing: the weights' values change neither the cost nor the data path)."""
    from dxkit.models.registry import create_model
    from dxkit.preprocess.spec import Preprocessing

    torch.manual_seed(seed)
    options = dict(options or {})
    net = create_model(model, 1, 1, spatial_dims=spatial_dims, **options).eval()
    pre = Preprocessing(
        spatial_dims=spatial_dims,  # type: ignore[arg-type]
        in_chans=1,
        size=size,
        mean=[0.5],
        std=[0.25],
    )
    meta = {
        "format": "dxkit-checkpoint/1",
        "kind": "classify",
        "dxkit_version": __version__,
        "preprocessing": pre.model_dump(mode="json"),
        "label_names": ["finding"],
        "task": "binary",
        "dataset": "bench",
        "model": {
            "name": model,
            "in_chans": 1,
            "num_classes": 1,
            "spatial_dims": spatial_dims,
            "options": options,
        },
        "thresholds": [0.5],
    }
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "dxkit": meta}, path)
    return path


def bench_png(size: int = 256, seed: int = 0) -> bytes:
    """A grey PNG of ``size``² with smooth structure and noise (what uploads cost to decode)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 120 + 60 * np.sin(6 * xx) * np.cos(4 * yy) + rng.normal(0, 12, (size, size))
    buf = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Phase:
    """The measurements of one backend over all its blocks."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    rss_before: float = 0.0
    rss_after: float = 0.0

    def row(self, name: str) -> dict[str, float | str]:
        lat = np.asarray(self.latencies) * 1000
        n = len(self.latencies) + self.errors
        return {
            "backend": name,
            "requests": n,
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "rps": n / self.seconds if self.seconds else float("nan"),
            "errors": self.errors,
            "rss_before": self.rss_before,
            "rss_after": self.rss_after,
        }


async def _load(
    url: str, model: str, png: bytes, count: int, concurrency: int, phase: Phase
) -> None:
    import httpx

    sent = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < count:
            sent += 1
            start = time.perf_counter()
            try:
                r = await client.post(
                    url, data={"model": model}, files={"files": ("scan.png", png, "image/png")}
                )
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                phase.latencies.append(time.perf_counter() - start)
            else:
                phase.errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        phase.seconds += time.perf_counter() - start


@dataclass
class Oversized:
    """Concurrent oversized chunked uploads: what came back and the server's RSS."""

    answers: list[str] = field(default_factory=list)
    rss_before: float = 0.0
    rss_peak: float = 0.0

    @property
    def growth(self) -> float:
        return self.rss_peak - self.rss_before


async def _oversized(url: str, count: int, mb: int) -> list[str]:
    """``count`` concurrent POSTs of ``mb`` MB each, streamed chunked (no Content-Length);
    each answer as its status code. Raw HTTP/1.1 over asyncio streams (httpx cannot read an
    answer that arrives while it is still sending): the answer is read while sending, and
    sending stops when it arrives, as a browser does."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    block = bytes(2**20)  # one block sent again and again: the client stays small
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=bench\r\n\r\n"
    ).encode()
    frame = f"{len(block):x}\r\n".encode() + block + b"\r\n"

    async def one() -> str:
        reader, writer = await asyncio.open_connection(host, port)
        answer = asyncio.create_task(reader.readline())
        try:
            writer.write(head)
            for _ in range(mb):
                if answer.done():
                    break
                writer.write(frame)
                await writer.drain()
            else:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except ConnectionError:
            pass  # the server answered and hung up: the answer is read below
        try:
            line = await asyncio.wait_for(answer, timeout=60)
            return line.split()[1].decode() if line else "closed without an answer"
        except (ConnectionError, TimeoutError) as err:
            return type(err).__name__
        finally:
            writer.close()

    return list(await asyncio.gather(*(one() for _ in range(count))))


def measure_oversized(server: Any, url: str, count: int, mb: int) -> Oversized:
    """Send the oversized uploads while sampling the server's RSS every 20 ms."""
    import threading

    result = Oversized(rss_before=server.memory_info().rss / 2**20)
    result.rss_peak = result.rss_before
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            result.rss_peak = max(result.rss_peak, server.memory_info().rss / 2**20)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result.answers = asyncio.run(_oversized(url, count, mb))
    finally:
        done.set()
        sampler.join()
    return result


def _start_server(models: list[Path], port: int, threads: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys, uvicorn\n"
        "from dxkit.serve.app import create_app\n"
        f"app = create_app([*sys.argv[2:]], threads={threads}, "
        f"max_upload_mb={SERVER_LIMIT_MB})\n"
        "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning', "
        "access_log=False)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(port), *map(str, models)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_ready(proc: subprocess.Popen[bytes], base: str, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise DxkitError(f"the bench server exited with code {proc.returncode}: {err}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise DxkitError(f"the bench server did not answer /healthz within {timeout:.0f} s")


def run(
    requests: int = 500,
    concurrency: int = 8,
    size: int = 256,
    model: str = "resnet18",
    blocks: int = 5,
    threads: int = 1,
    results: Path | None = None,
    seed: int = 0,
) -> str:
    """Load both backends with ``requests`` uploads each at ``concurrency`` and write the
    table to the results file (section ``serve``); returns the markdown body.

    The server runs as ``dxkit serve`` does by default: one intra-op thread per inference
    and one inference per CPU core at a time.
    """
    import psutil

    from dxkit.infer.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="dxkit-bench-serve-") as tmp:
        ckpt = write_random_checkpoint(Path(tmp) / "eager" / "bench.ckpt", model, size, seed)
        onnx_path = export_onnx(ckpt, Path(tmp) / "onnx" / "bench.onnx")
        png = bench_png(size, seed)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        proc = _start_server([ckpt, onnx_path], port, threads)
        try:
            _wait_ready(proc, base)
            server = psutil.Process(proc.pid)
            names = {"eager PyTorch": "bench", "ONNX Runtime": "bench-onnx"}
            phases = {name: Phase() for name in names}
            for served in names.values():  # warm-up (not measured)
                asyncio.run(_load(base + "/v1/predict", served, png, 16, concurrency, Phase()))
            per_block = max(1, requests // blocks)
            for b in range(blocks):
                count = per_block if b < blocks - 1 else requests - per_block * (blocks - 1)
                for name, served in names.items():
                    phase = phases[name]
                    rss = server.memory_info().rss / 2**20
                    if b == 0:
                        phase.rss_before = rss
                    asyncio.run(_load(base + "/v1/predict", served, png, count, concurrency, phase))
                    phase.rss_after = server.memory_info().rss / 2**20
            oversized = measure_oversized(
                server, base + "/v1/predict", OVERSIZED_UPLOADS, OVERSIZED_MB
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    rows = {name: phase.row(name) for name, phase in phases.items()}
    body = _table(rows, requests, concurrency, size, model, threads)
    body += "\n\n" + _oversized_table(oversized)
    write_section(
        "serve",
        "Serving load (REST API on loopback)",
        f"dxkit bench serve --requests {requests} --concurrency {concurrency} --threads {threads}",
        body,
        results,
    )
    return body


def _table(
    rows: dict[str, dict[str, float | str]],
    requests: int,
    concurrency: int,
    size: int,
    model: str,
    threads: int,
) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"{model} (random init), {size}×{size} grey PNG uploads to `/v1/predict`, "
        f"{requests} requests per backend at concurrency {concurrency}, one server process "
        f"(uvicorn, {os.cpu_count()} CPUs, {threads} intra-op thread(s) per inference, one "
        f"inference per core at a time), backends alternated in blocks; 1-min load average "
        f"at the end {load:.1f}.",
        "",
        "| backend | requests | p50 ms | p99 ms | p99/p50 | req/s | errors | RSS before MB "
        "| RSS after MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        tail = float(r["p99"]) / float(r["p50"])
        lines.append(
            f"| {r['backend']} | {r['requests']} | {float(r['p50']):.1f} | {float(r['p99']):.1f} "
            f"| {tail:.2f} | {float(r['rps']):.1f} | {r['errors']} | {float(r['rss_before']):.0f} "
            f"| {float(r['rss_after']):.0f} |"
        )
    eager, onnx = rows["eager PyTorch"], rows["ONNX Runtime"]
    speedup = float(onnx["rps"]) / float(eager["rps"])
    tails = [float(r["p99"]) / float(r["p50"]) for r in rows.values()]
    errors = sum(int(r["errors"]) for r in rows.values())
    growth = max(float(r["rss_after"]) - float(r["rss_before"]) for r in rows.values())
    verdict = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    lines += [
        "",
        f"ONNX / eager throughput: **{speedup:.2f}×** (target ≥ {TARGET_SPEEDUP}×: "
        f"{verdict(speedup >= TARGET_SPEEDUP)}); worst p99/p50: {max(tails):.2f} (target < "
        f"{TARGET_TAIL}: {verdict(max(tails) < TARGET_TAIL)}); errors: {errors} (target 0: "
        f"{verdict(errors == 0)}); largest RSS growth over a backend's run: {growth:+.0f} MB.",
    ]
    return "\n".join(lines)


def _oversized_table(result: Oversized) -> str:
    answers = ", ".join(sorted(result.answers))
    ok = result.growth < TARGET_OVERSIZED_MB and all(a != "200" for a in result.answers)
    return "\n".join(
        [
            f"{OVERSIZED_UPLOADS} concurrent chunked uploads (no Content-Length) of "
            f"{OVERSIZED_MB} MB each to a server limited to {SERVER_LIMIT_MB} MB "
            "(`--max-upload-mb`), after the load above:",
            "",
            "| uploads | MB each | answers | RSS before MB | RSS peak MB | growth MB |",
            "|---|---|---|---|---|---|",
            f"| {OVERSIZED_UPLOADS} | {OVERSIZED_MB} | {answers} | {result.rss_before:.0f} "
            f"| {result.rss_peak:.0f} | {result.growth:+.0f} |",
            "",
            f"Server RSS growth under oversized chunked uploads: {result.growth:+.0f} MB "
            f"(target < {TARGET_OVERSIZED_MB:.0f} MB, every upload refused: "
            f"{'met' if ok else '**missed**'}). Before the fix each such body was held in "
            "memory up to the limit.",
        ]
    )
