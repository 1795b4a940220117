"""ONNX export of a model trained on the head-CT cache (RSNA style): raw DICOM in, the same
probabilities as the eager .ckpt (< 1e-4) on real RSNA slices.

Such a model's recipe (``Preprocessing.ct``: HU → crop to the head → resize → uint8
windows) depends on each slice's content (the head box), so ``OnnxPredictor`` runs it in
NumPy before the graph with the very function the eager ``Predictor`` and the cache writer
use (``ct_window_channels``); the graph holds the scaling, resize, normalisation and net.
The model is randomly initialised (parity, not accuracy, is under test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dxkit.infer.export import export_onnx
from dxkit.infer.onnx_predictor import OnnxPredictor
from dxkit.infer.predictor import Predictor
from dxkit.io import read_scan
from dxkit.models.registry import create_model
from dxkit.preprocess.spec import CTRecipe, Preprocessing

TOLERANCE = 1e-4
LABELS = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"]
TINY_NET = {"widths": [8, 16], "depths": [1, 1], "strides": [2, 2]}


def ct_checkpoint(path: Path, context: bool, resize: str = "area") -> Path:
    """A dxkit checkpoint of a random smallresnet with an RSNA cache recipe (64 px cache,
    32 px model input, non-trivial mean/std)."""
    ct = CTRecipe(windows=[(40.0, 80.0), (80.0, 200.0), (600.0, 2800.0)],
                  window_names=["brain", "subdural", "bone"], size=64, context=context,
                  resize=resize)  # fmt: skip
    c = ct.channels
    pre = Preprocessing(in_chans=c, size=32, ct=ct, mean=[0.2] * c, std=[0.3] * c)
    torch.manual_seed(0)
    model = create_model("smallresnet", c, len(LABELS), 2, **TINY_NET)
    net = {"name": "smallresnet", "in_chans": c, "num_classes": len(LABELS), "spatial_dims": 2}
    meta = {
        "format": "dxkit-checkpoint/1",
        "kind": "classify",
        "model": {**net, "options": TINY_NET},
        "preprocessing": pre.model_dump(mode="json"),
        "label_names": LABELS,
        "task": "multilabel",
        "thresholds": [0.5] * len(LABELS),
    }
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "dxkit": meta}, path)
    return path


def max_difference(a: list, b: list) -> float:  # type: ignore[type-arg]
    return max(
        abs(x.probabilities[k] - y.probabilities[k])
        for x, y in zip(a, b, strict=True)
        for k in x.probabilities
    )


@pytest.mark.parametrize("resize", ["area", "pillow"])
def test_raw_rsna_dicom_through_onnx_equals_eager(rsna_dir: Path, tmp_path: Path, resize) -> None:
    files = sorted(rsna_dir.glob("*.dcm"))[:16]  # signed and 12-bit files, padded FOVs
    ckpt = ct_checkpoint(tmp_path / "rsna.ckpt", context=False, resize=resize)
    onnx = export_onnx(ckpt, tmp_path / "rsna.onnx")
    eager = Predictor.from_checkpoint(ckpt, device="cpu")
    runtime = OnnxPredictor.from_path(onnx)
    a, b = eager.predict_files(files), runtime.predict_files(files)
    assert max_difference(a, b) < TOLERANCE
    spread = np.ptp([p.probabilities["any"] for p in a])
    assert spread > 10 * TOLERANCE  # the inputs really differ: the check is not vacuous
    # The graph's input is the cached slice itself: crop, resize and windows ran outside.
    raw = read_scan(files[0])
    prepared = runtime.prepare(raw, "x")
    ct = eager.loaded.preprocessing.ct
    assert ct is not None and prepared.shape == (3, 64, 64)
    np.testing.assert_array_equal(prepared, ct.prepare(raw).astype(np.float32))


def test_context_model_on_neighbouring_real_slices(rsna_dir: Path, tmp_path: Path) -> None:
    """2.5-D: (s-1, s, s+1) as one (3, H, W) HU array; real slices stand in for neighbours."""
    files = sorted(rsna_dir.glob("*.dcm"))[:12]
    hu = [read_scan(f)[0] for f in files]
    stacks = [np.stack(hu[i : i + 3]) for i in range(0, 9, 3)] + [hu[9][None]]
    names = [f"stack-{i}" for i in range(len(stacks))]
    ckpt = ct_checkpoint(tmp_path / "ctx.ckpt", context=True)
    onnx = export_onnx(ckpt, tmp_path / "ctx.onnx")
    a = Predictor.from_checkpoint(ckpt, device="cpu").predict_arrays(stacks, names)
    b = OnnxPredictor.from_path(onnx).predict_arrays(stacks, names)
    assert max_difference(a, b) < TOLERANCE
    assert np.ptp([p.probabilities["any"] for p in a]) > 10 * TOLERANCE
