"""``dxkit bench medmnist``: train each MedMNIST recipe, score its test split, and set the
result beside the published rows (MedMNIST v2, Yang et al. 2023, Tables 3/4).

Each run (one recipe, one seed) goes in its own process so its wall time and peak memory
are its own. Model selection uses the validation split only (best validation AUC
checkpoint). With ``--seeds N`` each recipe trains N times (the recipe's seed, seed+1, ...)
and the table shows mean ± sd and min–max beside the published rows; a single run is only
ever shown as one seed of the record, never compared with a published row on its own.
"""

from __future__ import annotations

import json
import os
import statistics
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

RULE = (
    "Rule: with several seeds, ours beats a published row only when the mean test AUC and "
    "the mean test ACC over the seeds both exceed the row's (a tie is not a win); k/N counts "
    "the seeds that exceed the row on both on their own. sd is the sample standard deviation "
    "(n − 1)."
)


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
        "seed": cfg.seed,
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


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample sd (n − 1; 0 for one value), min and max."""
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarize(runs: list[dict]) -> dict:
    """The spread of one set's runs (one per seed)."""
    out = {
        "set": runs[0]["set"],
        "model": runs[0]["model"],
        "n": len(runs),
        "seeds": [r.get("seed") for r in runs],
        "auc": spread([r["auc"] for r in runs]),
        "acc": spread([r["acc"] for r in runs]),
        "train_seconds": spread([r["train_seconds"] for r in runs]),
        "peak_mb": max(r["peak_mb"] for r in runs),
    }
    vals = [r["val_auc"] for r in runs if r.get("val_auc") is not None]
    out["val_auc"] = spread(vals) if vals else None
    return out


def verdict(runs: list[dict], row: tuple[float, float]) -> tuple[bool, int]:
    """(ours beats ``row``, how many seeds beat it): mean AUC and mean ACC both above it."""
    auc, acc = row
    mean_auc = statistics.fmean(r["auc"] for r in runs)
    mean_acc = statistics.fmean(r["acc"] for r in runs)
    seeds_above = sum(r["auc"] > auc and r["acc"] > acc for r in runs)
    return mean_auc > auc and mean_acc > acc, seeds_above


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


def _epochs_note_seeds(runs: list[dict]) -> str:
    planned = runs[0]["epochs"]
    done = [r.get("epochs_run") for r in runs]
    if all(d is None or d >= planned for d in done):
        return f"{planned} epochs in every seed."
    shown = ", ".join("?" if d is None else str(d) for d in done)
    return (
        f"Epochs run per seed: {shown} of {planned} planned (fewer: stopped by the "
        f"{runs[0].get('max_minutes')}-minute training cap or early stopping)."
    )


def _pm(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['sd']:.3f}"


def _range(s: dict) -> str:
    return f"{s['min']:.3f}–{s['max']:.3f}"


def _single_table(r: dict) -> list[str]:
    pub = PUBLISHED.get(r["set"], {})
    beats = [name for name, (a, c) in pub.items() if r["auc"] > a and r["acc"] > c]
    return [
        f"### {r['set']} (test split; selected on val, val AUC {r['val_auc']:.3f})",
        "",
        "| model | test AUC | test ACC | train wall time | peak memory |",
        "|---|---|---|---|---|",
        _row("", 0, 0, r),
        *[_row(name, a, c) for name, (a, c) in pub.items()],
        "",
        f"Beats on both AUC and ACC: {', '.join(beats) if beats else 'none'}; "
        f"falls short of: {', '.join(n for n in pub if n not in beats) or 'none'}. "
        + _epochs_note(r)
        + " One seed: no spread measured (rerun with --seeds 3 for one).",
        "",
    ]


