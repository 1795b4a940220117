"""``dxkit bench exam``: exam models on real volumes, and the speed of exam inference on CPU.

Two parts, each writing its own section of ``benchmarks/RESULTS.md``:

- ``adrenal`` (:mod:`dxkit.bench.exam_adrenal`): slice-stack vs 3-D network on the real
  AdrenalMNIST3D 64³ volumes beside the published 3-D rows.
- ``latency`` (:mod:`dxkit.bench.exam_latency`): per-exam latency and peak memory of the
  MRNet model along several inference paths against a slice-at-a-time eager loop.

Training runs and memory measurements happen in child processes of this module:
``python -m dxkit.bench.exam THREADS adrenal KIND NPZ MINUTES SEED WORK EPOCHS`` or
``python -m dxkit.bench.exam THREADS memory "FAMILY: PATH" WORK SEED SETUP_JSON``; each prints
one JSON line.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dxkit.errors import ConfigError, MissingFileError

PARTS = ("adrenal", "latency")
WORK = Path("runs") / "bench-exam"  # trained weights, ONNX graphs, training runs


def load_average() -> str:
    """The 1-minute load average (the machine may be shared)."""
    return f"{os.getloadavg()[0]:.1f}"


def run_child(args: list[str], threads: int) -> dict[str, Any]:
    """Run ``python -m dxkit.bench.exam THREADS *args``; its JSON result plus wall seconds."""
    cmd = [sys.executable, "-m", "dxkit.bench.exam", str(threads), *args]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args[:3]} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": time.perf_counter() - start, **out}


def run_adrenal(
    npz: Path,
    minutes: float,
    threads: int,
    work: Path,
    results: Path | None,
    epochs: int,
    seed: int = 0,
) -> str:
    """Train and score both AdrenalMNIST3D models (one child each, in turn); write the table."""
    from dxkit.bench.exam_adrenal import TRAINERS, adrenal_table, write_adrenal

    torch.set_num_threads(threads)  # the section's machine line names the children's threads
    loads, rows = [load_average()], []
    for kind in TRAINERS:
        rows.append(
            run_child(
                ["adrenal", kind, str(npz), str(minutes), str(seed), str(work), str(epochs)],
                threads,
            )
        )
        loads.append(load_average())
    body = adrenal_table(rows, minutes, threads, f"{min(loads)}–{max(loads)}")
    write_adrenal(body, minutes, epochs, results)
    return body


def run_exam_bench(
    data_root: Path = Path("../shared/data/medmnist"),
    parts: tuple[str, ...] = PARTS,
    results: Path | None = None,
    minutes: float = 9.0,
    repeats: int = 3,
    threads: int = 1,
    work: Path = WORK,
    memory: bool = True,
    epochs: int | None = None,
) -> str:
    """``dxkit bench exam``: the AdrenalMNIST3D comparison and/or the latency table; returns
    the markdown written into ``results`` (default ``benchmarks/RESULTS.md``)."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ConfigError(f"unknown bench exam part(s) {unknown}; use any of {', '.join(PARTS)}")
    from dxkit.bench.exam_adrenal import EPOCHS

    epochs = EPOCHS if epochs is None else epochs
    if minutes <= 0 or repeats < 1 or threads < 1 or epochs < 1:
        raise ConfigError(
            f"--minutes {minutes}, --repeats {repeats}, --threads {threads}, --epochs {epochs}: "
            "use a positive budget and at least one round, thread and epoch"
        )
    npz = data_root / "adrenalmnist3d_64.npz"
    if "adrenal" in parts and not npz.is_file():
        raise MissingFileError(f"{npz} not found; pass --data-root (the MedMNIST folder)")
    bodies = []
    if "adrenal" in parts:
        bodies.append(run_adrenal(npz, minutes, threads, work / "adrenal", results, epochs))
    if "latency" in parts:
        from dxkit.bench.exam_latency import latency

        bodies.append(latency(work / "latency", repeats, threads, memory, results)[0])
    return "\n\n".join(bodies)


def _main(argv: list[str]) -> None:
    torch.set_num_threads(int(argv[0]))
    logging.basicConfig(level=logging.WARNING)
    if argv[1] == "adrenal":
        from dxkit.bench.exam_adrenal import TRAINERS

        kind, npz, minutes, seed, work, epochs = argv[2:8]
        out = TRAINERS[kind](Path(npz), float(minutes), int(seed), Path(work), int(epochs))
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        from dxkit.bench.exam_latency import LatencySetup, measure_memory

        shape = json.loads(argv[5])
        shape["fixture_slices"] = tuple(shape["fixture_slices"])
        out = measure_memory(argv[2], Path(argv[3]), int(argv[4]), LatencySetup(**shape))
    print(json.dumps(out))


if __name__ == "__main__":
    _main(sys.argv[1:])
