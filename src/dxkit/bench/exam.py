"""``dxkit bench exam``: exam models on real volumes, and the speed of exam inference on CPU.

``adrenal``: a slice-stack network and a 3-D network trained on the real AdrenalMNIST3D 64³
volumes (each volume one series of 64 slices), scored on the test split beside the published
3-D rows. ``latency``: per-exam inference time and peak memory of the MRNet model (three
planes × 35 slices × 256 px, all three findings: the paper's nine AlexNets, or the multi-task
three) along several inference paths, against a slice-at-a-time eager loop with the same
weights in the same run, and what each path does to the AUC on validation fixtures.

Both write their tables with ``dxkit.bench.results.write_section``. Each timed path runs in
turn within every round (so machine noise hits all of them); memory is measured per path in
a fresh child process (``python -m dxkit.bench.exam memory PATH WORK``).
"""

from __future__ import annotations

import copy
import json
import logging
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from dxkit.bench.results import write_section
from dxkit.data.exam import PLANES, Exam, IntensityNormalization, Series
from dxkit.data.sources.mrnet import load_mrnet
from dxkit.data.synthetic_mrnet import knee_volume, write_mrnet_fixture
from dxkit.evaluate.metrics import medmnist_scores
from dxkit.models.backbones import AlexNet
from dxkit.models.fusion import PlaneFusion
from dxkit.models.slicestack import ExamNetworks
from dxkit.train.config import config_from_dict, load_config
from dxkit.train.exam_fit import label_matrix, network_jobs, split_tuning, train_network
from dxkit.train.exam_module import (
    log_odds,
    network_probabilities,
    standardize,
)

log = logging.getLogger(__name__)
FINDINGS = ["abnormal", "acl", "meniscus"]
SLICES, SIZE = 35, 256  # the latency exam: three planes of 35 slices of 256 px
WORK = Path("runs") / "bench-exam"
NOISE = 50.0  # σ of the noise added to the validation fixtures for the AUC check

# ------------------------------------------------------------------------- AdrenalMNIST3D


def adrenal_exams(npz: Path, split: str) -> list[Exam]:
    """Each AdrenalMNIST3D volume as an exam of one series (axis 0 = slices)."""
    data = np.load(npz)
    images, labels = data[f"{split}_images"], data[f"{split}_labels"][:, 0]
    return [
        Exam(
            f"{split}{i}",
            {"axial": Series("axial", images[i], exam_id=f"{split}{i}")},
            {"adrenal_mass": float(labels[i])},
        )
        for i in range(len(images))
    ]


def _adrenal_slicestack(npz: Path, minutes: float, seed: int, work: Path) -> dict[str, Any]:
    cfg = config_from_dict(
        {
            "name": "adrenal-slicestack",
            "task": "exam",
            "seed": seed,
            "output_dir": str(work),
            "data": {"source": "mrnet", "batch_size": 16, "eval_batch_size": 32},
            "preprocess": {"normalize": "none"},
            "model": {
                "name": "smallresnet",
                "options": {
                    "widths": [8, 16, 32],
                    "depths": [1, 1, 1],
                    "strides": [2, 2, 2],
                    "stem_stride": 2,
                },
            },
            "exam": {
                "planes": ["axial"],
                "findings": ["adrenal_mass"],
                "pooling": "max",
                "max_rotation": 10,
                "max_shift": 4,
            },
            "train": {
                "epochs": 40,
                "lr": 0.003,
                "weight_decay": 0.05,
                "max_minutes": minutes,
                "class_weights": "balanced",
            },
        }
    )
    train, val, test = (adrenal_exams(npz, s) for s in ("train", "val", "test"))
    (job,) = network_jobs(cfg)
    net, info = train_network(
        cfg,
        job,
        train,
        val,
        IntensityNormalization(),
        work / "adrenal-slicestack",
        seed=seed,
        progress=False,
    )
    probs = network_probabilities(net, test, "axial", IntensityNormalization(), None, batch_size=32)
    scores = medmnist_scores(label_matrix(test, ["adrenal_mass"]), probs, "binary")
    return {
        "model": "slice-stack smallresnet (2D, max over 64 slices)",
        **scores,
        "val_auc": info["best_tune_auc"],
        "epochs": info["epochs"],
        "params": sum(p.numel() for p in net.parameters()),
    }