def _seeds_table(runs: list[dict]) -> list[str]:
    s = summarize(runs)
    n = s["n"]
    pub = PUBLISHED.get(s["set"], {})
    val = s["val_auc"]
    val_text = f", val AUC {_pm(val)}" if val else ""
    verdicts = {name: verdict(runs, row) for name, row in pub.items()}
    beats = [f"{name} ({k}/{n} seeds)" for name, (won, k) in verdicts.items() if won]
    short = [f"{name} ({k}/{n} seeds)" for name, (won, k) in verdicts.items() if not won]
    t = s["train_seconds"]
    lines = [
        f"### {s['set']} (test split; selected on val; {n} seeds{val_text})",
        "",
        "| model | test AUC | test ACC | seeds above this row (AUC and ACC) | mean train wall "
        "time | peak memory (max) |",
        "|---|---|---|---|---|---|",
        f"| **dxkit {s['model']}**, mean ± sd of {n} seeds | **{_pm(s['auc'])}** | "
        f"**{_pm(s['acc'])}** | | {t['mean'] / 60:.1f} min | {s['peak_mb']:.0f} MB |",
        f"| **dxkit {s['model']}**, min–max of {n} seeds | {_range(s['auc'])} | "
        f"{_range(s['acc'])} | | {t['min'] / 60:.1f}–{t['max'] / 60:.1f} min | |",
        *[
            f"| {name} | {a:.3f} | {c:.3f} | {verdicts[name][1]}/{n} | | |"
            for name, (a, c) in pub.items()
        ],
        "",
        f"Beats (mean AUC and mean ACC both above): {', '.join(beats) or 'none'}; "
        f"falls short of: {', '.join(short) or 'none'}. " + _epochs_note_seeds(runs),
        "",
        RULE,
        "",
        "Per seed (each its own process; load = 1-minute load average when it finished):",
        "",
        "| seed | test AUC | test ACC | val AUC | epochs run | train wall time | peak memory "
        "| load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        v = r.get("val_auc")
        load = r.get("load")
        lines.append(
            f"| {r.get('seed', '?')} | {r['auc']:.3f} | {r['acc']:.3f} "
            f"| {'' if v is None else f'{v:.3f}'} "
            f"| {r.get('epochs_run') if r.get('epochs_run') is not None else r['epochs']} "
            f"| {r['train_seconds'] / 60:.1f} min | {r['peak_mb']:.0f} MB "
            f"| {'' if load is None else f'{load:.1f}'} |"
        )
    lines.append("")
    return lines


def table(results: list[dict]) -> str:
    """The markdown table per set: ours first, then the published rows.

    ``results`` holds one dict per run; runs of the same set are its seeds. One run is
    shown as it is (and said to have no spread); several as mean ± sd and min–max, with the
    verdict on the mean and each seed listed below.
    """
    by_set: dict[str, list[dict]] = {}
    for r in results:
        by_set.setdefault(r["set"], []).append(r)
    lines: list[str] = []
    for runs in by_set.values():
        lines += _single_table(runs[0]) if len(runs) == 1 else _seeds_table(runs)
    return "\n".join(lines)


def _shown_path(path: Path) -> str:
    """``path`` as the command line should show it: relative to the current folder."""
    return os.path.relpath(path) if path.is_absolute() else str(path)


def _base_seed(config: Path, extra: list[str]) -> int:
    from dxkit.train.config import load_config

    return load_config(config, extra).seed


def run(
    data_root: Path,
    configs_dir: Path = Path("configs"),
    sets: tuple[str, ...] = SETS,
    results_path: Path | None = None,
    extra: list[str] | None = None,
    seeds: int = 1,
) -> tuple[str, list[dict]]:
    """Run each set ``seeds`` times, each run in a child process, and write the set's own
    RESULTS.md section as soon as its seeds finish (so a recipe change re-runs one set, and
    an interrupted bench keeps the sets already done); return the tables and all runs."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    results, bodies = [], []
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    for name in sets:
        config = configs_dir / f"{name}.yaml"
        base = _base_seed(config, list(extra or []))
        load_start = os.getloadavg()[0]
        set_start = time.perf_counter()
        runs = []
        for seed in range(base, base + seeds):
            cmd = [
                sys.executable, "-m", "dxkit.bench.medmnist",
                str(config), str(data_root), *(extra or []), f"seed={seed}",
            ]  # fmt: skip
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"bench {name} seed {seed} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result.update(seed=seed, wall_seconds=time.perf_counter() - t0)
            result["load"] = os.getloadavg()[0]
            runs.append(result)
            print(f"bench medmnist {name} seed {seed}: {json.dumps(result)}", file=sys.stderr)
        total = time.perf_counter() - set_start
        body = (
            f"Machine load average (1 min): {load_start:.1f} when the set started, "
            f"{os.getloadavg()[0]:.1f} when it finished, on {os.cpu_count()} cores.\n\n"
            if seeds > 1
            else f"Machine load average (1 min) when the set finished: "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n\n"
        ) + table(runs)
        if seeds > 1:
            mean_train = statistics.fmean(r["train_seconds"] for r in runs)
            body += (
                f"\nSeeds {', '.join(str(r['seed']) for r in runs)}; total time for the set "
                f"{total / 60:.1f} min ({seeds} runs, each in its own process: training, "
                f"test scoring and start-up), mean train time {mean_train / 60:.1f} min per run.\n"
            )
        else:
            body += f"\nTotal time for the set: {total / 60:.1f} min.\n"
        command = f"dxkit bench medmnist --sets {name}"
        command += f" --seeds {seeds}" if seeds > 1 else ""
        command += f" --data-root {_shown_path(data_root)}"
        write_section(f"medmnist-{name}", f"MedMNIST from scratch on CPU: {name}", command, body,
                      results_path)  # fmt: skip
        results += runs
        bodies.append(body)
    return "\n\n".join(bodies), results


if __name__ == "__main__":  # child process entry: config, data root, overrides
    out = run_one(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
    print(json.dumps(out))
