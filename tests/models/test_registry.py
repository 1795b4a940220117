"""The model zoo: every registered network, its logits, its Grad-CAM layer and its errors."""

from __future__ import annotations

import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from dxkit.errors import ConfigError
from dxkit.models import cam_target_layer, create_model, list_models
from dxkit.models.registry import REGISTRY

REQUIRED_2D = {
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "efficientnet_b0",
    "mobilenetv3_small_100",
    "alexnet",
    "smallresnet",
}


def _input(name: str, dims: int, in_chans: int) -> torch.Tensor:
    side = max(REGISTRY[(name, dims)].min_size, 28 if dims == 2 else 8)
    return torch.randn(1, in_chans, *([side] * dims), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize(("name", "dims"), sorted(REGISTRY))
def test_every_model_gives_logits_and_a_spatial_cam_layer(name: str, dims: int, in_chans: int):
    torch.manual_seed(0)
    model = create_model(name, in_chans, num_classes=3, spatial_dims=dims).eval()
    layer = cam_target_layer(model)
    assert any(layer is m for m in model.modules())
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        logits = model(_input(name, dims, in_chans))
    handle.remove()
    assert logits.shape == (1, 3)
    assert torch.isfinite(logits).all()
    # (N, C, *spatial) feature map; a slice stack's maps are 2D, one per slice
    assert len(seen) == 1 and seen[0].ndim == (4 if name == "slicestack" else 2 + dims)
    assert model.dxkit_name == name and model.dxkit_spatial_dims == dims


def test_required_names_are_registered():
    assert set(list_models(2)) >= REQUIRED_2D
    assert {"resnet18", "densenet121", "smallresnet"} <= set(list_models(3))
    assert "alexnet" not in list_models(3)
    assert set(list_models()) == set(list_models(2)) | set(list_models(3))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet9000'.*smallresnet"):
        create_model("resnet9000", 1, 2)


def test_bad_spatial_dims_are_config_errors():
    with pytest.raises(ConfigError, match=r"'alexnet' has no 3D version.*\[2\]"):
        create_model("alexnet", 1, 2, spatial_dims=3)
    with pytest.raises(ConfigError, match="spatial_dims=4"):
        create_model("resnet18", 1, 2, spatial_dims=4)


def test_bad_counts_and_kwargs_are_config_errors():
    with pytest.raises(ConfigError, match="in_chans=0"):
        create_model("smallresnet", 0, 2)
    with pytest.raises(ConfigError, match="num_classes=0"):
        create_model("smallresnet", 1, 0)
    with pytest.raises(ConfigError, match="no_such_arg"):
        create_model("smallresnet", 1, 2, no_such_arg=3)


def test_hub_weights_requested_for_a_model_without_any():
    with pytest.raises(ConfigError, match="no published weights"):
        create_model("smallresnet", 1, 2, pretrained=True)


def test_cam_layer_is_rebuilt_with_the_model_from_a_checkpoint(tmp_path):
    model = create_model("resnet18", 1, 2)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    rebuilt = create_model("resnet18", 1, 2)
    rebuilt.load_state_dict(torch.load(path, weights_only=True))
    assert rebuilt.dxkit_cam_layer == "layer4"
    assert cam_target_layer(rebuilt) is rebuilt.layer4


def test_cam_layer_fallback_and_error_for_foreign_models():
    foreign = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.Flatten())
    assert cam_target_layer(foreign) is foreign[2]
    with pytest.raises(ConfigError, match="no convolution"):
        cam_target_layer(nn.Linear(3, 2))
    foreign.dxkit_cam_layer = "nowhere"
    with pytest.raises(ConfigError, match="'nowhere' names no layer"):
        cam_target_layer(foreign)


@pytest.mark.parametrize("dims", [2, 3])
def test_grad_cam_runs_on_the_chosen_layer(dims: int):
    torch.manual_seed(0)
    model = create_model("smallresnet", 1, 2, spatial_dims=dims).eval()
    x = torch.randn(2, 1, *([16] * dims))
    cam = GradCAM(model=model, target_layers=[cam_target_layer(model)])
    heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * 2)
    assert heat.shape == (2, *([16] * dims))
    assert heat.max() > 0  # a map, not all zeros


def test_min_size_is_the_real_limit_for_densenet():
    # Documented so the engine can ask for a resize: 28 px MedMNIST images are too small.
    model = create_model("densenet121", 1, 2).eval()
    assert REGISTRY[("densenet121", 2)].min_size == 29
    with torch.no_grad(), pytest.raises(RuntimeError):
        model(torch.zeros(1, 1, 28, 28))
