"""Heatmaps of a deep ensemble read the CAM layer of every member: the ensemble's map is
the mean of its members' own maps, scaled by 1/members through the averaged logit."""

from __future__ import annotations

import numpy as np
import torch

from dxkit.explain.cam import compute_maps, member_layers
from dxkit.models import cam_target_layer, create_model

SMALL = {"widths": [16, 16], "depths": [1, 1], "strides": [1, 2], "dropout": 0.0}


def test_ensemble_gradcam_is_the_members_mean() -> None:
    torch.manual_seed(0)
    model = create_model("smallresnet", 1, 2, ensemble=3, **SMALL).eval()
    for member in model.members:  # non-trivial weights everywhere (zero-init BN is inert)
        for p in member.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    layer = cam_target_layer(model)
    assert member_layers(model, layer) == [m.stages[1] for m in model.members]
    x = torch.randn(2, 1, 20, 20)

    ensemble = compute_maps(model, layer, "gradcam", x, index=1)
    members = [compute_maps(m, cam_target_layer(m), "gradcam", x, index=1) for m in model.members]
    # Grad-CAM is linear in the gradient, and each member's gradient is 1/3 of its own.
    np.testing.assert_allclose(ensemble * 3, np.mean(members, 0), rtol=1e-4, atol=1e-6)
    assert not np.allclose(members[0], members[1])  # the members really differ


def test_a_single_network_keeps_its_layer() -> None:
    model = create_model("smallresnet", 1, 1, **SMALL)
    layer = cam_target_layer(model)
    assert member_layers(model, layer) == [layer]
