"""``dxkit bench scale``: is training memory flat in dataset size?

Generates slice stores of 2k, 20k and 200k uint8 slices (1×256×256, as prepared; 200k is
13 GB), then trains a small CNN (SmallResNet, 2 DataLoader workers) for a fixed number of
steps whose batches are drawn at random across the whole set, in a fresh child process
per (size, reader). A sampler thread sums the RSS of the child and its workers (psutil)
every 50 ms; the peak and images/s (after warm-up steps) go to RESULTS.md. Readers:
``pread`` (``StoreDataset``: explicit reads, the file stays in the page cache only) and
``memmap`` (``np.memmap`` shards: touched pages count in RSS). Stores are deleted after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch

from dxkit.data.slice_store import SliceStoreWriter, write_manifest
from dxkit.data.stream import StoreDataset, UnitBatch

SIZES = (2_000, 20_000, 200_000)
SHAPE = (1, 256, 256)
BASE = 512  # distinct generated slices, repeated with a per-slice shift


def generate_store(root: Path, count: int, seed: int = 0) -> None:
    """``count`` slices of smooth random blobs, written block by block (no per-slice loop)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (BASE, 1, 16, 16), dtype=np.uint8)
    base = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)  # (BASE, 1, 256, 256)
    labels = (coarse.reshape(BASE, -1).mean(1) > 127.5).astype(np.float32)
    writer = SliceStoreWriter(root, SHAPE, shard_size=4096)
    refs: list[tuple[int, int]] = []
    for start in range(0, count, BASE):
        n = min(BASE, count - start)
        refs += writer.add_block(base[:n] + np.uint8(start // BASE % 7))
    writer.close()
    idx = np.arange(count)
    manifest = pd.DataFrame(
        {
            "image_id": [f"g{i:07d}" for i in idx],
            "shard": [r[0] for r in refs],
            "offset": [r[1] for r in refs],
            "label": labels[idx % BASE],
            "patient": idx // 40,
            "split": "train",
        }
    )
    write_manifest(root, manifest)


class MemmapDataset(torch.utils.data.Dataset):
    """The comparison reader: slices as views of ``np.memmap`` shards."""

    def __init__(self, root: Path) -> None:
        self.inner = StoreDataset(root, label_columns=["label"])
        self.maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        shard = int(self.inner.shards[index])
        if shard not in self.maps:
            self.maps[shard] = self.inner.store.memmap(shard)
        row = int(self.inner.offsets[index]) // self.inner.store.slice_bytes
        return torch.from_numpy(np.array(self.maps[shard][row])), self.inner.labels[index]


def _tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(RSS, PSS) summed over ``proc`` and its workers. The RSS sum counts each shared page
    (torch's libraries, forked memory) once per process; PSS splits them between sharers."""
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker may exit between the two calls
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return rss, pss


def train_steps(root: Path, reader: str, steps: int, batch: int, warmup: int) -> dict[str, Any]:
    """Train for ``steps`` random batches; peak tree RSS and images/s after ``warmup``."""
    from dxkit.models.registry import create_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    me = psutil.Process()
    peak = [0, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss, pss = _tree_memory(me)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.1)

    dataset: StoreDataset | MemmapDataset = (
        StoreDataset(root, label_columns=["label"]) if reader == "pread" else MemmapDataset(root)
    )
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=steps * batch, generator=torch.Generator()
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=2, collate_fn=UnitBatch()
    )
    model = create_model(
        "smallresnet", 1, 1, widths=(16, 32, 64), depths=(1, 1, 1), strides=(2, 2, 2), stem_stride=4
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    return {
        "peak_rss_mb": peak[0] / 2**20,
        "peak_pss_mb": peak[1] / 2**20,
        "images_per_s": (steps - warmup) * batch / elapsed,
        "loss": float(loss.detach()),
    }


def run(
    scratch: Path,
    results: Path,
    sizes: tuple[int, ...] = SIZES,
    readers: tuple[str, ...] = ("pread", "memmap"),
    steps: int = 120,
    batch: int = 32,
) -> str:
    """Generate each store, train on it with each reader in a child process, tabulate."""
    from dxkit.bench.results import write_section

    rows = []
    for count in sizes:
        root = scratch / f"store-{count}"
        t0 = time.perf_counter()
        generate_store(root, count)
        gen_s = time.perf_counter() - t0
        try:
            for reader in readers:
                cmd = [sys.executable, "-m", "dxkit.bench.scale", str(root), reader]
                cmd += ["--steps", str(steps), "--batch", str(batch)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"slices": count, "reader": reader, "gen_s": gen_s, **r})
        finally:
            shutil.rmtree(root, ignore_errors=True)
    body = _table(rows, steps, batch)
    command = f"nice -n 10 dxkit bench scale --steps {steps} --batch {batch}"
    write_section("scale", "Training memory vs dataset size (slice store)", command, body, results)
    return body


def _table(rows: list[dict[str, Any]], steps: int, batch: int) -> str:
    lines = [
        f"Each run: {steps} steps × batch {batch} drawn at random (with replacement) across the"
        " whole store (a full epoch of 200k slices would take hours on 2 shared cores), small"
        " CNN (SmallResNet 16/32/64, stem stride 4), 2 DataLoader workers, 1×256×256 uint8"
        " slices → float per batch. Peak RSS and PSS = main + workers (psutil, sampled every"
        " 100 ms); the RSS sum counts shared pages (torch's libraries) once per process, PSS"
        " shares them out. Images/s is noisy here: ~8 agents share the 2 cores.",
        "",
        "| slices | store GB | reader | generate s | peak RSS MB | vs 2k | peak PSS MB | vs 2k "
        "| images/s | vs 2k |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {r["reader"]: r for r in rows if r["slices"] == min(x["slices"] for x in rows)}
    for r in rows:
        b = base[r["reader"]]
        rss, speed = r["peak_rss_mb"], r["images_per_s"]
        lines.append(
            f"| {r['slices']:,} | {r['slices'] * np.prod(SHAPE) / 1e9:.1f} | {r['reader']} | "
            f"{r['gen_s']:.0f} | {rss:.0f} | {rss / b['peak_rss_mb']:.2f}× "
            f"| {r['peak_pss_mb']:.0f} | {r['peak_pss_mb'] / b['peak_pss_mb']:.2f}× "
            f"| {speed:.0f} | {speed / b['images_per_s']:.2f}× |"
        )
    return "\n".join(lines)


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("reader", choices=["pread", "memmap"])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10)
    a = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(json.dumps(train_steps(a.root, a.reader, a.steps, a.batch, a.warmup)))


if __name__ == "__main__":
    _main()
