"""Slice-stack models (MRNet style): a 2D backbone on every slice, pooled over the series.

Input layout (the dxkit volume contract, so the same datasets feed 3D models): a batch of
series is either

* a padded tensor ``(N, C, D_max, H, W)`` plus ``lengths`` ``(N,)`` — slices at index
  ``>= lengths[i]`` are padding: they never reach the backbone and never enter the pooling; or
* a list of ``(C, D_i, H, W)`` tensors of different lengths.

All real slices of the whole batch go through the backbone in ONE batched call (a Python loop
over slices is what makes public re-implementations slow), are average-pooled to one vector
per slice, then pooled over slices by max (the paper), mean, or gated attention
(Ilse et al. 2018), and a linear head gives one logit per finding.

``SliceStackNet`` with ``num_findings=3`` is the multi-task network of one plane;
``ExamNetworks`` holds the networks of a whole exam, either one per plane (multi-task) or one
per (finding, plane) as in Bien et al. 2018.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from dxkit.errors import ConfigError, InvalidScanError
from dxkit.models.backbones import drop_classifier
from dxkit.models.registry import create_model

Pooling = Literal["max", "mean", "attention"]
Series = torch.Tensor | Sequence[torch.Tensor]
POOLINGS = ("max", "mean", "attention")


@dataclass
class SliceScores:
    """What each slice contributed to a series' logits (padding entries are masked).

    ``contributions[i, s, f]`` sums over the real slices ``s`` to ``logits[i, f] - bias[f]``
    exactly (in eval mode): for max pooling it is the part of the logit carried by the
    feature channels whose maximum came from slice ``s`` — so ``decisive_slice()`` answers
    "which slice decided the max-pooled score". ``slice_logits[i, s]`` is the head applied to
    slice ``s`` alone (NaN at padding); ``weights`` are the attention weights (or None).
    """

    logits: torch.Tensor  # (N, F)
    contributions: torch.Tensor  # (N, D_max, F), 0 at padding
    slice_logits: torch.Tensor  # (N, D_max, F), NaN at padding
    mask: torch.Tensor  # (N, D_max) bool, True for real slices
    weights: torch.Tensor | None  # (N, D_max) attention weights, 0 at padding

    def decisive_slice(self) -> torch.Tensor:
        """Index ``(N, F)`` of the slice contributing most to each finding's logit."""
        masked = self.contributions.masked_fill(~self.mask[..., None], float("-inf"))
        return masked.argmax(dim=1)