def _adrenal_3d(npz: Path, minutes: float, seed: int, work: Path) -> dict[str, Any]:
    from dxkit.evaluate.run import evaluate_checkpoint
    from dxkit.train.checkpoint import load_checkpoint
    from dxkit.train.fit import fit

    recipe = Path(__file__).resolve().parents[3] / "configs" / "adrenalmnist3d.yaml"
    cfg = load_config(
        recipe,
        [
            f"data.path={npz}",
            "data.size=64",
            f"seed={seed}",
            f"output_dir={work}",
            "name=adrenal-3d",
            "train.epochs=40",
            f"train.max_minutes={minutes}",
            "model.options={widths: [8, 16, 32], stem_stride: 2}",
            "evaluate.tta=false",
        ],
    )
    result = fit(cfg, progress=False)
    ev = evaluate_checkpoint(result.best_checkpoint, split="test")
    model = load_checkpoint(result.best_checkpoint).model
    last = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    return {
        "model": "3D smallresnet (64³ volume)",
        **ev.scores,
        "val_auc": result.best_score,
        "epochs": int(last["epoch"]) + 1,
        "params": sum(p.numel() for p in model.parameters()),
    }


def adrenal(
    npz: Path,
    minutes: float = 10.0,
    seed: int = 0,
    work: Path = WORK,
    results_path: Path | None = None,
    threads: int = 1,
) -> tuple[str, list[dict[str, Any]]]:
    """Train both models (each in its own process, ~``minutes``/2 of training each), score the
    test split, write the ``adrenal_slicestack`` section and return (table, figures)."""
    from dxkit.bench.medmnist import PUBLISHED

    rows = [
        _child(["adrenal", kind, str(npz), str(minutes * 0.4), str(seed), str(work)], threads)
        for kind in ("slicestack", "3d")
    ]
    lines = [
        "AdrenalMNIST3D at 64³ (real volumes: 1188 train / 98 val / 298 test), from scratch on "
        f"CPU, {threads} torch thread(s), best epoch by val AUC, AUC/ACC (p > 0.5) on test.",
        "",
        "| model | test AUC | test ACC | val AUC | epochs | params | wall time | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| **dxkit {r['model']}** | **{r['auc']:.3f}** | **{r['acc']:.3f}** | "
            f"{r['val_auc']:.3f} | {r['epochs']} | {r['params'] / 1e3:.0f} k | "
            f"{r['seconds'] / 60:.1f} min | {r['peak_mb']:.0f} MB |"
        )
    for name, (auc, acc) in PUBLISHED["adrenalmnist3d"].items():
        lines.append(f"| {name}, MedMNIST v2 (28³) | {auc:.3f} | {acc:.3f} | | | | | |")
    lines += [
        "",
        "Published rows are the MedMNIST v2 28³ test results (100 epochs, no time "
        "limit); the 64³ MedMNIST+ rows are not in this repository to compare with.",
    ]
    body = "\n".join(lines)
    write_section(
        "adrenal_slicestack",
        "AdrenalMNIST3D: slice-stack vs 3-D model",
        f"dxkit bench exam --part adrenal --minutes {minutes}",
        body,
        results_path,
    )
    return body, rows


def _child(args: list[str], threads: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dxkit.bench.exam", str(threads), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args[:2]} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": time.perf_counter() - start, **out}


# ------------------------------------------------------------------------- latency

Runner = Callable[[tuple[torch.Tensor, ...]], Any]  # three planes (S, 1, H, W) → logits (P, F)


@dataclass
class BenchModels:
    """AlexNet exam models (paper's nine networks and the multi-task three), trained on 64 px
    MRNet-layout fixtures; the trained weights are reused from ``work`` on later runs."""

    networks: dict[str, ExamNetworks]
    normalization: IntensityNormalization
    tune: list[Exam]
    valid: list[Exam]


