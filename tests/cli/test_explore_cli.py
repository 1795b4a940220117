"""``dxkit explore``: writes the page and JSON, shouts about leaks, user errors exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dxkit.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out + captured.err


@pytest.fixture()
def npz(tmp_path: Path) -> Path:
    """A tiny file in the MedMNIST layout with one image shared by train and test."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3 == 0).astype(np.uint8)[:, None]
    arrays["test_images"][5] = arrays["train_images"][0]
    path = tmp_path / "tiny.npz"
    np.savez(path, **arrays)
    return path


def test_explore_npz_writes_page_and_json(
    npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, text = run(["explore", str(npz), "--out", str(out), "--max-images", "8"], capsys)
    assert code == 0, text
    summary = json.loads((out / "explore.json").read_text())
    assert {s: v["n"] for s, v in summary["counts"]["splits"].items()} == {
        "train": 10,
        "val": 4,
        "test": 6,
    }
    assert summary["sampling"]["read"] <= 8
    assert "medmnist: 20 images (train 10, val 4, test 6)" in text
    assert "1 image in more than one split (identical pixels)" in text
    page = (out / "explore.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_explore_folder_prints_patient_overlap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    rows = ["path,finding,patient_id,split"]
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        split = "train" if i < 5 else "test"
        patient = "P1" if i in (0, 7) else f"Q{i}"  # P1 in train and test
        rows.append(f"{i}.png,{i % 2},{patient},{split}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    code, text = run(["explore", str(tmp_path), "--out", str(out), "--salt", "s"], capsys)
    assert code == 0, text
    assert "patient overlap between splits: 1 patient (2 scans)" in text
    summary = json.loads((out / "explore.json").read_text())
    assert summary["patients"]["overlap"]["pairs"][0]["splits"] == ["train", "test"]
    assert "P1" not in (out / "explore.json").read_text()
    code, _ = run(["explore", str(tmp_path), "--out", str(out), "--show-ids"], capsys)
    assert code == 0
    assert json.loads((out / "explore.json").read_text())["patients"]["overlap"]["shared_ids"] == [
        "P1"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere.npz"], "nowhere.npz: no such file"),
        (["{tmp}/notes.txt"], "cannot explore a .txt file"),
        (["{tmp}", "--kind", "dicom"], "unknown source kind 'dicom'"),
        (["{tmp}/bad.npz"], "bad.npz"),
    ],
)
def test_user_errors_exit_2_in_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4), np.uint8))
    argv = ["explore", *(a.format(tmp=tmp_path) for a in args), "--out", str(tmp_path / "o")]
    code, text = run(argv, capsys)
    assert code == 2 and message in text and "Traceback" not in text


def test_explore_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(["explore", "--help"], capsys)
    assert code == 0 and "--max-images" in text and "--show-ids" in text