def pack_series(
    series: Series, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All real slices as one batch ``(sum D_i, C, H, W)`` plus the ``lengths`` ``(N,)``."""
    if isinstance(series, torch.Tensor):
        if series.ndim != 5:
            raise InvalidScanError(
                f"slice-stack input has shape {tuple(series.shape)}; expected a padded batch "
                "(N, C, D_max, H, W) with lengths, or a list of (C, D, H, W) series"
            )
        n, _, d_max = series.shape[:3]
        if lengths is None:
            lengths = torch.full((n,), d_max, dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=series.device)
        if lengths.shape != (n,) or int(lengths.min()) < 1 or int(lengths.max()) > d_max:
            raise InvalidScanError(
                f"lengths {lengths.tolist()} do not fit a batch of {n} series padded to "
                f"{d_max} slices; each must be in 1..{d_max}"
            )
        mask = torch.arange(d_max, device=series.device) < lengths[:, None]
        return series.movedim(2, 1)[mask], lengths
    if lengths is not None:
        raise ConfigError("lengths are implied by a list of series; pass lengths=None")
    if len(series) == 0:
        raise InvalidScanError("slice-stack input is an empty list of series")
    for i, item in enumerate(series):
        if item.ndim != 4 or item.shape[1] < 1:
            raise InvalidScanError(
                f"series {i} has shape {tuple(item.shape)}; expected (C, D, H, W) with D >= 1"
            )
    slices = torch.cat([item.movedim(1, 0) for item in series])
    lengths = torch.tensor([item.shape[1] for item in series], device=slices.device)
    return slices, lengths


class SliceStackNet(nn.Module):
    """A registered 2D backbone on every slice, pooled over slices, one logit per finding.

    ``in_chans=1`` builds the backbone with a 1-channel first convolution (pretrained RGB
    filters are summed, which equals feeding the grey slice as three identical channels at a
    third of the cost).
    """

    def __init__(
        self,
        backbone_name: str,
        in_chans: int = 1,
        num_findings: int = 1,
        pooling: Pooling = "max",
        pretrained: bool | str | Path = False,
        dropout: float = 0.0,
        attention_hidden: int = 128,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"slice pooling {pooling!r} is unknown; use one of {POOLINGS}")
        if num_findings < 1:
            raise ConfigError(f"num_findings={num_findings}; use a positive integer")
        backbone: Any = create_model(
            backbone_name, in_chans, 1, spatial_dims=2, pretrained=pretrained, **backbone_kwargs
        )
        if not hasattr(backbone, "forward_features") or not hasattr(backbone, "reset_classifier"):
            raise ConfigError(
                f"backbone {backbone_name!r} has no forward_features/reset_classifier; "
                "use a timm, AlexNet or smallresnet 2D backbone"
            )
        drop_classifier(backbone)  # the series head replaces the image classifier
        self.backbone = backbone
        self.num_features = int(backbone.num_features)
        self.pooling = pooling
        self.attention: nn.Module | None = None
        if pooling == "attention":
            self.attention = nn.Sequential(
                nn.Linear(self.num_features, attention_hidden),
                nn.Tanh(),
                nn.Linear(attention_hidden, 1),
            )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, num_findings)
        self.dxkit_cam_layer = f"backbone.{backbone.dxkit_cam_layer}"
        self.dxkit_head = "head"
        self.dxkit_stem = f"backbone.{backbone.dxkit_stem}"

    def slice_features(self, slices: torch.Tensor) -> torch.Tensor:
        """One feature vector per slice ``(S, F)``: backbone feature map, spatially averaged."""
        return self.backbone.forward_features(slices).mean(dim=(-2, -1))

    def _pool(
        self, series: Series, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        slices, lengths = pack_series(series, lengths)
        features = self.slice_features(slices)
        padded = pad_sequence(list(features.split(lengths.tolist())), batch_first=True)
        mask = torch.arange(padded.shape[1], device=padded.device) < lengths[:, None]
        argmax = weights = None
        if self.pooling == "max":
            pooled, argmax = padded.masked_fill(~mask[..., None], float("-inf")).max(dim=1)
        elif self.pooling == "mean":
            pooled = padded.sum(dim=1) / lengths[:, None].to(padded.dtype)  # padding rows are 0
        else:
            assert self.attention is not None  # set in __init__ for attention pooling
            scores = self.attention(padded).squeeze(-1).masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=1)
            pooled = (weights[..., None] * padded).sum(dim=1)
        return padded, mask, pooled, argmax, weights

    def forward(self, series: Series, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(N, num_findings)`` for a batch of series."""
        _, _, pooled, _, _ = self._pool(series, lengths)
        return self.head(self.dropout(pooled))

    def explain_slices(self, series: Series, lengths: torch.Tensor | None = None) -> SliceScores:
        """Logits plus each slice's share in them (see ``SliceScores``)."""
        padded, mask, pooled, argmax, weights = self._pool(series, lengths)
        logits = self.head(self.dropout(pooled))
        per_channel = self.head.weight  # (F_out, F)
        slice_terms = padded @ per_channel.T  # (N, D, F_out), w · f_s without bias
        if self.pooling == "max":
            assert argmax is not None
            owner = nn.functional.one_hot(argmax, padded.shape[1]).to(padded.dtype)  # (N, F, D)
            contributions = torch.einsum("nc,ncd,oc->ndo", pooled, owner, per_channel)
        elif self.pooling == "mean":
            contributions = slice_terms / mask.sum(dim=1)[:, None, None].to(padded.dtype)
        else:
            assert weights is not None
            contributions = weights[..., None] * slice_terms
        contributions = contributions.masked_fill(~mask[..., None], 0.0)
        slice_logits = (slice_terms + self.head.bias).masked_fill(~mask[..., None], float("nan"))
        return SliceScores(logits, contributions, slice_logits, mask, weights)


class ExamNetworks(nn.Module):
    """The slice-stack networks of one exam: per plane (multi-task) or per (finding, plane).

    ``forward`` takes ``{plane: series batch}`` (and optionally ``{plane: lengths}``) and
    returns plane-level logits ``(N, n_planes, n_findings)`` in ``planes`` × ``findings``
    order — the input ``PlaneFusion`` combines. Training the "per_finding" variant with a
    loss on this tensor equals training its networks separately: they share no weights.
    """

    def __init__(
        self,
        backbone_name: str,
        planes: Sequence[str],
        findings: Sequence[str],
        variant: Literal["multitask", "per_finding"] = "per_finding",
        **net_kwargs: Any,
    ) -> None:
        super().__init__()
        if variant not in ("multitask", "per_finding"):
            raise ConfigError(f"exam model variant {variant!r}; use 'multitask' or 'per_finding'")
        if (
            not planes
            or not findings
            or len(set(planes)) != len(planes)
            or len(set(findings)) != len(findings)
        ):
            raise ConfigError(
                f"planes {list(planes)} and findings {list(findings)} must be non-empty and unique"
            )
        self.planes, self.findings, self.variant = list(planes), list(findings), variant
        nets: dict[str, nn.Module] = {}
        for plane in self.planes:
            if variant == "multitask":
                nets[plane] = SliceStackNet(
                    backbone_name, num_findings=len(self.findings), **net_kwargs
                )
            else:
                for finding in self.findings:
                    nets[f"{finding}__{plane}"] = SliceStackNet(
                        backbone_name, num_findings=1, **net_kwargs
                    )
        self.nets = nn.ModuleDict(nets)

    def forward(
        self,
        exam: Mapping[str, Series],
        lengths: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Plane-level logits ``(N, n_planes, n_findings)``."""
        missing = [p for p in self.planes if p not in exam]
        if missing:
            raise InvalidScanError(f"exam batch lacks planes {missing}; it has {sorted(exam)}")
        per_plane = []
        for plane in self.planes:
            plane_lengths = lengths.get(plane) if lengths is not None else None
            if self.variant == "multitask":
                per_plane.append(self.nets[plane](exam[plane], plane_lengths))
            else:
                per_plane.append(
                    torch.cat(
                        [
                            self.nets[f"{f}__{plane}"](exam[plane], plane_lengths)
                            for f in self.findings
                        ],
                        dim=1,
                    )
                )
        return torch.stack(per_plane, dim=1)
