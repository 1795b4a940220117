"""The training engine end to end on a tiny generated MedMNIST-layout file.

Checks what a user relies on: a run folder with config, metrics and atomic checkpoints that
load with ``weights_only=True`` and carry their preprocessing; learning actually happens;
the same seed gives the same metrics; ``--resume`` continues; progressive resizing and
freeze/unfreeze do what they say.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from dxkit.infer.checkpoint import load_checkpoint, read_checkpoint
from dxkit.infer.predictor import Predictor
from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit

MODEL = "smallresnet"


def toy_npz(path: Path, n: int = 160, size: int = 16, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    """Class 1 images have a bright 4×4 square at a random place; class 0 do not."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, count in (("train", n), ("val", n // 2), ("test", n // 2)):
        images = rng.integers(0, 60, size=(count, size, size), dtype=np.uint8)
        labels = (np.arange(count) % 2).astype(np.uint8)[:, None]
        for i in np.flatnonzero(labels[:, 0]):
            r, c = rng.integers(0, size - 4, size=2)
            images[i, r : r + 4, c : c + 4] = 220
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    np.savez(path, **out)
    return path


def toy_config(tmp_path: Path, **train: object) -> dict:
    npz = toy_npz(tmp_path / "breastmnist.npz")
    return {
        "name": "toy",
        "seed": 3,
        "output_dir": str(tmp_path / "runs"),
        "data": {"source": "medmnist", "name": "breastmnist", "path": str(npz), "batch_size": 32},
        "model": {"name": MODEL, "options": {"widths": [8, 16], "depths": [1, 1],
                                             "strides": [1, 2]}},
        "train": {"epochs": 3, "lr": 0.01, "augment": {"strength": "none"}, **train},
        "evaluate": {"bootstrap": 50},
    }  # fmt: skip


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_run_folder_checkpoints_and_learning(tmp_path: Path) -> None:
    cfg = config_from_dict(toy_config(tmp_path, epochs=4))
    result = fit(cfg, progress=False)
    run = result.run_dir
    assert (run / "config.yaml").is_file()
    assert result.best_checkpoint == run / "checkpoints" / "best.ckpt"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    rows = [r for r in metrics_rows(run) if r.get("val_auc")]
    assert len(rows) == 4
    # The square is learnable: val AUC 1.00 with seeds 0-5 (1 thread) and 0-4 (2 threads).
    assert result.best_score is not None and result.best_score > 0.9
    assert not list((run / "checkpoints").glob("*.tmp"))  # atomic writes leave no debris

    ckpt = read_checkpoint(result.best_checkpoint)  # weights_only=True inside
    meta = ckpt["dxkit"]
    assert meta["label_names"] and meta["task"] == "binary"
    assert meta["preprocessing"]["size"] == 16
    assert meta["config"]["name"] == "toy"
    loaded = load_checkpoint(result.best_checkpoint)
    assert loaded.preprocessing.mean != [0.0]  # dataset statistics were saved


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    a = fit(config_from_dict(toy_config(tmp_path / "a", epochs=2)), progress=False)
    b = fit(config_from_dict(toy_config(tmp_path / "b", epochs=2)), progress=False)
    va = [r["val_auc"] for r in metrics_rows(a.run_dir) if r.get("val_auc")]
    vb = [r["val_auc"] for r in metrics_rows(b.run_dir) if r.get("val_auc")]
    assert va == vb


def test_resume_continues_from_last_checkpoint(tmp_path: Path) -> None:
    raw = toy_config(tmp_path, epochs=2, schedule="cosine")
    first = fit(config_from_dict(raw), progress=False)
    assert torch.load(first.last_checkpoint, weights_only=True)["epoch"] == 1
    before = [r for r in metrics_rows(first.run_dir) if r.get("val_auc")]
    raw["train"]["epochs"] = 3
    again = fit(config_from_dict(raw), resume=True, progress=False)
    assert again.run_dir == first.run_dir
    assert torch.load(again.last_checkpoint, weights_only=True)["epoch"] == 2
    after = [r for r in metrics_rows(again.run_dir) if r.get("val_auc")]
    # The first run's epochs keep their rows (Lightning's writer deletes metrics.csv).
    assert [r["epoch"] for r in after] == ["0", "1", "2"]
    assert [r["val_auc"] for r in after[:2]] == [r["val_auc"] for r in before]


