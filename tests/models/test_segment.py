"""Segmenter factory (shapes, local pretrained weights, errors) and the BCE + Dice + focal loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision

from dxkit.errors import CheckpointError, ConfigError, MissingFileError
from dxkit.models.segment import create_segmenter
from dxkit.train.seg_losses import SegmentationLoss


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_segmenter()


def test_default_unet_shapes(unet: torch.nn.Module) -> None:
    assert isinstance(unet, smp.Unet)
    assert unet.encoder.conv1.in_channels == 1
    n_params = sum(p.numel() for p in unet.parameters())
    assert 14_000_000 < n_params < 15_000_000  # U-Net on ResNet-18: ~14.3 M
    unet.eval()
    with torch.no_grad():
        out = unet(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 1, 64, 64) and out.dtype == torch.float32


def test_other_channels_classes_and_archs() -> None:
    model = create_segmenter("fpn", in_chans=3, num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_bad_names() -> None:
    with pytest.raises(ConfigError, match="unknown segmenter 'vnet'"):
        create_segmenter("vnet")
    with pytest.raises(ConfigError, match="no_such_net"):
        create_segmenter(encoder="no_such_net")
    with pytest.raises(ConfigError, match="in_chans"):
        create_segmenter(in_chans=0)


def test_local_torchvision_weights_adapted_to_one_channel(tmp_path: Path) -> None:
    torch.manual_seed(1)
    backbone = torchvision.models.resnet18(weights=None)  # stands in for resnet18-f37072fd.pth
    path = tmp_path / "resnet18.pth"
    torch.save(backbone.state_dict(), path)
    model = create_segmenter(in_chans=1, pretrained=path)
    encoder = model.encoder
    # A 3-channel first conv becomes one channel by summing (timm's adapt_input_conv).
    torch.testing.assert_close(encoder.conv1.weight, backbone.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(encoder.layer4[1].conv2.weight, backbone.layer4[1].conv2.weight)
    torch.testing.assert_close(encoder.bn1.running_var, backbone.bn1.running_var)
    # Same file, three channels: loaded unchanged. A string path works too.
    model3 = create_segmenter(in_chans=3, pretrained=str(path))
    torch.testing.assert_close(model3.encoder.conv1.weight, backbone.conv1.weight)


def test_whole_segmenter_state_dict_reloads_encoder(tmp_path: Path, unet: torch.nn.Module) -> None:
    path = tmp_path / "seg.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in unet.state_dict().items()}}, path)
    torch.manual_seed(5)
    model = create_segmenter(pretrained=path)
    for key, value in unet.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)


def test_bad_weight_files(tmp_path: Path) -> None:
    wrong = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "stem.weight": torch.zeros(2)}, wrong)
    with pytest.raises(CheckpointError, match="does not fit encoder"):
        create_segmenter(pretrained=wrong)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read encoder weights"):
        create_segmenter(pretrained=junk)
    with pytest.raises(MissingFileError, match="no such encoder weights file"):
        create_segmenter(pretrained=tmp_path / "absent.pth")


def test_named_pretrained_without_network_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def offline(repo_id: str, **kwargs: object) -> str:
        calls.append(repo_id)
        raise OSError("no network")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", offline)
    with pytest.raises(CheckpointError, match="pass a local weights file"):
        create_segmenter(pretrained=True)
    assert calls  # the real download path was taken (and stopped here)


# --- loss ---------------------------------------------------------------------------------------

LOGITS = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]], [[[-2.0, -2.0], [-2.0, -2.0]]]])
TARGET = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])


def hand_terms() -> dict[str, float]:
    """BCE, per-image soft Dice (smooth 1) and focal (α .25, γ 2) computed element by element."""
    p = [[1 / (1 + math.exp(-x)) for x in row] for row in LOGITS.reshape(2, 4).tolist()]
    t = TARGET.reshape(2, 4).tolist()
    bce = focal = 0.0
    dice_losses = []
    for pi, ti in zip(p, t, strict=True):
        for pv, tv in zip(pi, ti, strict=True):
            pt = pv if tv else 1 - pv
            bce -= math.log(pt)
            focal -= (0.25 if tv else 0.75) * (1 - pt) ** 2 * math.log(pt)
        inter = sum(a * b for a, b in zip(pi, ti, strict=True))
        dice_losses.append(1 - (2 * inter + 1) / (sum(pi) + sum(ti) + 1))
    return {"bce": bce / 8, "dice": sum(dice_losses) / 2, "focal": focal / 8}


def test_loss_terms_match_hand_computation() -> None:
    expected = hand_terms()
    loss = SegmentationLoss(bce_weight=0.5, dice_weight=2.0, focal_weight=3.0, dice_batch=False)
    parts = loss.components(LOGITS, TARGET)
    for name in ("bce", "dice", "focal"):
        assert parts[name].item() == pytest.approx(expected[name], rel=1e-5), name
    total = 0.5 * expected["bce"] + 2.0 * expected["dice"] + 3.0 * expected["focal"]
    assert loss(LOGITS, TARGET).item() == pytest.approx(total, rel=1e-5)
    assert set(SegmentationLoss().components(LOGITS, TARGET)) == {"bce", "dice", "total"}
    # Batch Dice pools both images' pixels into one score.
    p, t = LOGITS.sigmoid(), TARGET
    pooled = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    batch = SegmentationLoss(bce_weight=0.0).components(LOGITS, TARGET)["dice"]
    assert batch.item() == pytest.approx(pooled.item(), rel=1e-5)


def test_dice_empty_rule_and_gradients() -> None:
    loss = SegmentationLoss(bce_weight=0.0, dice_weight=1.0, dice_batch=False)
    empty = torch.zeros(1, 1, 8, 8)
    assert loss(torch.full((1, 1, 8, 8), -20.0), empty).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(torch.full((1, 1, 8, 8), 20.0), empty).item() > 0.95  # false positives cost
    logits = LOGITS.clone().requires_grad_(True)
    SegmentationLoss(focal_weight=1.0)(logits, TARGET).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad[0, 0, 0, 0] < 0  # raising a true pixel's logit lowers the loss


def test_loss_rejects_bad_config_and_shapes() -> None:
    with pytest.raises(ConfigError, match="not all zero"):
        SegmentationLoss(0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="≥ 0"):
        SegmentationLoss(bce_weight=-1.0)
    with pytest.raises(ValueError, match="same"):
        SegmentationLoss()(LOGITS, TARGET[:, :, :1])


def test_foreground_prior_starts_every_pixel_near_the_prior() -> None:
    import torch

    from dxkit.models.segment import create_segmenter as make

    torch.manual_seed(0)
    model = make(foreground_prior=0.02).eval()
    with torch.no_grad():
        prob = model(torch.rand(1, 1, 64, 64)).sigmoid()
    # Bias log(0.02/0.98); the convolution's own output adds spread around it.
    assert 0.002 < float(prob.median()) < 0.2
    with pytest.raises(ConfigError, match="foreground_prior"):
        make(foreground_prior=1.5)
