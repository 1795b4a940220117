"""Issue 15, finding 5: the input guard. A head-CT slice in Hounsfield units given to a
model trained on 0–255 images is flagged (CSV column, JSON field) and refused with
--strict-inputs; scans like the training data are not flagged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dxkit.cli import main
from dxkit.preprocess.input_profile import check_input, profile_inputs


def radiographs(n: int = 20, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (1, 32, 32)).astype(np.float32) for _ in range(n)]


def hu_slice(seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hu = rng.normal(30, 10, (1, 32, 32)).astype(np.float32)
    hu[:, :4] = -1012.0  # air around the head
    hu[:, 14:18, 14:18] = 1735.0  # skull
    return hu


def test_profile_records_range_quantiles_and_channels() -> None:
    arrays = radiographs()
    profile = profile_inputs(arrays, modality=None)
    every = np.concatenate([a.ravel() for a in arrays])
    assert profile["min"] == every.min() and profile["max"] == every.max()
    assert profile["channels"] == [1] and profile["scans"] == 20
    assert profile["quantiles"]["0.5"] == pytest.approx(np.median(every), abs=3)


def test_hounsfield_slice_is_flagged_and_radiographs_are_not() -> None:
    profile = profile_inputs(radiographs())
    assert all(check_input(profile, a) is None for a in radiographs(seed=1))
    warning = check_input(profile, hu_slice())
    assert warning is not None and "trained on" in warning and "-1012" in warning
    assert "modality CT" in (
        check_input(profile | {"modality": "CR"}, radiographs()[0], "CT") or ""
    )
    assert check_input({}, hu_slice()) is None  # old checkpoints: no profile, no flag


@pytest.fixture(scope="module")
def guard_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny classifier trained on 0–255 PNGs: its run folder and its data folder."""
    import yaml

    tmp_path = tmp_path_factory.mktemp("guard")
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for y, cls in enumerate(["normal", "abnormal"]):
        for i in range(8):
            a = rng.integers(0, 120, (16, 16), dtype=np.uint8)
            a[4:8, 4:8] += 120 * y
            (data / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(data / cls / f"{i}.png")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "guard",
                "output_dir": str(tmp_path / "runs"),
                "data": {"source": "folder", "path": str(data), "batch_size": 8},
                "preprocess": {"size": 16},
                "model": {"name": "smallresnet", "options": {"widths": [4, 8, 8]}},
                "train": {"epochs": 1},
                "evaluate": {"bootstrap": 10},
            }
        )
    )
    with pytest.raises(SystemExit) as code:
        main(["train", str(cfg), "--no-evaluate"])
    assert code.value.code == 0
    return tmp_path / "runs" / "guard", data


def test_predict_flags_and_strict_refuses(
    guard_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data = guard_run
    ct = tmp_path / "ct.npy"
    np.save(ct, hu_slice()[0])
    ok = data / "normal" / "0.png"
    out = tmp_path / "pred.csv"
    with pytest.raises(SystemExit) as code:
        main(["predict", str(run), str(ok), str(ct), "--out", str(out)])
    assert code.value.code == 0
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["input_warning"] == ""
    assert rows[1]["input_warning"].startswith("input unlike the training data")
    capsys.readouterr()
    with pytest.raises(SystemExit) as code:
        main(["predict", str(run), str(ct), "--strict-inputs"])
    text = capsys.readouterr()
    assert code.value.code == 2 and "ct.npy" in text.err and "Traceback" not in text.err

    with pytest.raises(SystemExit) as code:
        main(["explain", str(run), str(ct), "--out", str(tmp_path / "heat"), "--strict-inputs"])
    text = capsys.readouterr()
    assert code.value.code == 2 and "input unlike the training data" in text.err
    with pytest.raises(SystemExit) as code:
        main(["explain", str(run), str(ct), "--out", str(tmp_path / "heat")])
    assert code.value.code == 0
    summary = json.loads((tmp_path / "heat" / "explain.json").read_text())
    assert summary["scans"][0]["input_warning"].startswith("input unlike")

    from dxkit.infer.predictor import Predictor

    pred = Predictor.from_checkpoint(run / "checkpoints" / "best.ckpt").predict_files([ct])[0]
    assert pred.as_dict()["input_warning"] == rows[1]["input_warning"]

    from fastapi.testclient import TestClient

    from dxkit.serve.app import create_app

    client = TestClient(
        create_app([run / "checkpoints" / "best.ckpt"]), base_url="http://127.0.0.1"
    )
    answers = {}
    for path, kind in ((ok, "image/png"), (ct, "application/octet-stream")):
        r = client.post("/v1/predict", files=[("files", (path.name, path.read_bytes(), kind))])
        assert r.status_code == 200, r.text
        answers[path.suffix] = r.json()["input_warning"]
    assert answers[".png"] is None
    assert answers[".npy"] is not None and "trained on" in answers[".npy"]


def test_onnx_export_carries_the_profile_and_warns_like_the_checkpoint(
    guard_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gap (a): the same scan gets the same warning from the .ckpt and from its .onnx, and
    `dxkit predict X.onnx --strict-inputs` refuses it."""
    from dxkit.infer.checkpoint import read_checkpoint
    from dxkit.infer.onnx_predictor import OnnxPredictor, read_onnx_metadata
    from dxkit.infer.predictor import Predictor

    run, data = guard_run
    ckpt = run / "checkpoints" / "best.ckpt"
    onnx_path = tmp_path / "guard.onnx"
    with pytest.raises(SystemExit) as code:
        main(["export", str(ckpt), "--format", "onnx", "--out", str(onnx_path)])
    assert code.value.code == 0
    profile = read_checkpoint(ckpt)["dxkit"]["input_profile"]
    assert profile and read_onnx_metadata(onnx_path)["input_profile"] == profile

    ct = tmp_path / "ct.npy"
    np.save(ct, hu_slice()[0])
    ok = data / "abnormal" / "3.png"
    eager = Predictor.from_checkpoint(ckpt).predict_files([ok, ct])
    exported = OnnxPredictor.from_path(onnx_path).predict_files([ok, ct])
    assert [p.input_warning for p in exported] == [p.input_warning for p in eager]
    assert exported[0].input_warning is None
    assert (exported[1].input_warning or "").startswith("input unlike the training data")

    out = tmp_path / "pred.csv"
    with pytest.raises(SystemExit) as code:
        main(["predict", str(onnx_path), str(ok), str(ct), "--out", str(out)])
    assert code.value.code == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["input_warning"] for r in rows] == ["", exported[1].input_warning]
    capsys.readouterr()
    with pytest.raises(SystemExit) as code:
        main(["predict", str(onnx_path), str(ct), "--strict-inputs"])
    text = capsys.readouterr()
    assert code.value.code == 2 and "ct.npy" in text.err and "Traceback" not in text.err
