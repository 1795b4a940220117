"""``dxkit bench dicom-dask``: RSNA preparation on the process pool vs a Dask LocalCluster.

The 100 real head-CT files are repeated (as symlinks) ``repeats`` times; each round runs
``prepare_ct_cache`` with the pool and with ``scheduler="local:N"`` for 1 and 2 workers,
alternating, so load changes hit every variant alike. Dask times include starting the
cluster (measured separately as well) and the per-task Parquet parts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from dxkit.data.ct_cache import CacheRecipe, prepare_ct_cache

PLAN = (("pool", 1), ("dask", 1), ("pool", 2), ("dask", 2))


def _cluster_start_s(workers: int) -> float:
    from dxkit.data.dask_cluster import dask_client

    start = time.perf_counter()
    with dask_client(f"local:{workers}"):
        up = time.perf_counter() - start
    return up


def run(data_dir: Path, repeats: int = 20, rounds: int = 2, results: Path | None = None) -> str:
    """Measure, write the ``dicom-dask`` section of RESULTS.md and return its body."""
    from dxkit.bench.results import write_section

    files = sorted(Path(data_dir).glob("*.dcm"))
    scratch = Path(tempfile.mkdtemp(prefix="dxkit-bench-dask-"))
    times: dict[tuple[str, int], list[float]] = {key: [] for key in PLAN}
    done = 0
    try:
        source = scratch / "source"
        source.mkdir()
        for k in range(repeats):
            for path in files:
                (source / f"r{k:03d}_{path.name}").symlink_to(path.resolve())
        recipe = CacheRecipe.build(size=256)
        load_before = os.getloadavg()[0]
        startup = {w: _cluster_start_s(w) for w in (1, 2)}
        for _ in range(rounds):
            for mode, w in PLAN:
                out = scratch / f"out-{mode}{w}"
                start = time.perf_counter()
                report = prepare_ct_cache(
                    source,
                    out,
                    recipe,
                    workers=w,
                    scheduler=f"local:{w}" if mode == "dask" else None,
                )
                times[(mode, w)].append(time.perf_counter() - start)
                done = report.processed
                shutil.rmtree(out)
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    best = {key: min(v) for key, v in times.items()}
    lines = [
        f"{len(files)} real RSNA head-CT files × {repeats} = {done} files per run (3 windows →"
        f" uint8 256², written to disk); {rounds} alternating rounds, best shown. Dask runs"
        " include starting the LocalCluster.",
        "",
        "| runner | workers | s (best) | all rounds s | files/s | vs pool, same workers "
        "| 1 → 2 workers |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for mode, w in PLAN:
        rate = done / best[(mode, w)]
        vs_pool = best[("pool", w)] / best[(mode, w)]
        scaling = best[(mode, 1)] / best[(mode, 2)] if w == 2 else float("nan")
        lines.append(
            f"| {'process pool' if mode == 'pool' else 'Dask LocalCluster'} | {w} | "
            f"{best[(mode, w)]:.1f} | {', '.join(f'{t:.1f}' for t in times[(mode, w)])} | "
            f"{rate:.0f} | {vs_pool:.2f}× | {'' if w == 1 else f'{scaling:.2f}×'} |"
        )
    lines += [
        "",
        f"- LocalCluster start-up alone: {startup[1]:.1f} s (1 worker), {startup[2]:.1f} s"
        " (2 workers).",
        f"- machine load (1-minute average) at start / end: {load_before:.1f} / {load_after:.1f}"
        f" on {os.cpu_count()} cores.",
    ]
    body = "\n".join(lines)
    write_section(
        "dicom-dask",
        "DICOM preparation: process pool vs Dask LocalCluster (RSNA head CT)",
        f"dxkit bench dicom-dask --repeats {repeats} --rounds {rounds}",
        body,
        results,
    )
    return body
