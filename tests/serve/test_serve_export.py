"""ONNX export: probabilities from ONNX Runtime match PyTorch (< 1e-4) on real scans, the
preprocessing travels inside the graph and beside it, and the CLI writes both files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from deploy_fixtures import TMP, ct_checkpoint, ct_onnx, first_rsna, medmnist_checkpoint

from dxkit.errors import ConfigError
from dxkit.infer.checkpoint import load_checkpoint
from dxkit.infer.export import export_onnx, sidecar_path
from dxkit.infer.onnx_predictor import OnnxPredictor, load_predictor
from dxkit.infer.predictor import Predictor

TOLERANCE = 1e-4


def max_difference(a: list, b: list) -> float:  # type: ignore[type-arg]
    return max(
        abs(x.probabilities[k] - y.probabilities[k])
        for x, y in zip(a, b, strict=True)
        for k in x.probabilities
    )


def test_parity_on_real_rsna_dicoms_through_ct_windows(rsna_dir: Path) -> None:
    files = first_rsna(rsna_dir, 16)  # 512 px, signed and 12-bit files, padding below -2000 HU
    eager = Predictor.from_checkpoint(ct_checkpoint(), device="cpu").predict_files(files)
    onnx_run = OnnxPredictor.from_path(ct_onnx()).predict_files(files)
    assert [p.source for p in onnx_run] == [str(f) for f in files]
    assert max_difference(eager, onnx_run) < TOLERANCE
    spread = np.ptp([p.probabilities["lesion"] for p in eager])
    assert spread > 10 * TOLERANCE  # the inputs really differ: the check is not vacuous


def test_parity_on_real_medmnist_images_upsampled(medmnist_dir: Path) -> None:
    npz = medmnist_dir / "breastmnist.npz"
    ckpt = medmnist_checkpoint(npz)
    out = export_onnx(ckpt, TMP / "onnx" / "breast.onnx")
    images = np.load(npz)["test_images"][:64].astype(np.float32)  # real 28 px ultrasound
    arrays = list(images[:, None])
    names = [f"test-{i}" for i in range(len(arrays))]
    eager = Predictor.from_checkpoint(ckpt, device="cpu").predict_arrays(arrays, names)
    onnx_run = OnnxPredictor.from_path(out).predict_arrays(arrays, names)
    assert max_difference(eager, onnx_run) < TOLERANCE
    colour = [np.repeat(a, 3, axis=0) for a in arrays[:4]]  # colour → grey outside the graph
    a = Predictor.from_checkpoint(ckpt).predict_arrays(colour, names[:4])
    b = OnnxPredictor.from_path(out).predict_arrays(colour, names[:4])
    assert max_difference(a, b) < TOLERANCE


def test_graph_holds_windows_resize_and_normalisation() -> None:
    """Feeding raw Hounsfield units of any size gives the PyTorch path's probabilities; the
    metadata inside the graph equals the sidecar and the checkpoint's preprocessing."""
    loaded = load_checkpoint(ct_checkpoint())
    rng = np.random.default_rng(0)
    predictor = OnnxPredictor.from_path(ct_onnx())
    for shape in [(1, 100, 130), (1, 40, 40), (1, 64, 64)]:  # shrink, enlarge, as-is
        hu = rng.uniform(-1100, 1500, shape).astype(np.float32)
        with torch.no_grad():
            x = loaded.preprocessing.apply(hu)[None]
            want = torch.sigmoid(loaded.model(x)).numpy()
        probs, logits = predictor.run(hu[None])
        assert np.abs(probs - want).max() < TOLERANCE
        assert np.allclose(1 / (1 + np.exp(-logits)), probs, atol=1e-6)
    sidecar = json.loads(sidecar_path(ct_onnx()).read_text())
    model = onnx.load(str(ct_onnx()))
    embedded = json.loads({p.key: p.value for p in model.metadata_props}["dxkit"])
    assert embedded == sidecar
    assert sidecar["preprocessing"] == loaded.preprocessing.model_dump(mode="json")
    assert sidecar["label_names"] == ["lesion"] and sidecar["task"] == "binary"
    assert sidecar["graph"]["inside"][:2] == ["ct_windows", "resize_antialiased"]
    ops = {node.op_type for node in model.graph.node}
    assert {"Resize", "Clip", "Sigmoid"} <= ops


