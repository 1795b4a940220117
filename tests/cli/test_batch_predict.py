"""Batches survive bad files: `dxkit predict` and `dxkit explain` on folders (recursive) with
corrupt scans write every good row, list each bad scan in errors.csv with its reason, and
exit 1 (some failed) or 2 (none could be read)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from dxkit.cli import main
from dxkit.data.synthetic import generate_ct_dataset
from dxkit.infer.predictor import Predictor
from dxkit.io.discover import discover
from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit

# Tiny networks on two shared cores: one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out + captured.err


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of a tiny smallresnet on 16 px squares (MedMNIST layout): the run folder."""
    tmp = tmp_path_factory.mktemp("batch2d")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, size=(60, 16, 16), dtype=np.uint8)
    labels = (np.arange(60) % 2).astype(np.uint8)[:, None]
    images[labels[:, 0] == 1, 4:8, 4:8] = 220
    npz = tmp / "pneumoniamnist.npz"
    np.savez(npz, train_images=images[20:], train_labels=labels[20:], val_images=images[:20],
             val_labels=labels[:20], test_images=images[:20], test_labels=labels[:20])  # fmt: skip
    cfg = config_from_dict({
        "name": "batch", "seed": 0, "output_dir": str(tmp / "runs"),
        "data": {"source": "medmnist", "name": "pneumoniamnist", "path": str(npz),
                 "batch_size": 16},
        "model": {"name": "smallresnet", "options": {"widths": [8, 16], "depths": [1, 1],
                                                     "strides": [1, 2]}},
        "train": {"epochs": 1, "lr": 0.01, "augment": {"strength": "none"}},
        "evaluate": {"bootstrap": 10},
    })  # fmt: skip
    return fit(cfg, progress=False).run_dir


def truncated_png(path: Path) -> Path:
    """A PNG cut after 40 bytes: the header is there, the pixels are not."""
    image = np.full((16, 16), 90, np.uint8)
    Image.fromarray(image).save(path)
    path.write_bytes(path.read_bytes()[:40])
    return path


@pytest.fixture()
def batch(tmp_path: Path) -> Path:
    """root/a/*.png (4 good) + root/b/c/<series>/*.dcm (3 good) + root/b/broken.png."""
    root = tmp_path / "scans"
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 200, (16, 16), dtype=np.uint8)).save(
            root / "a" / f"{i}.png"
        )
    generate_ct_dataset(root / "b" / "c", 1, slices_per_patient=3, size=16, seed=1)
    (root / "b" / "c" / "labels.csv").unlink()
    truncated_png(root / "b" / "broken.png")
    return root


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_predict_folder_with_a_corrupt_file_writes_the_good_rows(
    run_2d: Path, batch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "probs.csv"
    code, text = run(["predict", str(run_2d), str(batch), "--out", str(out)], capsys)
    assert code == 1, text
    written = rows(out)
    good = sorted(
        p for p in batch.rglob("*") if p.suffix in {".png", ".dcm"} and "broken" not in p.name
    )
    assert len(good) == 7 and sorted(r["file"] for r in written) == sorted(map(str, good))
    # Each row is what the Predictor gives that file alone (skipping shifts nothing).
    predictor = Predictor.from_checkpoint(run_2d / "checkpoints" / "best.ckpt", device="cpu")
    alone = {p.source: p for p in predictor.predict_files(good)}
    name = predictor.label_names[0]
    for r in written:
        assert float(r[name]) == pytest.approx(alone[r["file"]].probabilities[name], abs=1e-6)
    errors = rows(out.parent / "errors.csv")
    assert [e["file"] for e in errors] == [str(batch / "b" / "broken.png")]
    assert "broken.png" in errors[0]["reason"] and errors[0]["reason"]
    flat = " ".join(text.split())
    assert f"skipped {batch / 'b' / 'broken.png'}" in flat and "1 scan(s) failed, 7 done" in flat
    assert "Traceback" not in text


def test_predict_all_bad_exits_2_with_errors_csv(
    run_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    truncated_png(bad / "x.png")
    (bad / "y.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")  # header cut short
    out = tmp_path / "out" / "probs.csv"
    code, text = run(["predict", str(run_2d), str(bad), str(tmp_path / "nope.png"), "--out",
                      str(out)], capsys)  # fmt: skip
    assert code == 2 and "none of the 3 scan(s) could be used" in " ".join(text.split())
    assert not out.exists()
    listed = {e["file"]: e["reason"] for e in rows(out.parent / "errors.csv")}
    assert set(listed) == {str(bad / "x.png"), str(bad / "y.dcm"), str(tmp_path / "nope.png")}
    assert "no such file" in listed[str(tmp_path / "nope.png")]
    # A later clean run removes the stale errors.csv.
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(good)
    assert run(["predict", str(run_2d), str(good), "--out", str(out)], capsys)[0] == 0
    assert len(rows(out)) == 1 and not (out.parent / "errors.csv").exists()


def test_explain_folder_skips_the_corrupt_file(
    run_2d: Path, batch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "heat"
    code, text = run(["explain", str(run_2d), str(batch / "a"), str(batch / "b"), "--out",
                      str(out)], capsys)  # fmt: skip
    assert code == 1, text
    summary = json.loads((out / "explain.json").read_text())
    assert len(summary["scans"]) == 7
    assert [f["source"] for f in summary["failed"]] == [str(batch / "b" / "broken.png")]
    assert [e["file"] for e in rows(out / "errors.csv")] == [str(batch / "b" / "broken.png")]


def test_series_grouping_reads_one_volume_per_series(tmp_path: Path) -> None:
    generate_ct_dataset(tmp_path / "ct", 2, slices_per_patient=4, size=16, seed=3)
    (tmp_path / "ct" / "labels.csv").unlink()
    items, bad = discover([tmp_path / "ct"], "series")
    assert not bad and len(items) == 2 and all(len(i.paths) == 4 for i in items)
    uids = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in items[0].paths
    }
    assert len(uids) == 1
    files, _ = discover([tmp_path / "ct"], "file")
    assert len(files) == 8