def bench_models(work: Path = WORK, seed: int = 0, progress: bool = False) -> BenchModels:
    root = work / "MRNet-fixture"
    if not (root / "valid-meniscus.csv").is_file():
        write_mrnet_fixture(root, n_train=48, n_valid=60, size=64, seed=seed, slices=(10, 16))
    train = list(load_mrnet(root, "train"))
    fit_exams, tune = split_tuning(train, FINDINGS, 0.25, seed)
    norm = IntensityNormalization.fit(fit_exams, PLANES, seed=seed)
    networks = {}
    for variant in ("per_finding", "multitask"):
        cfg = config_from_dict(
            {
                "name": "bench-alexnet",
                "task": "exam",
                "seed": seed,
                "data": {"source": "mrnet", "path": str(root), "batch_size": 4},
                "model": {"name": "alexnet"},
                "exam": {"variant": variant, "max_rotation": 10, "max_shift": 4},
                "train": {
                    "epochs": 12,
                    "lr": 3e-4,
                    "optimizer": "adam",
                    "schedule": "cosine",
                    "class_weights": "balanced",
                    "weight_decay": 1e-4,
                },
            }
        )
        nets = ExamNetworks("alexnet", PLANES, FINDINGS, variant=variant)
        for job in network_jobs(cfg):
            net, _ = train_network(
                cfg,
                job,
                fit_exams,
                tune,
                norm,
                work / "networks" / variant / job.key,
                seed=seed,
                progress=progress,
            )
            nets.nets[job.key].load_state_dict(net.state_dict())
        networks[variant] = nets.eval()
    return BenchModels(networks, norm, tune, list(load_mrnet(root, "valid")))


def _features(net: Any, x: torch.Tensor) -> torch.Tensor:
    backbone = net.backbone
    # AlexNet's forward_features has a Python size check FX cannot trace; features is the same
    return backbone.features(x) if isinstance(backbone, AlexNet) else backbone.forward_features(x)


class ExamForward(nn.Module):
    """Every network of an exam model as one module, the graph ONNX, ``torch.compile`` and
    FX see: three planes ``(S, 1, H, W)`` in, plane logits ``(P, F)`` out (max pooling)."""

    def __init__(self, networks: ExamNetworks) -> None:
        super().__init__()
        self.nets = copy.deepcopy(networks.nets)
        multitask = networks.variant == "multitask"
        self.keys = [[p] if multitask else [f"{f}__{p}" for f in FINDINGS] for p in PLANES]

    def forward(
        self, axial: torch.Tensor, coronal: torch.Tensor, sagittal: torch.Tensor
    ) -> torch.Tensor:
        rows = []
        nets: Any = self.nets
        for keys, x in zip(self.keys, (axial, coronal, sagittal), strict=True):
            logits = []
            for k in keys:  # pooling and Linear in the forms quantised kernels accept
                pooled = F.adaptive_avg_pool2d(_features(nets[k], x), 1).flatten(1)
                logits.append(nets[k].head(pooled.amax(0, True)))  # (1, F)
            rows.append(torch.cat(logits, dim=1)[0])
        return torch.stack(rows)


def slice_loop(networks: ExamNetworks) -> Runner:
    """What public re-implementations do: each network, one slice at a time, eager."""
    fwd = ExamForward(networks).eval()

    def run(x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        rows = []
        for keys, series in zip(fwd.keys, x, strict=True):
            logits = []
            for k in keys:
                net: Any = fwd.nets[k]
                feats = torch.stack(
                    [
                        net.backbone.forward_features(series[s : s + 1]).mean(dim=(2, 3))[0]
                        for s in range(len(series))
                    ]
                )
                logits.append(net.head(feats.amax(dim=0)))
            rows.append(torch.cat(logits))
        return torch.stack(rows)

    return run


def exam_inputs(
    vols: dict[str, np.ndarray], norm: IntensityNormalization
) -> tuple[torch.Tensor, ...]:
    """uint8 ``(S, H, W)`` volumes → normalised float32 ``(S, 1, H, W)`` per plane."""
    return tuple(
        norm.apply(torch.from_numpy(np.asarray(vols[p], np.float32))[:, None]) for p in PLANES
    )


@dataclass
class InferencePath:
    """One way to run an exam model: its name, which model, the runner, build seconds."""

    name: str
    family: str  # per_finding (nine networks) or multitask (three)
    run: Runner
    setup_s: float
    fp32: bool  # same arithmetic as eager fp32 (AUC only checked by |Δp|)


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {p: t.numpy() for p, t in zip(PLANES, x, strict=True)})[0]


