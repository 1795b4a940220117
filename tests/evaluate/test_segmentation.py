"""Per-image Dice with the empty rule, Dice on positives, and the threshold/min-area search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from dxkit.errors import InvalidScanError
from dxkit.infer.segment_decision import (
    binarize,
    choose_seg_thresholds,
    dice_per_image,
    image_decisions,
    mean_dice,
    positive_dice,
)


def masks_from(*grids: list[list[int]]) -> np.ndarray:
    return np.array(grids, dtype=np.uint8)


# Four 3×3 images: partial overlap, both empty, missed lesion, false positive.
PRED = masks_from(
    [[1, 1, 0], [0, 0, 0], [0, 0, 0]],
    [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
    [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
    [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
)
TRUTH = masks_from(
    [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
    [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
    [[1, 0, 0], [0, 0, 0], [0, 0, 0]],
    [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
)


def test_dice_hand_computed() -> None:
    # image 0: |P|=2, |T|=3, overlap 1 → 2/5; image 1: both empty → 1; images 2, 3 → 0.
    np.testing.assert_allclose(dice_per_image(PRED, TRUTH), [0.4, 1.0, 0.0, 0.0])
    assert mean_dice(PRED, TRUTH) == pytest.approx(1.4 / 4)
    assert positive_dice(PRED, TRUTH) == pytest.approx(0.2)  # images 0 and 2
    assert np.isnan(positive_dice(PRED[1:2], TRUTH[1:2]))
    # Channel axis and torch tensors are accepted.
    tensor = torch.from_numpy(PRED[:, None].astype(np.float32))
    np.testing.assert_allclose(dice_per_image(tensor, TRUTH[:, None]), [0.4, 1.0, 0.0, 0.0])


def test_dice_matches_sklearn_f1_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((20, 8, 8)) < rng.uniform(0, 0.3, (20, 1, 1))
    truth = rng.random((20, 8, 8)) < rng.uniform(0, 0.3, (20, 1, 1))
    pred[:3] = truth[:3] = False  # a few both-empty images
    reference = [
        f1_score(t.ravel(), p.ravel(), zero_division=1.0) for p, t in zip(pred, truth, strict=True)
    ]
    np.testing.assert_allclose(dice_per_image(pred, truth), reference)


def test_binarize_and_image_decisions() -> None:
    prob = np.zeros((2, 4, 4), np.float32)
    prob[0, :2, :2] = 0.9  # area 4
    prob[1, 0, 0] = 0.6  # area 1
    prob[1, 3, 3] = 0.5  # exactly at threshold: not inside (strict >)
    masks = binarize(prob, 0.5, min_area=2)
    assert masks[0].sum() == 4 and masks[1].sum() == 0
    np.testing.assert_array_equal(image_decisions(prob, 0.5, 2), [True, False])
    np.testing.assert_array_equal(image_decisions(prob, 0.5, 0), [True, True])
    np.testing.assert_array_equal(image_decisions(prob, 0.95, 0), [False, False])


def test_choose_thresholds_hand_example() -> None:
    truth = np.zeros((3, 10, 10), np.uint8)
    truth[0, 2:6, 2:6] = 1  # a 16-pixel lesion
    prob = np.full((3, 10, 10), 0.05, np.float32)
    prob[0, 2:6, 2:6] = 0.8
    prob[0, 2:6, 6] = 0.45  # a halo next to the lesion: outside at 0.5, inside at 0.4
    prob[1, 0:2, 0] = 0.9  # a 2-pixel false positive on an empty image
    # image 2: nothing anywhere
    chosen = choose_seg_thresholds(prob, truth, thresholds=[0.4, 0.5], min_areas=[0, 3])
    # At 0.5 with min_area 3: lesion exact (Dice 1), FP removed (1), empty (1) → mean 1.
    assert (chosen.threshold, chosen.min_area) == (0.5, 3)
    assert chosen.mean_dice == pytest.approx(1.0) and chosen.positive_dice == pytest.approx(1.0)
    assert chosen.sensitivity == 1.0 and chosen.specificity == 1.0
    # Brute force over the same grid with the public functions agrees on every pair.
    for threshold in (0.4, 0.5):
        for min_area in (0, 3):
            one = choose_seg_thresholds(prob, truth, [threshold], [min_area])
            brute = mean_dice(binarize(prob, threshold, min_area), truth)
            assert one.mean_dice == pytest.approx(brute)
    # Without the area filter, the FP image scores 0: mean (1 + 0 + 1) / 3.
    no_filter = choose_seg_thresholds(prob, truth, thresholds=[0.5], min_areas=[0])
    assert no_filter.mean_dice == pytest.approx(2 / 3) and no_filter.specificity == 0.5
    # At 0.4 the halo joins: Dice 2·16 / (20 + 16).
    halo = choose_seg_thresholds(prob, truth, thresholds=[0.4], min_areas=[3])
    assert halo.positive_dice == pytest.approx(32 / 36)


def test_shape_errors() -> None:
    with pytest.raises(InvalidScanError, match="differ in shape"):
        dice_per_image(PRED, TRUTH[:, :2])
    with pytest.raises(InvalidScanError, match=r"\(N, H, W\)"):
        mean_dice(PRED[0], TRUTH[0])
