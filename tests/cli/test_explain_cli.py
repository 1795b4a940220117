"""`dxkit explain`: overlays, montages, raw maps and explain.json for 2-D and 3-D classifiers
and exam bundles; clear one-line errors (exit 2) for scans and names that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dxkit.cli import main
from dxkit.explain.cam import CamExplainer
from dxkit.infer.predictor import Predictor
from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit

PLANES = ["axial", "coronal", "sagittal"]


# Tiny networks on two shared cores: one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out + captured.err


def toy_run(tmp: Path, name: str, images: np.ndarray, labels: np.ndarray) -> Path:
    """Train one epoch of a tiny smallresnet on a MedMNIST-layout file; the run folder."""
    npz = tmp / f"{name}.npz"
    n = len(images) // 3
    np.savez(npz, train_images=images[n:], train_labels=labels[n:], val_images=images[:n],
             val_labels=labels[:n], test_images=images[:n], test_labels=labels[:n])  # fmt: skip
    cfg = config_from_dict({
        "name": name, "seed": 0, "output_dir": str(tmp / "runs"),
        "data": {"source": "medmnist", "name": name, "path": str(npz), "batch_size": 16},
        "model": {"name": "smallresnet", "options": {"widths": [8, 16], "depths": [1, 1],
                                                     "strides": [1, 2]}},
        "train": {"epochs": 1, "lr": 0.01, "augment": {"strength": "none"}},
        "evaluate": {"bootstrap": 10},
    })  # fmt: skip
    return fit(cfg, progress=False).run_dir


def squares(n: int, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, *shape), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype(np.uint8)[:, None]
    for i in np.flatnonzero(labels[:, 0]):
        corner = rng.integers(0, np.array(shape) - 4)
        images[(i, *(slice(c, c + 4) for c in corner))] = 220
    return images, labels


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    images, labels = squares(60, (16, 16))
    return toy_run(tmp_path_factory.mktemp("cli2d"), "pneumoniamnist", images, labels)


@pytest.fixture()
def scans(tmp_path: Path) -> list[Path]:
    image = np.full((16, 16), 30, np.uint8)
    image[3:7, 9:13] = 220
    Image.fromarray(image).save(tmp_path / "lesion.png")
    np.save(tmp_path / "blank.npy", np.full((20, 24), 30.0, np.float32))
    return [tmp_path / "lesion.png", tmp_path / "blank.npy"]


def is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


def test_explain_2d_writes_overlays_maps_and_summary(
    run_2d: Path, scans: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, text = run(["explain", str(run_2d), *map(str, scans), "--out", str(out), "--check"],
                     capsys)  # fmt: skip
    assert code == 0, text
    summary = json.loads((out / "explain.json").read_text())
    assert summary["kind"] == "classify" and summary["layer"] == "stages.1"
    assert summary["findings"] == ["pneumonia"] and len(summary["scans"]) == 2
    predictor = Predictor.from_checkpoint(run_2d / "checkpoints" / "best.ckpt")
    explainer = CamExplainer.from_predictor(predictor)
    for row, scan in zip(summary["scans"], scans, strict=True):
        assert is_png(out / row["files"]["overlay"])
        saved = np.load(out / row["files"]["map"])
        from dxkit.io import read_scan

        reference = explainer.explain(read_scan(scan))  # the library, called directly
        np.testing.assert_allclose(saved, reference.raw, rtol=1e-5, atol=1e-9)
        assert row["probability"] == pytest.approx(reference.probability, rel=1e-5)
        assert saved.shape == read_scan(scan).shape[1:]  # at the scan's own resolution
        check = row["faithfulness"]
        assert check["fraction"] == 0.1 and len(check["random_deleted_scores"]) == 5
        assert check["drop_top"] == pytest.approx(check["score"] - check["top_deleted_score"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--finding", "acl"], "'acl' is not one this binary model predicts; valid findings: "
                               "'pneumonia'"),
        (["--layer", "layer4"], "'layer4' does not exist in SmallResNet; layers with "
                                "convolutions: stem"),
        (["--method", "lime"], "unknown heatmap method 'lime'"),
        (["--method", "occlusion", "--layer", "stages.0"], "does not apply to occlusion"),
        (["--check", "--fill", "smudge"], "--fill 'smudge' is unknown"),
    ],
)  # fmt: skip
def test_bad_names_are_one_line_errors(
    run_2d: Path,
    scans: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    code, text = run(["explain", str(run_2d), str(scans[0]), "--out", str(tmp_path), *extra],
                     capsys)  # fmt: skip
    assert code == 2 and message in " ".join(text.split()) and "Traceback" not in text


def test_scan_that_does_not_fit_the_checkpoint_says_what_is_expected(
    run_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = tmp_path / "series.npy"
    np.save(volume, np.zeros((5, 16, 16), np.float32))
    code, text = run(["explain", str(run_2d), str(volume), "--out", str(tmp_path / "o")], capsys)
    flat = " ".join(text.split())
    assert code == 2 and "series.npy" in flat and "(1, 5, 16, 16)" in flat
    assert "this checkpoint expects a 2-D scan (C, H, W) or (H, W)" in flat and "16 px" in flat


def test_explain_3d_writes_a_montage_with_the_peak_slice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, labels = squares(24, (8, 12, 12))
    run_dir = toy_run(tmp_path, "nodulemnist3d", images, labels)
    volume = tmp_path / "volume.npy"
    np.save(volume, images[1].astype(np.float32))
    out = tmp_path / "out"
    code, text = run(["explain", str(run_dir), str(volume), "--out", str(out), "--check"], capsys)
    assert code == 0, text
    row = json.loads((out / "explain.json").read_text())["scans"][0]
    saved = np.load(out / row["files"]["map"])
    assert saved.shape == (8, 12, 12)
    assert row["peak"]["slice"] == int(np.unravel_index(int(saved.argmax()), saved.shape)[0])
    assert is_png(out / row["files"]["montage"]) and is_png(out / row["files"]["overlay"])
    assert "drop_random" in row["faithfulness"]


def exam_bundle(path: Path) -> Path:
    """An exam bundle of random multi-task networks with a fitted fusion, as the exam
    trainer writes it (training one takes minutes)."""
    from dxkit.data.exam import IntensityNormalization
    from dxkit.infer.exam_model import BUNDLE_FORMAT, build_networks
    from dxkit.models.fusion import PlaneFusion
    from dxkit.train.exam_module import save_exam_bundle

    findings = ["abnormal", "acl", "meniscus"]
    model = {"backbone": "smallresnet", "planes": PLANES, "findings": findings,
             "variant": "multitask", "in_chans": 1, "pooling": "max",
             "options": {"widths": [8, 16], "depths": [1, 1], "strides": [2, 2]}}  # fmt: skip
    torch.manual_seed(0)
    networks = build_networks(model)
    rng = np.random.default_rng(0)
    fusion = PlaneFusion(PLANES, findings).fit(rng.random((30, 3, 3)), rng.random((30, 3)) > 0.5)
    meta = {"kind": "exam", "format": BUNDLE_FORMAT, "model": model,
            "findings": findings, "planes": list(PLANES),
            "fusion": {"state": fusion.to_state()},
            "normalization": IntensityNormalization(mean=0.3, std=0.2).to_dict(),
            "size": 16, "thresholds": [0.5, 0.5, 0.5], "dxkit_version": "test"}  # fmt: skip
    return save_exam_bundle(path, meta, networks)


def test_explain_exam_writes_a_montage_per_plane_on_one_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = exam_bundle(tmp_path / "exam" / "checkpoints" / "bundle.ckpt")
    folder = tmp_path / "0001"
    folder.mkdir()
    rng = np.random.default_rng(1)
    depths = {"axial": 4, "coronal": 6, "sagittal": 5}
    for plane, depth in depths.items():
        np.save(folder / f"{plane}.npy", rng.integers(0, 256, (depth, 24, 24), dtype=np.uint8))
    out = tmp_path / "out"
    argv = ["explain", str(tmp_path / "exam"), str(folder), "--out", str(out),
            "--finding", "acl", "--method", "gradcam++", "--check"]  # fmt: skip
    code, text = run(argv, capsys)
    assert code == 0, text
    row = json.loads((out / "explain.json").read_text())["scans"][0]
    assert row["finding"] == "acl" and row["deciding_plane"] in PLANES
    maxima = []
    for plane, info in row["planes"].items():
        saved = np.load(out / info["files"]["map"])
        assert saved.shape == (depths[plane], 24, 24)
        assert 0 <= info["deciding_slice"] < depths[plane]
        assert len(info["slice_contributions"]) == depths[plane]
        assert is_png(out / info["files"]["montage"]) and is_png(out / info["files"]["overlay"])
        assert "drop_top" in info["faithfulness"]
        maxima.append(float(saved.max()))
    assert row["vmax"] == pytest.approx(max(maxima), rel=1e-6)  # one scale over all planes

    code, text = run(["explain", str(bundle), str(folder / "axial.npy"), "--out", str(out)],
                     capsys)  # fmt: skip
    assert code == 2 and "is a file" in text
    code, text = run(["explain", str(bundle), str(folder), "--out", str(out), "--method",
                      "occlusion"], capsys)  # fmt: skip
    assert code == 2 and "slice-stack heatmaps support" in " ".join(text.split())


def test_explain_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(["explain", "--help"], capsys)
    assert code == 0 and "--finding" in text and "--check" in text