def _calibration(models: BenchModels) -> list[tuple[torch.Tensor, ...]]:
    return [
        exam_inputs({p: e.volume(p) for p in PLANES}, models.normalization) for e in models.tune
    ]


def onnx_files(models: BenchModels, family: str, work: Path) -> dict[str, Path]:
    """fp32, int8 static (QDQ, per-channel, calibrated on the tuning exams) and int8 dynamic
    ONNX graphs of one model, written once into ``work/onnx``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = work / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        k: folder / f"{family}-{k}.onnx" for k in ("fp32", "pre", "int8_static", "int8_dynamic")
    }
    if all(p.is_file() for p in files.values()):
        return files
    calib = _calibration(models)
    fwd = ExamForward(models.networks[family]).eval()
    axes = {p: {0: f"{p}_slices", 2: "height", 3: "width"} for p in PLANES}
    torch.onnx.export(
        fwd,
        calib[0],
        str(files["fp32"]),
        input_names=list(PLANES),
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    quant_pre_process(str(files["fp32"]), str(files["pre"]))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(
                [{p: t.numpy() for p, t in zip(PLANES, x, strict=True)} for x in calib]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(files["pre"]),
        str(files["int8_static"]),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    quantize_dynamic(str(files["pre"]), str(files["int8_dynamic"]), weight_type=QuantType.QInt8)
    return files


def _fx_int8(models: BenchModels, family: str) -> Runner:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    calib = _calibration(models)
    prepared = prepare_fx(
        ExamForward(models.networks[family]).eval(), get_default_qconfig_mapping("x86"), calib[0]
    )
    with torch.no_grad():
        for x in calib:
            prepared(*x)
    quantized = convert_fx(prepared)
    return lambda x: quantized(*x)


def _eager(nets: ExamNetworks, channels_last: bool = False) -> Runner:
    fwd = ExamForward(nets).eval()
    if not channels_last:
        return lambda x: fwd(*x)
    fwd = fwd.to(memory_format=torch.channels_last)
    return lambda x: fwd(*(t.contiguous(memory_format=torch.channels_last) for t in x))


def _onnx_runner(models: BenchModels, family: str, work: Path, threads: int, kind: str) -> Runner:
    return _ort_session(onnx_files(models, family, work)[kind], threads)


def _compiled(nets: ExamNetworks, example: tuple[torch.Tensor, ...]) -> Runner:
    import torch._inductor.config as inductor_config

    compiled = torch.compile(ExamForward(nets).eval())
    with torch.no_grad(), inductor_config.patch(freezing=True):  # weights folded, prepacked
        compiled(*example)  # compiles for the timing shape
    return lambda x: compiled(*x)


def inference_paths(
    models: BenchModels,
    work: Path,
    threads: int,
    example: tuple[torch.Tensor, ...],
    only: str | None = None,
) -> list[InferencePath]:
    """Every path tried (or just ``only``), built and warmed up."""
    specs: list[tuple[str, str, Callable[[], Runner], bool]] = []
    for family in ("per_finding", "multitask"):
        nets = models.networks[family]
        onnx = partial(_onnx_runner, models, family, work, threads)
        specs += [
            ("eager, slice at a time", family, partial(slice_loop, nets), True),
            ("eager, slices batched", family, partial(_eager, nets), True),
            ("eager, batched, channels-last", family, partial(_eager, nets, True), True),
            ("torch.compile (inductor, frozen)", family, partial(_compiled, nets, example), True),
            ("ONNX Runtime fp32", family, partial(onnx, "fp32"), True),
            ("ONNX Runtime int8 static (QDQ)", family, partial(onnx, "int8_static"), False),
            ("ONNX Runtime int8 dynamic", family, partial(onnx, "int8_dynamic"), False),
            ("PyTorch int8 static (FX, x86)", family, partial(_fx_int8, models, family), False),
            ("PyTorch int8 dynamic (Linear only)", family, partial(_dynamic, nets), False),
        ]
    paths = []
    for name, family, build, fp32 in specs:
        if only is not None and f"{family}: {name}" != only:
            continue
        start = time.perf_counter()
        run = build()
        with torch.no_grad():  # warm-up (short exam; a new shape would recompile torch.compile)
            run(example if "compile" in name else tuple(t[:4] for t in example))
        paths.append(InferencePath(name, family, run, time.perf_counter() - start, fp32))
    return paths


def _dynamic(nets: ExamNetworks) -> Runner:
    """PyTorch's dynamic int8 covers nn.Linear only: here just the 256→F heads."""
    fwd = torch.ao.quantization.quantize_dynamic(ExamForward(nets).eval(), {nn.Linear}, torch.qint8)
    return lambda x: fwd(*x)