def test_onnx_predictor_describes_like_predictor() -> None:
    eager = Predictor.from_checkpoint(ct_checkpoint()).describe()
    exported = load_predictor(ct_onnx()).describe()
    assert isinstance(load_predictor(ct_onnx()), OnnxPredictor)
    for key in ("model", "task", "findings", "thresholds", "preprocessing"):
        assert exported[key] == eager[key]


def test_exam_network_checkpoints_do_not_export(tmp_path: Path) -> None:
    ckpt = torch.load(ct_checkpoint(), weights_only=True)
    ckpt["dxkit"]["kind"] = "exam-network"  # one network of an exam run: the bundle exports
    fake = tmp_path / "net.ckpt"
    torch.save(ckpt, fake)
    with pytest.raises(ConfigError, match=r"bundle\.ckpt"):
        export_onnx(fake, tmp_path / "net.onnx")
    with pytest.raises(ConfigError, match=r"\.onnx suffix"):
        export_onnx(ct_checkpoint(), tmp_path / "model.bin")


def test_cli_export_writes_graph_sidecar_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dxkit.cli import main

    out = tmp_path / "cli" / "model.onnx"
    with pytest.raises(SystemExit) as exc:
        main(["export", str(ct_checkpoint()), "--format", "onnx", "--out", str(out)])
    assert exc.value.code == 0
    text = capsys.readouterr()
    assert out.is_file() and sidecar_path(out).is_file()
    assert "max |Δ probability|" in text.out + text.err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(ct_checkpoint()), "--format", "tflite"])
    assert exc.value.code == 2


def test_volume_model_parity_and_serving_on_real_adrenalmnist3d(
    medmnist_dir: Path, tmp_path: Path
) -> None:
    """A 3-D classifier (random weights: the data path is what is tested) on real 28³
    AdrenalMNIST3D volumes: trilinear resize to 16³ inside the graph, same probabilities,
    and the API takes a 3-D .npy and answers a heatmap per slice."""
    import io

    from fastapi.testclient import TestClient

    from dxkit.bench.serve import write_random_checkpoint
    from dxkit.serve.app import create_app

    ckpt = write_random_checkpoint(tmp_path / "vol.ckpt", "smallresnet", size=16, spatial_dims=3,
                                   options={"widths": [4, 8], "depths": [1, 1],
                                            "strides": [2, 2]})  # fmt: skip
    out = export_onnx(ckpt, tmp_path / "vol.onnx")
    volumes = np.load(medmnist_dir / "adrenalmnist3d.npz")["test_images"][:8].astype(np.float32)
    arrays, names = list(volumes[:, None]), [f"v{i}" for i in range(8)]
    eager = Predictor.from_checkpoint(ckpt).predict_arrays(arrays, names)
    assert max_difference(eager, OnnxPredictor.from_path(out).predict_arrays(arrays, names)) < (
        TOLERANCE
    )
    client = TestClient(create_app([ckpt]), base_url="http://127.0.0.1")
    buf = io.BytesIO()
    np.save(buf, volumes[0].astype(np.uint8))
    r = client.post("/v1/explain", files=[("files", ("v.npy", buf.getvalue(), "x"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["findings"][0]["probability"] == pytest.approx(
        eager[0].probabilities["finding"], abs=1e-6
    )
    assert body["heatmap"]["slices"] == {"scan": list(range(28))}
    assert "deciding_slices" not in body["findings"][0]  # a 3-D model reads the whole volume
