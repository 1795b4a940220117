"""The segmenter's pieces: Dice in the training module, the mask path's image score, the
full-resolution mask, progressive resizing of image and mask, and config checks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dxkit.data.sources.siim import load_siim
from dxkit.data.synthetic_siim import write_siim_fixture
from dxkit.errors import ConfigError
from dxkit.infer.segment_decision import binarize, dice_per_image, image_decisions
from dxkit.infer.segment_model import full_resolution_mask, mask_scores, score_threshold
from dxkit.models.segment import create_segmenter
from dxkit.train.callbacks import ProgressiveResize
from dxkit.train.config import config_from_dict
from dxkit.train.segment_data import ResizableSegmentationSet
from dxkit.train.segment_fit import check_sizes, fit
from dxkit.train.segment_module import SegmentModule, dice_empty_rule


def random_masks(rng: np.random.Generator, n: int = 40, side: int = 12) -> np.ndarray:
    masks = rng.random((n, side, side)) < rng.uniform(0, 0.3, (n, 1, 1))
    masks[: n // 4] = False  # some empty
    return masks


def test_module_dice_matches_evaluation_dice() -> None:
    rng = np.random.default_rng(0)
    pred, truth = random_masks(rng), random_masks(rng)
    pred[5] = truth[5] = False  # both empty → 1
    ours = dice_empty_rule(torch.from_numpy(pred)[:, None], torch.from_numpy(truth)[:, None])
    np.testing.assert_allclose(ours.numpy(), dice_per_image(pred, truth), atol=1e-12)
    assert ours[5] == 1.0


@pytest.mark.parametrize("min_area", [0, 1, 5, 30, 144, 500])
def test_mask_score_is_the_area_decision(min_area: int) -> None:
    rng = np.random.default_rng(min_area)
    maps = rng.random((30, 12, 12)).astype(np.float32) ** 4
    maps[3] = 0.5  # ties at the threshold
    scores = mask_scores(maps, min_area)
    for t in (0.1, 0.5, 0.73):
        decided = image_decisions(maps, t, min_area)
        assert np.array_equal(scores > t, decided)
        assert np.array_equal(scores >= score_threshold(t), decided)  # the report's p >= t


def test_full_resolution_mask_follows_the_decision() -> None:
    prob = np.zeros((8, 8), np.float32)
    prob[2:5, 2:4] = 0.9  # 6 pixels
    big = full_resolution_mask(prob, (32, 24), 0.5, min_area=6)
    assert big.shape == (32, 24) and big.dtype == np.uint8 and big.any()
    assert big[:, :].sum() > 6  # upsampled, not a copy of the small map
    assert not full_resolution_mask(prob, (32, 24), 0.5, min_area=7).any()
    same = full_resolution_mask(prob, (8, 8), 0.5, min_area=0)
    assert np.array_equal(same.astype(bool), binarize(prob[None], 0.5)[0])


class _Shapes(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, tuple[int, ...], tuple[int, ...], float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x, mask = batch
        self.seen.append((trainer.current_epoch, tuple(x.shape), tuple(mask.shape), mask.sum()))


def test_progressive_resizing_resizes_image_and_mask(tmp_path: Path) -> None:
    dicom, rle_csv, _ = write_siim_fixture(tmp_path, n_images=8, shape=(96, 80))
    data = load_siim(dicom, rle_csv)
    cfg = config_from_dict(
        {"name": "t", "task": "segment", "preprocess": {"size": 64}, "train": {"epochs": 3}}
    )
    dataset = ResizableSegmentationSet(data, range(len(data)), 64, augment=False, cache=True)
    model = create_segmenter("unet", "resnet18")
    module = SegmentModule(model, cfg.train, cfg.segment, {"preprocessing": {"size": 64}})
    shapes = _Shapes()
    trainer = L.Trainer(
        max_epochs=3, callbacks=[ProgressiveResize([(0, 32), (2, 64)]), shapes],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_train_batches=1,
    )  # fmt: skip
    trainer.fit(module, DataLoader(dataset, batch_size=8))
    sizes = {epoch: (x[-1], m[-1]) for epoch, x, m, _ in shapes.seen}
    assert sizes == {0: (32, 32), 1: (32, 32), 2: (64, 64)}
    # The mask was resampled from the original, not taken from a different image.
    areas = {epoch: float(s) for epoch, _, _, s in shapes.seen}
    full = sum(float(data.mask(i).sum()) for i in range(len(data))) / (96 * 80)
    assert areas[0] / 32**2 == pytest.approx(full, rel=0.15)
    assert areas[2] / 64**2 == pytest.approx(full, rel=0.1)


def test_sizes_must_be_multiples_of_32() -> None:
    cfg = config_from_dict({"name": "t", "task": "segment", "preprocess": {"size": 100}})
    with pytest.raises(ConfigError, match="multiples of 32"):
        check_sizes(cfg)
    cfg = config_from_dict(
        {"name": "t", "task": "segment", "preprocess": {"size": 64},
         "train": {"progressive_resize": [[0, 48]]}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"\[48\]"):
        check_sizes(cfg)


def test_segment_fit_needs_siim_source(tmp_path: Path) -> None:
    cfg = config_from_dict(
        {"name": "t", "task": "segment", "preprocess": {"size": 64}, "output_dir": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match=r"data\.source: siim"):
        fit(cfg, progress=False)
    cfg = config_from_dict(
        {"name": "t", "task": "segment", "preprocess": {"size": 64},
         "data": {"source": "siim", "path": str(tmp_path)}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.csv"):
        fit(cfg, progress=False)