def latency_exam(seed: int) -> dict[str, np.ndarray]:
    """A generated knee exam at the benchmark's size: three planes of 35 slices of 256 px."""
    rng = np.random.default_rng(seed)
    found = {"acl": True, "meniscus": bool(seed % 2), "other": False}
    return {p: np.rint(knee_volume(SLICES, SIZE, rng, found)).astype(np.uint8) for p in PLANES}


def _fusions(models: BenchModels, reference: dict[str, Runner]) -> dict[str, Callable]:
    """Per model, a plane fusion fitted on the eager fp32 model's tuning-exam outputs (the
    same fixed fusion for every path, so only the path changes the fused AUC)."""
    out = {}
    y = label_matrix(models.tune, FINDINGS)
    for family, run in reference.items():
        scores = log_odds(_probs(run, models.tune, models.normalization))
        mean, std = scores.mean(axis=0), scores.std(axis=0) + 1e-8
        fusion = PlaneFusion(PLANES, FINDINGS).fit(standardize(scores), y)
        out[family] = lambda p, f=fusion, m=mean, s=std: f.predict_proba((log_odds(p) - m) / s)
    return out


@torch.no_grad()
def _probs(run: Runner, exams: list[Exam], norm: IntensityNormalization) -> np.ndarray:
    out = [run(exam_inputs({p: e.volume(p) for p in PLANES}, norm)) for e in exams]
    return torch.sigmoid(torch.as_tensor(np.stack([np.asarray(o) for o in out]))).double().numpy()


def noisy_exams(exams: list[Exam], sigma: float, seed: int) -> list[Exam]:
    """The exams with Gaussian noise added (clipped to 0..255): a harder validation set."""
    rng = np.random.default_rng(seed)
    out = []
    for e in exams:
        series = {}
        for p in PLANES:
            vol = np.asarray(e.volume(p), np.float32)
            noisy = np.clip(vol + rng.normal(0.0, sigma, vol.shape), 0, 255).astype(np.float32)
            series[p] = Series(p, noisy, exam_id=e.exam_id)
        out.append(Exam(e.exam_id, series, e.labels))
    return out


def _peak_memory(name: str, work: Path, threads: int) -> dict[str, float]:
    try:
        return _child(["memory", name, str(work)], threads)
    except RuntimeError as err:
        log.warning("memory of %s not measured: %s", name, str(err)[-300:])
        return {}


def measure_memory(name: str, work: Path) -> dict[str, float]:
    """In a fresh process: build the path, warm it up, reset the peak-RSS counter, run one
    exam; peak RSS during that exam and its growth over the RSS just before it."""
    import gc

    import psutil

    models = bench_models(work)
    x = exam_inputs(latency_exam(0), models.normalization)
    (path,) = inference_paths(models, work, torch.get_num_threads(), x, only=name)
    volumes = latency_exam(1)
    gc.collect()
    before = psutil.Process().memory_info().rss
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM (peak RSS) to now
    with torch.no_grad():
        path.run(exam_inputs(volumes, models.normalization))
    status = Path("/proc/self/status").read_text()
    peak = (
        int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        * 1024
    )
    return {"peak_mb": peak / 2**20, "growth_mb": (peak - before) / 2**20}


