"""``dxkit bench medmnist``: train each MedMNIST recipe, score its test split, and set the
result beside the published rows (MedMNIST v2, Yang et al. 2023, Tables 3/4).

Each set runs in its own process so its wall time and peak memory are its own. Model
selection uses the validation split only (best validation AUC checkpoint).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dxkit.bench.results import write_section

# (AUC, ACC) published on the test split; the best row may combine different methods.
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "adrenalmnist3d": {
        "ResNet-18 (+3D)": (0.827, 0.721),
        "ResNet-50 (+3D)": (0.828, 0.745),
        "best published": (0.839, 0.802),
    },
    "breastmnist": {
        "ResNet-18 (28)": (0.901, 0.863),
        "ResNet-50 (28)": (0.857, 0.812),
        "best published": (0.919, 0.863),
    },
    "pneumoniamnist": {
        "ResNet-18 (28)": (0.944, 0.854),
        "ResNet-50 (28)": (0.948, 0.854),
        "best published": (0.991, 0.946),
    },
}
SETS = ("adrenalmnist3d", "breastmnist", "pneumoniamnist")


def run_one(config: Path, data_root: Path, extra: list[str]) -> dict:
    """Train + evaluate one recipe in this process; return its figures."""
    import resource

    from dxkit.evaluate.run import evaluate_checkpoint
    from dxkit.train.config import load_config
    from dxkit.train.fit import fit

    cfg = load_config(config, [f"data.path={data_root}", *extra])
    start = time.perf_counter()
    result = fit(cfg, progress=False)
    train_s = time.perf_counter() - start
    ev = evaluate_checkpoint(result.best_checkpoint, split="test")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "set": cfg.data.name,
        "model": cfg.model.label,
        "epochs": cfg.train.epochs,
        "epochs_run": result.epochs_run,
        "max_minutes": cfg.train.max_minutes,
        "auc": ev.scores["auc"],
        "acc": ev.scores["acc"],
        "val_auc": result.best_score,
        "train_seconds": train_s,
        "peak_mb": peak,
        "run_dir": str(result.run_dir),
    }


def _row(name: str, auc: float, acc: float, ours: dict | None = None) -> str:
    if ours is None:
        return f"| {name} | {auc:.3f} | {acc:.3f} | | |"
    return (
        f"| **dxkit {ours['model']}** | **{ours['auc']:.3f}** | **{ours['acc']:.3f}** "
        f"| {ours['train_seconds'] / 60:.1f} min | {ours['peak_mb']:.0f} MB |"
    )


def _epochs_note(r: dict) -> str:
    run, planned = r.get("epochs_run"), r["epochs"]
    if run is None or run >= planned:
        return f"{planned} epochs."
    return (
        f"{run} of {planned} planned epochs: stopped by the {r.get('max_minutes')}-minute "
        "training cap or early stopping."
    )


def table(results: list[dict]) -> str:
    """The markdown table: ours first, then the published rows, per set."""
    lines = []
    for r in results:
        pub = PUBLISHED.get(r["set"], {})
        beats = [name for name, (a, c) in pub.items() if r["auc"] > a and r["acc"] > c]
        lines += [
            f"### {r['set']} (test split; selected on val, val AUC {r['val_auc']:.3f})",
            "",
            "| model | test AUC | test ACC | train wall time | peak memory |",
            "|---|---|---|---|---|",
            _row("", 0, 0, r),
            *[_row(name, a, c) for name, (a, c) in pub.items()],
            "",
            f"Beats on both AUC and ACC: {', '.join(beats) if beats else 'none'}; "
            f"falls short of: {', '.join(n for n in pub if n not in beats) or 'none'}. "
            + _epochs_note(r),
            "",
        ]
    return "\n".join(lines)


def run(
    data_root: Path,
    configs_dir: Path = Path("configs"),
    sets: tuple[str, ...] = SETS,
    results_path: Path | None = None,
    extra: list[str] | None = None,
) -> tuple[str, list[dict]]:
    """Run each set in a child process and write its own RESULTS.md section as soon as it
    finishes (so a recipe change re-runs one set, and an interrupted bench keeps the sets
    already done); return the tables."""
    results, bodies = [], []
    for name in sets:
        cmd = [
            sys.executable, "-m", "dxkit.bench.medmnist",
            str(configs_dir / f"{name}.yaml"), str(data_root), *(extra or []),
        ]  # fmt: skip
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"bench {name} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        body = (
            f"Machine load average (1 min) when the set finished: {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores.\n\n" + table([result])
        )
        command = f"dxkit bench medmnist --sets {name} --data-root {data_root}"
        write_section(f"medmnist-{name}", f"MedMNIST from scratch on CPU: {name}", command, body,
                      results_path)  # fmt: skip
        results.append(result)
        bodies.append(body)
    return "\n\n".join(bodies), results


if __name__ == "__main__":  # child process entry: config, data root, overrides
    out = run_one(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
    print(json.dumps(out))
