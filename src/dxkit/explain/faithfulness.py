"""Does the map point at what the model uses? A deletion check (``dxkit explain --check``).

Delete the hottest ``fraction`` of the scan by the map (fill with the scan's mean, or with a
blurred copy) and measure how far the finding's score falls; do the same for random pixel
sets of the same size (seeded, averaged over a few draws). A faithful map's deletion costs
the model far more than a random one (Samek et al. 2017; Hooker et al. 2019 discuss the
limits of such tests). Works on 2-D images, volumes and slice stacks alike: ``x`` is
``(C, *spatial)`` and the map ``(*spatial)`` on the same grid.

Written here rather than with pytorch-grad-cam's perturbation metrics, which are 2-D only,
pick pixels by a percentile threshold (on a map that is zero over most of the image the
"top 10%" then deletes far more than 10%) and have no random baseline. Its ROAD imputation
(noisy linear infilling, Rong et al. 2022) is offered as the ``road`` fill for 2-D images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from dxkit.errors import ConfigError

Fill = Literal["mean", "blur", "road"]
FILLS = ("mean", "blur", "road")


VERDICT_RULE = (
    "faithful when deleting the map's hottest pixels lowers the score, and lowers it more "
    "than every deletion of as many random pixels; otherwise not better than random"
)


@dataclass
class DeletionCheck:
    """Scores before and after deleting the map's hottest pixels vs random pixels."""

    fraction: float
    fill: str
    draws: int
    seed: int
    score: float
    top_deleted_score: float
    random_deleted_scores: list[float]

    @property
    def drop_top(self) -> float:
        """Score lost when the hottest pixels are deleted."""
        return self.score - self.top_deleted_score

    @property
    def drop_random(self) -> float:
        """Mean score lost when random pixel sets of the same size are deleted."""
        return self.score - float(np.mean(self.random_deleted_scores))

    @property
    def verdict(self) -> str:
        """``faithful`` or ``not better than random`` by ``VERDICT_RULE``."""
        random_drops = [self.score - s for s in self.random_deleted_scores]
        beats_all = self.drop_top > 0 and all(self.drop_top > d for d in random_drops)
        return "faithful" if beats_all else "not better than random"

    def as_dict(self) -> dict[str, float | int | str | list[float]]:
        out = asdict(self)
        out["drop_top"] = self.drop_top
        out["drop_random"] = self.drop_random
        out["verdict"] = self.verdict
        out["rule"] = VERDICT_RULE
        return out


def filled(x: torch.Tensor, fill: Fill) -> torch.Tensor:
    """What deleted pixels become: each channel's mean, or a Gaussian-blurred copy (σ = 5%
    of the shortest side, at least 1 pixel) that removes detail but keeps the context.
    (``road`` depends on which pixels are deleted: see ``delete``.)"""
    if fill == "mean":
        means = x.flatten(1).mean(dim=1)
        return means.reshape(-1, *(1,) * (x.ndim - 1)).expand_as(x).clone()
    if fill == "blur":
        sigma = max(1.0, 0.05 * min(x.shape[1:]))
        blurred = [ndimage.gaussian_filter(c, sigma=sigma) for c in x.cpu().numpy()]
        return torch.from_numpy(np.stack(blurred)).to(x)
    raise ConfigError(f"deletion fill {fill!r} is unknown; use one of {FILLS}")


def delete(x: torch.Tensor, chosen: np.ndarray, fill: Fill, seed: int = 0) -> torch.Tensor:
    """``x`` (``(C, *spatial)``) with the flat pixel indices ``chosen`` deleted by ``fill``."""
    flat = x.reshape(x.shape[0], -1)
    index = torch.as_tensor(chosen, dtype=torch.long)
    if fill == "road":
        if x.ndim != 3:
            raise ConfigError("the 'road' fill works on 2-D images; use 'mean' or 'blur'")
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer

        keep = torch.ones(flat.shape[1])
        keep[index] = 0.0
        with torch.random.fork_rng():  # the imputer's noise, seeded, without global effects
            torch.manual_seed(seed)
            return NoisyLinearImputer()(x.cpu().float(), keep.reshape(x.shape[1:])).to(x)
    out = flat.clone()
    out[:, index] = filled(x, fill).reshape(x.shape[0], -1)[:, index]
    return out.reshape(x.shape)


def deletion_check(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    saliency: np.ndarray,
    fraction: float = 0.1,
    fill: Fill = "mean",
    draws: int = 5,
    seed: int = 0,
) -> DeletionCheck:
    """Delete the top ``fraction`` of ``x`` (``(C, *spatial)``) by ``saliency`` and random
    sets of the same size; ``score_fn`` maps a batch ``(N, C, *spatial)`` to scores ``(N,)``.
    """
    if fill not in FILLS:
        raise ConfigError(f"deletion fill {fill!r} is unknown; use one of {FILLS}")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"deletion fraction {fraction}; use a value between 0 and 1")
    if draws < 1:
        raise ConfigError(f"deletion draws {draws}; use at least 1 random draw")
    sal = np.asarray(saliency, dtype=np.float64)
    if sal.shape != tuple(x.shape[1:]):
        raise ConfigError(
            f"map shape {sal.shape} does not match the input's grid {tuple(x.shape[1:])}; "
            "pass the map at the model input's resolution (Heatmap.model_map)"
        )
    rng = np.random.default_rng(seed)
    n_pixels = sal.size
    k = max(1, round(fraction * n_pixels))
    # Ties (e.g. an all-zero background) are broken at random, not by position.
    order = np.lexsort((rng.random(n_pixels), -sal.ravel()))
    masks = [order[:k]] + [rng.choice(n_pixels, size=k, replace=False) for _ in range(draws)]
    batch = [delete(x, chosen, fill, seed + i) for i, chosen in enumerate(masks)]
    with torch.no_grad():
        scores = score_fn(torch.stack([x, *batch])).float().cpu().numpy()
    return DeletionCheck(
        fraction=fraction,
        fill=fill,
        draws=draws,
        seed=seed,
        score=float(scores[0]),
        top_deleted_score=float(scores[1]),
        random_deleted_scores=[float(s) for s in scores[2:]],
    )