def latency(
    work: Path = WORK,
    repeats: int = 3,
    threads: int = 1,
    memory: bool = True,
    results_path: Path | None = None,
    seed: int = 0,
) -> tuple[str, list[dict[str, Any]]]:
    """Time every inference path on 35-slice 256 px exams, check its AUC on the validation
    fixtures, measure its memory, write the ``exam`` section and return (table, rows)."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    models = bench_models(work, seed)
    train_s = time.perf_counter() - start
    timing = [latency_exam(seed + i) for i in range(2)]
    example = exam_inputs(timing[0], models.normalization)
    paths = inference_paths(models, work, threads, example)
    eager = {p.family: p.run for p in paths if p.name == "eager, slices batched"}
    fusions = _fusions(models, eager)
    y = label_matrix(models.valid, FINDINGS)
    clean = {}  # the eager reference on the validation fixtures as generated
    for family, run in eager.items():
        fused = fusions[family](_probs(run, models.valid, models.normalization))
        clean[family] = " / ".join(f"{roc_auc_score(y[:, j], fused[:, j]):.3f}" for j in range(3))
    # The fixtures' AUC sits at its ceiling (1.0), where a path's damage cannot show; the
    # same exams with noise added (σ = NOISE) leave room to see it. fp32 paths compute the
    # same function as eager (checked by Δp), so only the int8 paths are re-scored.
    valid = noisy_exams(models.valid, NOISE, seed)
    rows: list[dict[str, Any]] = []
    reference: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for path in paths:
            row: dict[str, Any] = {"path": path.name, "model": path.family, "build_s": path.setup_s}
            row["out"] = torch.sigmoid(torch.as_tensor(np.asarray(path.run(example))))
            if path.name == "eager, slices batched" or not path.fp32:
                row["fused"] = fusions[path.family](_probs(path.run, valid, models.normalization))
                row["auc"] = [roc_auc_score(y[:, j], row["fused"][:, j]) for j in range(3)]
            if path.name == "eager, slices batched":
                reference[path.family] = row
            rows.append(row)
    for row in rows:
        ref = reference[row["model"]]
        row["max_dp"] = float((row["out"] - ref["out"]).abs().max())
        if "auc" in row:
            row["d_auc"] = max(abs(a - b) for a, b in zip(row["auc"], ref["auc"], strict=True))
            row["dp_valid"] = float(np.abs(row["fused"] - ref["fused"]).max())
    for row in rows:
        row.pop("out"), row.pop("fused", None)
    times: list[list[float]] = [[] for _ in paths]
    for r in range(repeats):  # every path once per round, the order rotating between rounds
        for i in np.roll(np.arange(len(paths)), r):
            t = time.perf_counter()
            with torch.no_grad():
                paths[i].run(exam_inputs(timing[r % 2], models.normalization))
            times[i].append(time.perf_counter() - t)
    for row, ts in zip(rows, times, strict=True):
        row["ms"] = 1000 * float(np.median(ts))
        row["ms_all"] = [round(1000 * t) for t in ts]
        if memory:
            row.update(_peak_memory(f"{row['model']}: {row['path']}", work, threads))
    text = f"{clean['per_finding']} (nine networks), {clean['multitask']} (multi-task)"
    body = _latency_table(rows, repeats, threads, train_s, text)
    write_section(
        "exam",
        "MRNet exam inference latency on CPU (3 planes × 35 slices × 256 px)",
        f"dxkit bench exam --part latency --repeats {repeats}",
        body,
        results_path,
    )
    return body, rows


def _latency_table(
    rows: list[dict[str, Any]], repeats: int, threads: int, train_s: float, clean: str
) -> str:
    loop = next(
        r["ms"] for r in rows if r["model"] == "per_finding" and "slice at a time" in r["path"]
    )
    lines = [
        f"Per-exam inference (three planes of 35 slices of 256 px, uint8 → fused probabilities) "
        f"on {threads} torch/ORT thread(s), median of {repeats} rounds (every path once per "
        "round, order rotating). Weights: AlexNet slice-stack networks trained from scratch "
        f"on 64 px MRNet-layout fixtures ({train_s / 60:.1f} min, reused when cached). AUC: "
        "fused probabilities (fusion fixed per model) on the 60 validation fixture exams at "
        f"64 px with noise σ={NOISE:g} added (as generated they sit at the AUC ceiling: eager "
        f"fp32 scores {clean}); ΔAUC and Δp against the same model's eager batched fp32 "
        "path; Δp at 256 px on the timed exam. Memory: peak RSS while one exam runs in a "
        "fresh process after a warm-up, and its growth over the RSS just before.",
        "",
        "| model | inference path | ms / exam | × slice loop | peak RSS MB | exam growth MB "
        "| AUC (noisy valid) | max ΔAUC | max Δp valid | max Δp 256 px | build s |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        auc = " / ".join(f"{a:.3f}" for a in r["auc"]) if "auc" in r else "fp32"
        lines.append(
            f"| {'nine networks' if r['model'] == 'per_finding' else 'multi-task (three)'} "
            f"| {r['path']} | {r['ms']:.0f} | {loop / r['ms']:.2f}× "
            f"| {r.get('peak_mb', float('nan')):.0f} | {r.get('growth_mb', float('nan')):.0f} "
            f"| {auc} | {r.get('d_auc', 0.0):.4f} | {r.get('dp_valid', 0.0):.1e} "
            f"| {r['max_dp']:.1e} | {r['build_s']:.0f} |"
        )
    lines += [
        "",
        "AUC: abnormal / ACL / meniscus. fp32 rows compute the same function as eager (their "
        "Δp shows it) and are not re-scored.",
    ]
    ok = [r for r in rows if r.get("d_auc", 0.0) <= 0.005 and r["max_dp"] < 0.05]
    best = {
        m: min((r for r in ok if r["model"] == m), key=lambda r: r["ms"])
        for m in ("per_finding", "multitask")
    }
    pf, mt = best["per_finding"], best["multitask"]
    lines += [
        "",
        f"- Fastest nine-network path at unchanged AUC (|ΔAUC| ≤ 0.005): **{pf['path']}**, "
        f"{pf['ms']:.0f} ms, **{loop / pf['ms']:.2f}×** the slice loop (target ≥ 3×).",
        f"- Fastest multi-task path: **{mt['path']}**, {mt['ms']:.0f} ms, "
        f"**{pf['ms'] / mt['ms']:.2f}×** faster again (target ≥ 2.5×), "
        f"{loop / mt['ms']:.1f}× the nine-network slice loop.",
    ]
    return "\n".join(lines)


def run_exam_bench(
    data_root: Path = Path("../shared/data/medmnist"),
    parts: tuple[str, ...] = ("adrenal", "latency"),
    results: Path | None = None,
    minutes: float = 10.0,
    repeats: int = 3,
    threads: int = 1,
    work: Path = WORK,
) -> str:
    """``dxkit bench exam``: the AdrenalMNIST3D comparison and/or the latency table; returns
    the markdown written into ``results`` (default ``benchmarks/RESULTS.md``)."""
    bodies = []
    if "adrenal" in parts:
        npz = data_root / "adrenalmnist3d_64.npz"
        if not npz.is_file():
            from dxkit.errors import MissingFileError

            raise MissingFileError(f"{npz} not found; pass --data-root (the MedMNIST folder)")
        bodies.append(adrenal(npz, minutes, work=work, results_path=results, threads=threads)[0])
    if "latency" in parts:
        bodies.append(latency(work, repeats, threads, results_path=results)[0])
    return "\n\n".join(bodies)


def _main(argv: list[str]) -> None:
    torch.set_num_threads(int(argv[0]))
    logging.basicConfig(level=logging.WARNING)
    if argv[1] == "adrenal":
        kind, npz, minutes, seed, work = argv[2:7]
        train = _adrenal_slicestack if kind == "slicestack" else _adrenal_3d
        out = train(Path(npz), float(minutes), int(seed), Path(work))
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        out = measure_memory(argv[2], Path(argv[3]))
    print(json.dumps(out))


if (
    __name__ == "__main__"
):  # child processes: THREADS adrenal KIND NPZ MINUTES SEED WORK | THREADS memory PATH WORK
    _main(sys.argv[1:])
