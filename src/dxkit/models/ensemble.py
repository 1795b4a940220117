"""A deep ensemble in one network: N copies of an architecture, initialised independently,
each trained on its own loss, predicting the mean of their logits (``model.ensemble: N``).

Averaging independently initialised networks is the cheapest reliable gain in ranking and
calibration for small data (Lakshminarayanan et al. 2017; Fort et al. 2019 show the members
land in different modes). Keeping the members inside one ``nn.Module`` means a checkpoint,
``evaluate``, ``predict``, ONNX export and the server treat an ensemble like any network.
Neither timm nor MONAI ships this wrapper for arbitrary models, hence this file.

Training: ``member_logits`` gives each member's logits so the engine sums the members'
losses (each member receives exactly the gradient it would get alone); the members see the
same batches, so their diversity comes from their initialisation. Averaging logits (not
probabilities) keeps the output linear in the heads, so Platt scaling folds into every head.
The CAM layer is recorded as the first member's; the explainer reads that layer in every
member and averages their maps (``dxkit.explain.cam.member_layers``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn


def classifier_head(model: nn.Module) -> nn.Module:
    """A network's classifier: timm's ``get_classifier()`` or its last ``nn.Linear``."""
    if hasattr(model, "get_classifier"):
        # nn.Module.__getattr__ is typed Tensor | Module; timm's method returns the head.
        head = cast("Callable[[], object]", model.get_classifier)()
        if isinstance(head, nn.Module):
            return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear classifier head")
    return linears[-1]


class DeepEnsemble(nn.Module):
    """``members`` → logits averaged over members, ``(N, num_classes)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)
        first = members[0]
        for tag in ("dxkit_cam_layer", "dxkit_stem", "dxkit_head"):
            path = getattr(first, tag, None)
            if path is not None:
                setattr(self, tag, f"members.0.{path}")
        arch: dict[str, Any] = dict(getattr(first, "arch", {}) or {})
        self.arch = {**arch, "ensemble": len(members)}

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(members, N, num_classes)``: each member's own logits, for its own loss."""
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_logits(x).mean(0)

    def get_classifier(self) -> nn.ModuleList:
        """Every member's head (the parameters the engine treats as "the head")."""
        return nn.ModuleList(classifier_head(m) for m in self.members)
