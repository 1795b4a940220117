"""`dxkit export --int8`: a static int8 ONNX graph calibrated on the run's training scans,
checked against fp32 on its held-out scans, refused beyond tolerance, and loaded by
`dxkit predict` and the server like any exported model."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from dxkit.cli import main
from dxkit.infer import quantize
from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit

# Tiny networks on two shared cores: one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), " ".join((captured.out + captured.err).split())


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28 px noise; odd scans carry a bright 6 px square somewhere."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype(np.uint8)[:, None]
    for i in np.flatnonzero(labels[:, 0]):
        r, c = rng.integers(0, 22, 2)
        images[i, r : r + 6, c : c + 6] = 200
    return images, labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("int8")
    images, labels = squares(240, seed=0)
    npz = tmp / "pneumoniamnist.npz"
    np.savez(npz, train_images=images[:160], train_labels=labels[:160],
             val_images=images[160:200], val_labels=labels[160:200],
             test_images=images[200:], test_labels=labels[200:])  # fmt: skip
    cfg = config_from_dict({
        "name": "int8", "seed": 0, "output_dir": str(tmp / "runs"),
        "data": {"source": "medmnist", "name": "pneumoniamnist", "path": str(npz),
                 "batch_size": 16},
        "model": {"name": "smallresnet", "options": {"widths": [8, 16], "depths": [1, 1],
                                                     "strides": [1, 2]}},
        "train": {"epochs": 3, "lr": 0.01, "augment": {"strength": "none"}},
        "evaluate": {"bootstrap": 10},
    })  # fmt: skip
    return fit(cfg, progress=False).run_dir


@pytest.fixture(scope="module")
def int8_export(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("int8-out") / "model.int8.onnx"
    with pytest.raises(SystemExit) as exc:
        main(["export", str(trained), "--int8", "--out", str(out)])
    assert exc.value.code == 0
    return out, str(trained / "checkpoints" / "best.ckpt")


def test_int8_export_is_quantised_and_records_its_check(int8_export: tuple[Path, str]) -> None:
    out, _ = int8_export
    graph = onnx.load(str(out))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really int8, not a copy of fp32
    meta = json.loads({p.key: p.value for p in graph.metadata_props}["dxkit"])
    q = meta["quantization"]
    assert q["calibrated_on"] == "64 scans of the run's train split"
    check = q["check"]
    assert check["split"] == "test" and check["scans"] == 40  # the held-out test split
    assert check["tolerance"] == {
        "auc": quantize.DEFAULT_MAX_AUC_CHANGE,
        "probability": quantize.DEFAULT_MAX_PROB_CHANGE,
    }
    assert check["max_prob_change"] <= quantize.DEFAULT_MAX_PROB_CHANGE
    assert meta == json.loads(Path(str(out) + ".json").read_text())


def test_int8_predictions_stay_within_the_stated_tolerance(
    int8_export: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, ckpt = int8_export
    images, _ = squares(12, seed=5)  # scans neither calibration nor the check saw
    files = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"s{i}.png")
        files.append(str(tmp_path / f"s{i}.png"))
    assert run(["predict", ckpt, *files, "--out", str(tmp_path / "fp32.csv")], capsys)[0] == 0
    assert run(["predict", str(out), *files, "--out", str(tmp_path / "int8.csv")], capsys)[0] == 0
    fp32 = {
        r["file"]: float(r["pneumonia"]) for r in csv.DictReader((tmp_path / "fp32.csv").open())
    }
    int8 = {
        r["file"]: float(r["pneumonia"]) for r in csv.DictReader((tmp_path / "int8.csv").open())
    }
    assert sorted(fp32) == sorted(int8) == sorted(files)
    worst = max(abs(fp32[f] - int8[f]) for f in files)
    assert worst <= quantize.DEFAULT_MAX_PROB_CHANGE
    assert worst > 0  # int8 arithmetic: not the fp32 graph under another name

    # The server serves it too.
    from fastapi.testclient import TestClient

    from dxkit.serve.app import create_app

    client = TestClient(create_app([out]), base_url="http://127.0.0.1")
    buf = io.BytesIO()
    Image.fromarray(images[0]).save(buf, format="PNG")
    (name,) = [m["name"] for m in client.get("/v1/models").json()["models"]]
    r = client.post(
        "/v1/predict",
        data={"model": name},
        files=[("files", ("a.png", buf.getvalue(), "image/png"))],
    )
    assert r.status_code == 200, r.text
    assert r.json()["findings"][0]["probability"] == pytest.approx(int8[files[0]], abs=1e-6)


def test_int8_beyond_a_tiny_tolerance_is_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "refused.int8.onnx"
    code, text = run(["export", str(trained), "--int8", "--max-prob-change", "1e-9", "--out",
                      str(out)], capsys)  # fmt: skip
    assert code == 2 and "int8 export refused" in text and "Traceback" not in text
    found = re.search(r"max \|Δp\| ([0-9.]+) \(tolerance 1e-09\)", text)
    assert found and float(found.group(1)) > 0
    assert not out.exists() and not list(tmp_path.glob(".*work"))


def test_help_states_the_tolerances(capsys: pytest.CaptureFixture[str]) -> None:
    _, boxed = run(["export", "--help"], capsys)
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", boxed).split())  # rich's panel borders out
    assert f"default {quantize.DEFAULT_MAX_AUC_CHANGE}" in text
    assert f"default {quantize.DEFAULT_MAX_PROB_CHANGE}" in text
