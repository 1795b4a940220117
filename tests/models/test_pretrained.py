"""Pretrained weights: local files (adapted first conv, skipped head) and the offline hub error."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision

from dxkit.errors import CheckpointError, MissingFileError
from dxkit.models import create_model
from dxkit.models import pretrained as weights
from dxkit.models.pretrained import adapt_first_conv, load_local_weights


def _grey(side: int = 32, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(1))


def test_local_file_round_trip_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    source = create_model("smallresnet", 3, 5).eval()
    path = tmp_path / "smallresnet.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_model("smallresnet", 3, 5, pretrained=path).eval()
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))


def test_rgb_weights_into_a_grey_model_equal_the_rgb_model_on_a_grey_copy(tmp_path, caplog):
    torch.manual_seed(0)
    rgb = create_model("resnet18", 3, 1000).eval()  # an "ImageNet" checkpoint we made
    path = tmp_path / "resnet18_rgb.pth"
    torch.save(rgb.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="dxkit.models.pretrained"):
        grey = create_model("resnet18", 1, 2, pretrained=path).eval()
    assert "adapted first convolution ['conv1.weight']" in caplog.text
    assert "fc.weight" in caplog.text and "fc.bias" in caplog.text  # head skipped, by key
    x = _grey()
    with torch.no_grad():
        torch.testing.assert_close(
            grey.forward_features(x),
            rgb.forward_features(x.repeat(1, 3, 1, 1)),
            atol=1e-4,
            rtol=1e-4,
        )
    assert not torch.equal(grey.fc.weight[:2], rgb.fc.weight[:2])  # fresh head, not a slice


def test_torchvision_alexnet_file_loads_into_a_grey_alexnet(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.alexnet(weights=None).eval()  # torchvision's own layout
    path = tmp_path / "alexnet.pth"
    torch.save(reference.state_dict(), path)
    grey = create_model("alexnet", 1, 3, pretrained=path).eval()
    x = _grey(side=64)
    with torch.no_grad():
        torch.testing.assert_close(
            grey.forward_features(x), reference.features(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4
        )
        assert grey(x).shape == (2, 3)


def test_wrapped_lightning_style_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    source = create_model("smallresnet", 1, 2, spatial_dims=3)
    path = tmp_path / "lightning.ckpt"
    wrapped = {f"model.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3}, path)
    loaded = create_model("smallresnet", 1, 2, spatial_dims=3)
    report = load_local_weights(loaded, path)
    assert not report.adapted and not report.skipped
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_adapt_first_conv_follows_the_sum_and_repeat_rule():
    w = torch.randn(4, 3, 3, 3, 3, generator=torch.Generator().manual_seed(0))  # a 3D kernel
    torch.testing.assert_close(adapt_first_conv(w, 1), w.sum(dim=1, keepdim=True))
    six = adapt_first_conv(w, 6)
    torch.testing.assert_close(six, torch.cat([w, w], dim=1) * 0.5)


def test_wrong_architecture_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(create_model("smallresnet", 1, 2).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"do not fit model SmallResNet.*shape mismatches"):
        create_model("smallresnet", 1, 2, widths=(16, 32, 64), pretrained=path)
    with pytest.raises(CheckpointError, match=r"absent from the file.*unknown keys"):
        create_model("mobilenetv3_small_100", 1, 2, pretrained=path)


class Payload:
    """Stands for arbitrary code a malicious pickle would run on load."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        create_model("smallresnet", 1, 2, pretrained=path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(MissingFileError, match=r"nowhere\.pth does not exist"):
        create_model("smallresnet", 1, 2, pretrained=tmp_path / "nowhere.pth")
    path = tmp_path / "list.pth"
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        create_model("smallresnet", 1, 2, pretrained=path)


def test_hub_weights_offline_say_to_pass_a_local_file(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(weights.timm, "create_model", offline)
    with pytest.raises(CheckpointError, match=r"timm hub.*no network.*pretrained='/path"):
        create_model("resnet18", 1, 2, pretrained=True)
    monkeypatch.setattr(torchvision.models.AlexNet_Weights, "get_state_dict", offline)
    with pytest.raises(CheckpointError, match=r"download.pytorch.org.*no network"):
        create_model("alexnet", 1, 2, pretrained=True)


def test_safetensors_file_from_the_hub_layout_loads(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_model("mobilenetv3_small_100", 3, 1000).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    grey = create_model("mobilenetv3_small_100", 1, 2, pretrained=path).eval()
    x = _grey()
    with torch.no_grad():
        expected = source.forward_features(x.repeat(1, 3, 1, 1))
        torch.testing.assert_close(grey.forward_features(x), expected, atol=1e-4, rtol=1e-4)
    (tmp_path / "broken.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        create_model("smallresnet", 1, 2, pretrained=tmp_path / "broken.safetensors")
