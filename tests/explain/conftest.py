"""A classifier trained by the engine on head-CT phantoms with a lesion planted at a random
place, shared by the planted-lesion, faithfulness and overlay tests (trained once: ~10 s).

The kept checkpoint is the one of lowest validation loss, not of best validation AUC: the AUC
reaches 1.0 within a few epochs and ties keep the FIRST epoch that reached it - a half-trained
network whose maps, and that epoch's number, depend on the CPU's rounding (Grad-CAM hit 56% on
an AMD machine, 92% on an Intel one). The loss keeps falling to the end of the one-cycle
schedule (the last epoch was the best in 16 of 16 trainings: seeds 0-3 × 1/2 threads ×
channels-last on/off), so the kept network is the converged one on every machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from dxkit.data.synthetic import head_phantom
from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit

SIZE = 48
N_TRAIN, N_VAL, N_TEST = 300, 100, 100
BRAIN_WINDOW = (40.0, 80.0)  # blood (70 HU) is bright, but bone (1000 HU) is brighter


@dataclass
class PlantedRun:
    checkpoint: Path
    images: np.ndarray  # test images, uint8 (N, SIZE, SIZE)
    labels: np.ndarray  # (N,) 1 = lesion present
    masks: np.ndarray  # (N, SIZE, SIZE) bool, the planted lesion
    fit_seconds: float


def brain_window_uint8(hu: np.ndarray) -> np.ndarray:
    centre, width = BRAIN_WINDOW
    return np.round(np.clip((hu - (centre - width / 2)) / width, 0, 1) * 255).astype(np.uint8)


def planted_npz(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Head phantoms (brain window, uint8); every second one has a hyperdense lesion at a
    random place and of random size (radius 5–12% of the image). Returns the test masks."""
    rng = np.random.default_rng(seed)
    arrays, masks = {}, {}
    for split, count in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST)):
        images, lesion = [], []
        for i in range(count):
            hu, mask = head_phantom(SIZE, rng, lesion=i % 2 == 1)
            images.append(brain_window_uint8(hu))
            lesion.append(mask)
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).astype(np.uint8)[:, None]
        masks[split] = np.stack(lesion)
    np.savez(path, **arrays)
    return {"images": arrays["test_images"], "labels": arrays["test_labels"][:, 0],
            "masks": masks["test"]}  # fmt: skip


@contextmanager
def single_thread() -> Iterator[None]:
    # Tiny convolutions on two shared cores: two OpenMP threads spin against each other and
    # everyone else's (measured 10x slower than one thread here).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> PlantedRun:
    tmp = tmp_path_factory.mktemp("planted")
    # A binary MedMNIST name gives the engine its task; the images are ours.
    test = planted_npz(tmp / "pneumoniamnist.npz")
    cfg = config_from_dict({
        "name": "planted", "seed": 0, "output_dir": str(tmp / "runs"),
        "data": {"source": "medmnist", "name": "pneumoniamnist",
                 "path": str(tmp / "pneumoniamnist.npz"), "batch_size": 32},
        "model": {"name": "smallresnet", "options": {"widths": [16, 16, 32], "depths": [1, 1, 1],
                                                     "strides": [1, 2, 2]}},
        "train": {"epochs": 8, "lr": 0.01, "augment": {"strength": "none"},
                  "monitor": "val_loss"},
        "evaluate": {"bootstrap": 10},
    })  # fmt: skip
    with single_thread():
        result = fit(cfg, progress=False)
    return PlantedRun(result.best_checkpoint, test["images"], test["labels"], test["masks"],
                      result.seconds)  # fmt: skip
