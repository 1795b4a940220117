"""A checkpoint whose thresholds were chosen on flip-averaged (TTA) probabilities serves
those same probabilities: evaluation's scores, ``Predictor`` and the ONNX graph agree, and
the calls at the recorded thresholds agree exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dxkit.evaluate.run import evaluate_checkpoint
from dxkit.infer.checkpoint import load_checkpoint
from dxkit.infer.export import export_onnx
from dxkit.infer.onnx_predictor import OnnxPredictor, read_onnx_metadata
from dxkit.infer.predictor import Predictor
from dxkit.infer.probabilities import predict_set
from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit
from dxkit.train.sources import load_source

TINY_NET = {"widths": [8, 16], "depths": [1, 1], "strides": [2, 2]}


def left_bright_npz(path: Path, seed: int = 0) -> None:
    """Noise images whose label is a bright patch on the LEFT half: flipping moves the
    evidence, so a model's flip-averaged probability differs from its plain one."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 64), ("val", 32), ("test", 32)):
        images = rng.integers(0, 80, size=(n, 28, 28)).astype(np.uint8)
        labels = (np.arange(n) % 2).astype(np.uint8)
        for i in np.flatnonzero(labels):
            r, c = rng.integers(4, 20), rng.integers(2, 8)
            images[i, r : r + 6, c : c + 6] = 230
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("tta")
    left_bright_npz(tmp / "pneumoniamnist.npz")
    raw = {
        "name": "tta", "seed": 0, "output_dir": str(tmp / "runs"),
        "data": {"source": "medmnist", "name": "pneumoniamnist",
                 "path": str(tmp / "pneumoniamnist.npz"), "batch_size": 32},
        "preprocess": {"size": 32},
        "model": {"name": "smallresnet", "options": TINY_NET},
        "train": {"epochs": 1, "lr": 0.01, "schedule": "cosine",
                  "augment": {"strength": "none"}},
        "evaluate": {"bootstrap": 10, "tta": True},
    }  # fmt: skip
    ckpt = fit(config_from_dict(raw), progress=False).best_checkpoint
    evaluate_checkpoint(ckpt, split="test")  # chooses thresholds on TTA val probabilities
    return ckpt, raw


def test_tta_recipe_is_recorded_with_the_thresholds(tta_run) -> None:
    ckpt, _ = tta_run
    loaded = load_checkpoint(ckpt)
    assert loaded.meta["inference"] == {"tta": True} and loaded.tta


def test_evaluate_predictor_and_onnx_serve_the_same_probabilities(tta_run, tmp_path) -> None:
    ckpt, raw = tta_run
    loaded = load_checkpoint(ckpt)
    test = load_source(config_from_dict(raw)).splits["test"]
    scored = predict_set(loaded, test, tta=True)[:, 0]  # what evaluate_checkpoint scores

    images = np.load(raw["data"]["path"])["test_images"]
    arrays = [im[None].astype(np.float32) for im in images]
    names = [f"s{i}" for i in range(len(arrays))]
    finding = loaded.label_names[0]
    served = Predictor.from_checkpoint(ckpt, device="cpu").predict_arrays(arrays, names)
    graph = export_onnx(ckpt, tmp_path / "m.onnx")
    onnx = OnnxPredictor.from_path(graph)
    exported = onnx.predict_arrays(arrays, names)

    p_served = np.array([p.probabilities[finding] for p in served])
    p_onnx = np.array([p.probabilities[finding] for p in exported])
    np.testing.assert_allclose(p_served, scored, atol=1e-5)
    np.testing.assert_allclose(p_onnx, scored, atol=1e-5)
    threshold = loaded.thresholds[0]
    calls = scored >= threshold
    assert [p.positive[finding] for p in served] == list(calls)
    assert [p.positive[finding] for p in exported] == list(calls)
    sidecar = read_onnx_metadata(graph)  # it says the graph averages the flips
    assert sidecar["tta"] is True and "tta_flips_mean" in sidecar["graph"]["inside"]

    # The test can fail: without the flip the same model gives other probabilities.
    plain = predict_set(loaded, test, tta=False)[:, 0]
    assert np.abs(plain - scored).max() > 1e-3
