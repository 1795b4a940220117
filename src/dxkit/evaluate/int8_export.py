"""``dxkit export --int8``: the workflows that quantise a run's model and check it before
anyone serves it. The quantisation and the int8 runtime are inference (``infer.quantize``,
``infer.quantize_exam``); choosing calibration scans from the run's training split and
scoring its held-out split need the run's data (``train``) and evaluation split logic, so the
workflow sits here, above both.

Classifiers: ``<stem>.int8.onnx``, calibrated on training scans, checked against the fp32
graph on held-out scans. Exam bundles: ``bundle.int8.ckpt`` (every plane network int8),
calibrated on the run's fit exams, checked through ``ExamPredictor`` on MRNet's valid exams.
Either is refused (``CheckpointError`` with the figures) beyond the stated tolerance.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dxkit.errors import CheckpointError, ConfigError
from dxkit.infer.export import INPUT_NAME, _embed_metadata, export_onnx, sidecar_path
from dxkit.infer.quantize import (
    CALIBRATION_SCANS,
    DEFAULT_MAX_AUC_CHANGE,
    DEFAULT_MAX_PROB_CHANGE,
    TRUNK,
    Int8Check,
    _inputs,
    _sample,
    check_int8,
    compare_probabilities,
    prepare_for_quantization,
    quantize_int8,
)
from dxkit.infer.quantize_exam import (
    CALIBRATION_EXAMS,
    SERIES,
    _export_network,
    _plane_series,
    with_int8_networks,
)

log = logging.getLogger(__name__)


def export_int8(
    checkpoint: str | Path,
    out_path: str | Path | None = None,
    *,
    max_auc_change: float = DEFAULT_MAX_AUC_CHANGE,
    max_prob_change: float = DEFAULT_MAX_PROB_CHANGE,
    source: Any = None,
) -> tuple[Path, Int8Check]:
    """Write ``checkpoint`` as a static int8 ONNX graph (``<stem>.int8.onnx`` by default)
    calibrated on training scans of its run, after checking it against the fp32 graph on the
    run's held-out scans; refuse (``CheckpointError`` with the figures) beyond tolerance."""
    from dxkit.infer.checkpoint import read_checkpoint
    from dxkit.infer.onnx_predictor import OnnxPredictor, read_onnx_metadata
    from dxkit.train.config import config_from_dict
    from dxkit.train.sources import load_source

    checkpoint = Path(checkpoint)
    out = Path(out_path) if out_path is not None else checkpoint.with_suffix(".int8.onnx")
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: give the file an .onnx suffix")
    meta = read_checkpoint(checkpoint)["dxkit"]
    cfg = config_from_dict(meta["config"], source=f"{checkpoint} (saved config)")
    source = source or load_source(cfg)
    split = "test" if len(source.splits.get("test", ())) else "val"
    if split == "val":
        log.warning("%s: no test split; the int8 check scores validation scans", checkpoint)
    work = out.with_name(f".{out.stem}.work")
    work.mkdir(parents=True, exist_ok=True)
    try:
        fp32_path = export_onnx(checkpoint, work / "fp32.onnx")
        fp32 = OnnxPredictor.from_path(fp32_path)
        train = source.splits["train"]
        calib_rows = _sample(len(train), CALIBRATION_SCANS, cfg.seed)
        feeds = [{INPUT_NAME: x[None]} for x in _inputs(fp32, train, calib_rows)]
        ready = prepare_for_quantization(fp32_path, work / "fp32-pre.onnx")
        quantize_int8(ready, work / "int8.onnx", feeds)
        metadata = read_onnx_metadata(fp32_path)
        int8_file = work / "int8.onnx"
        _embed_metadata(int8_file, metadata)
        int8 = OnnxPredictor.from_path(int8_file)
        tolerance = {"auc": float(max_auc_change), "probability": float(max_prob_change)}
        check = check_int8(fp32, int8, source.splits[split], split, tolerance, cfg.seed)
        if not check.passed:
            raise CheckpointError(
                f"{checkpoint}: int8 export refused, it changes the model beyond tolerance: "
                f"{check.summary()}; serve the fp32 export (`dxkit export`) or loosen "
                "--max-auc-change/--max-prob-change knowingly"
            )
        metadata["quantization"] = {
            "recipe": "ONNX Runtime static int8, QDQ, uint8 activations, int8 per-channel "
            f"weights, MinMax; quantised ops {list(TRUNK.op_types or [])}, the rest float",
            "calibrated_on": f"{len(calib_rows)} scans of the run's train split",
            "check": check.as_dict(),
        }
        _embed_metadata(int8_file, metadata)
        int8_file.replace(out)
        sidecar_path(out).write_text(json.dumps(metadata, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("int8 export %s: %s", out, check.summary())
    return out, check


def export_exam_int8(
    bundle: str | Path,
    out_path: str | Path | None = None,
    *,
    max_auc_change: float = DEFAULT_MAX_AUC_CHANGE,
    max_prob_change: float = DEFAULT_MAX_PROB_CHANGE,
    fit_exams: Sequence[Any] | None = None,
    held_out: Sequence[Any] | None = None,
) -> tuple[Path, Int8Check]:
    """Write ``bundle.int8.ckpt`` beside ``bundle`` after the int8/fp32 check on the held-out
    exams; refuse (``CheckpointError`` with the figures) beyond tolerance."""
    from dxkit.evaluate.exam_run import exams_for_split
    from dxkit.infer.checkpoint import read_checkpoint
    from dxkit.infer.exam_model import load_exam_bundle
    from dxkit.train.config import config_from_dict
    from dxkit.train.exam_fit import label_matrix

    bundle = Path(bundle)
    out = Path(out_path) if out_path is not None else bundle.with_suffix(".int8.ckpt")
    if out.suffix != ".ckpt":
        raise ConfigError(f"--out {out}: an exam int8 bundle is a .ckpt file")
    model = load_exam_bundle(bundle)
    cfg = config_from_dict(model.meta["config"], source=f"{bundle} (saved config)")
    fit_exams = list(fit_exams) if fit_exams is not None else exams_for_split(model, "fit")
    held_out = list(held_out) if held_out is not None else exams_for_split(model, "valid")
    rng = np.random.default_rng(cfg.seed)
    pick = rng.permutation(len(fit_exams))[:CALIBRATION_EXAMS]
    calibration_exams = [fit_exams[i] for i in sorted(pick)]
    work = out.with_name(f".{out.stem}.work")
    work.mkdir(parents=True, exist_ok=True)
    graphs: dict[str, torch.Tensor] = {}
    try:
        for key, net in model.networks.nets.items():
            plane = key.split("__")[-1]
            feeds = _plane_series(model, calibration_exams, plane)[:CALIBRATION_SCANS]
            raw, ready, int8 = (work / f"{key}.{s}.onnx" for s in ("raw", "pre", "int8"))
            _export_network(net, feeds[0], raw, dynamic_hw=model.size is None)
            prepare_for_quantization(raw, ready)
            quantize_int8(ready, int8, ({SERIES: x} for x in feeds), TRUNK)
            graphs[key] = torch.frombuffer(bytearray(int8.read_bytes()), dtype=torch.uint8)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ckpt = read_checkpoint(bundle)
    ckpt["int8_networks"] = graphs
    # Through ExamPredictor: the check measures exactly what predict and the server serve.
    from dxkit.infer.exam_predict import ExamPredictor

    p32, p8 = (
        np.array([[p.probabilities[f] for f in model.findings] for p in m.predict_exams(held_out)])
        for m in (ExamPredictor(model), ExamPredictor(with_int8_networks(model, ckpt)))
    )
    tolerance = {"auc": float(max_auc_change), "probability": float(max_prob_change)}
    check = compare_probabilities(
        label_matrix(held_out, model.findings), p32, p8, model.findings,
        model.thresholds, multiclass=False, split="valid", tolerance=tolerance,
    )  # fmt: skip
    if not check.passed:
        raise CheckpointError(
            f"{bundle}: int8 export refused, it changes the model beyond tolerance: "
            f"{check.summary()}; serve the fp32 bundle or loosen "
            "--max-auc-change/--max-prob-change knowingly"
        )
    ckpt["dxkit"] = {
        **ckpt["dxkit"],
        "quantization": {
            "recipe": "ONNX Runtime static int8 per plane network, QDQ, uint8 activations, "
            f"int8 per-channel weights, MinMax; quantised ops {list(TRUNK.op_types or [])}",
            "calibrated_on": f"{len(calibration_exams)} fit exams of the run (training exams)",
            "check": check.as_dict(),
        },
    }
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)
    log.info("int8 exam bundle %s: %s", out, check.summary())
    return out, check
