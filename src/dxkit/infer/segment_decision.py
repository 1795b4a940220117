"""Segmentation scores as the SIIM challenge computed them, and the mask → decision thresholds.

Dice is per image, then averaged, with the competition's empty rule: an image whose truth
and prediction are both empty scores 1 (any prediction on an empty truth, or an empty
prediction on a non-empty truth, scores 0). "Dice on positives" averages only the images
with a non-empty truth — it says how well the lesion is outlined when there is one.

A probability map becomes a decision with two numbers chosen on validation: the pixel
probability threshold and a minimum area (pixels of the map); a predicted mask smaller than
the minimum area is emptied, which removes the small false positives that cost a whole
point on every empty image. Images with a non-empty mask after that are "pneumothorax present".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dxkit.errors import InvalidScanError

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.1, 0.951, 0.05), 2).tolist())
DEFAULT_MIN_AREAS: tuple[int, ...] = (0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def _as_stack(array: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, 1, H, W)`` (NumPy or torch) → NumPy ``(N, H, W)``."""
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise InvalidScanError(
            f"{name}: expected a stack of masks (N, H, W) or (N, 1, H, W), got shape {a.shape}"
        )
    return a


def _pair(
    pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_stack(pred, "prediction") != 0, _as_stack(truth, "truth") != 0
    if p.shape != t.shape:
        raise InvalidScanError(
            f"prediction {p.shape} and truth {t.shape} masks differ in shape; resize the "
            "prediction to the truth's size before scoring"
        )
    return p, t


def _dice_from_counts(
    intersection: np.ndarray, pred_area: np.ndarray, true_area: np.ndarray
) -> np.ndarray:
    total = pred_area + true_area
    safe = np.where(total == 0, 1, total)
    return np.where(total == 0, 1.0, 2.0 * intersection / safe)  # empty rule: both empty → 1


def dice_per_image(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> np.ndarray:
    """Dice of each image's binary masks (non-zero = inside), float64 ``(N,)``, empty rule."""
    p, t = _pair(pred, truth)
    inter = (p & t).sum(axis=(1, 2))
    return _dice_from_counts(inter, p.sum(axis=(1, 2)), t.sum(axis=(1, 2)))


def mean_dice(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> float:
    """The challenge score: per-image Dice (empty rule) averaged over all images."""
    return float(dice_per_image(pred, truth).mean())


def positive_dice(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> float:
    """Mean Dice over the images whose truth is not empty (NaN when there are none)."""
    _, t = _pair(pred, truth)
    positive = t.any(axis=(1, 2))
    if not positive.any():
        return float("nan")
    return float(dice_per_image(pred, truth)[positive].mean())


def binarize(
    prob: np.ndarray | torch.Tensor, threshold: float = 0.5, min_area: int = 0
) -> np.ndarray:
    """Masks ``prob > threshold``, emptied where fewer than ``min_area`` pixels remain."""
    p = _as_stack(prob, "probabilities")
    masks = p > threshold
    small = masks.sum(axis=(1, 2)) < min_area
    masks[small] = False
    return masks


def image_decisions(
    prob: np.ndarray | torch.Tensor, threshold: float = 0.5, min_area: int = 0
) -> np.ndarray:
    """Image-level "finding present" (bool ``(N,)``): a non-empty mask after ``binarize``."""
    area = (_as_stack(prob, "probabilities") > threshold).sum(axis=(1, 2))
    return area >= max(int(min_area), 1)


@dataclass(frozen=True)
class SegThresholds:
    """The chosen (threshold, min_area) and the validation scores they gave."""

    threshold: float
    min_area: int
    mean_dice: float
    positive_dice: float
    sensitivity: float
    specificity: float


def choose_seg_thresholds(
    prob: np.ndarray | torch.Tensor,
    truth: np.ndarray | torch.Tensor,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    min_areas: Sequence[int] = DEFAULT_MIN_AREAS,
) -> SegThresholds:
    """The (threshold, min_area) pair maximising mean Dice (empty rule) on validation maps.

    Exhaustive over the grid; ties go to the first pair in (threshold, min_area) order.
    Sensitivity/specificity are of the image-level decision at the chosen pair (NaN when the
    validation set has no positive / no negative image).
    """
    p = _as_stack(prob, "probabilities").astype(np.float32, copy=False)
    _, t = _pair(p, truth)
    if not len(thresholds) or not len(min_areas):
        raise InvalidScanError("choose_seg_thresholds: give at least one threshold and min_area")
    true_area = t.sum(axis=(1, 2))
    truly_positive = true_area > 0
    best: tuple[float, float, int, np.ndarray] | None = None
    for threshold in thresholds:
        masks = p > threshold
        area = masks.sum(axis=(1, 2))
        inter = (masks & t).sum(axis=(1, 2))
        for min_area in min_areas:
            kept = area >= min_area
            dice = _dice_from_counts(np.where(kept, inter, 0), np.where(kept, area, 0), true_area)
            score = float(dice.mean())
            if best is None or score > best[0]:
                best = (score, float(threshold), int(min_area), dice)
    assert best is not None  # the grids are non-empty (checked above)
    score, threshold, min_area, dice = best
    decided = image_decisions(p, threshold, min_area)
    n_pos, n_neg = int(truly_positive.sum()), int((~truly_positive).sum())
    return SegThresholds(
        threshold=threshold,
        min_area=min_area,
        mean_dice=score,
        positive_dice=float(dice[truly_positive].mean()) if n_pos else float("nan"),
        sensitivity=float((decided & truly_positive).sum() / n_pos) if n_pos else float("nan"),
        specificity=float((~decided & ~truly_positive).sum() / n_neg) if n_neg else float("nan"),
    )