def test_resume_drops_rows_of_an_unfinished_epoch(tmp_path: Path) -> None:
    from dxkit.train.metrics_log import rows_to_keep

    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,val_auc\n0,4,0.6\n1,9,0.7\n2,12,\n")
    torch.save({"epoch": 1}, tmp_path / "last.ckpt")
    header, rows = rows_to_keep(csv_path, tmp_path / "last.ckpt")
    assert header == ["epoch", "step", "val_auc"]
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert rows_to_keep(tmp_path / "absent.csv", tmp_path / "last.ckpt") == ([], [])


def test_new_run_gets_a_new_folder(tmp_path: Path) -> None:
    raw = toy_config(tmp_path, epochs=1)
    a = fit(config_from_dict(raw), progress=False)
    b = fit(config_from_dict(raw), progress=False)
    assert a.run_dir != b.run_dir and b.run_dir.name == "toy-2"


def test_progressive_resize_trains_small_then_full(tmp_path: Path) -> None:
    from dxkit.train.callbacks import ProgressiveResize

    cb = ProgressiveResize([(0, 8), (2, 16)])
    assert [cb.size_at(e) for e in range(4)] == [8, 8, 16, 16]
    cfg = config_from_dict(toy_config(tmp_path, epochs=3, progressive_resize=[[0, 8], [2, 16]]))
    result = fit(cfg, progress=False)
    assert load_checkpoint(result.best_checkpoint).preprocessing.size == 16


def test_freeze_then_unfreeze_changes_body_only_later(tmp_path: Path) -> None:
    from dxkit.train.fit import make_trainer, prepare

    cfg = config_from_dict(toy_config(tmp_path, epochs=1, freeze_epochs=1, schedule="constant"))
    prepared = prepare(cfg)
    stem = next(prepared.module.model.parameters()).detach().clone()
    trainer = make_trainer(cfg, tmp_path / "f", progress=False, checkpointing=False, logger=False)
    trainer.fit(prepared.module, prepared.train_loader, prepared.val_loader)
    assert torch.equal(stem, next(prepared.module.model.parameters()).detach())
    head = prepared.module.model.get_classifier() if hasattr(
        prepared.module.model, "get_classifier") else None  # fmt: skip
    assert head is None or any(p.requires_grad for p in head.parameters())


def test_predictor_matches_checkpoint_task(tmp_path: Path) -> None:
    cfg = config_from_dict(toy_config(tmp_path, epochs=3))
    result = fit(cfg, progress=False)
    predictor = Predictor.from_checkpoint(result.best_checkpoint)
    image = np.zeros((16, 16), dtype=np.uint8)
    image[4:8, 4:8] = 220
    blank = np.zeros((16, 16), dtype=np.uint8)
    bright, dark = predictor.predict_arrays([image, blank], ["lesion", "blank"])
    name = predictor.label_names[0]
    assert bright.probabilities[name] > dark.probabilities[name]


@pytest.mark.parametrize("precision", ["bf16-mixed"])
def test_mixed_precision_on_cpu_runs(tmp_path: Path, precision: str) -> None:
    cfg = config_from_dict(toy_config(tmp_path, epochs=1, precision=precision))
    assert fit(cfg, progress=False).last_checkpoint.is_file()


def test_resume_refuses_to_stretch_a_one_cycle_schedule(tmp_path: Path) -> None:
    from dxkit.errors import ConfigError

    raw = toy_config(tmp_path, epochs=1)
    fit(config_from_dict(raw), progress=False)
    raw["train"]["epochs"] = 2
    with pytest.raises(ConfigError, match="planned for 1 epochs"):
        fit(config_from_dict(raw), resume=True, progress=False)
