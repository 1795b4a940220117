"""Slice-stack (MRNet-style) models: one batched pass, padding ignored, pooling, exam variants."""

from __future__ import annotations

import pytest
import torch

from dxkit.errors import ConfigError, InvalidScanError
from dxkit.models import cam_target_layer, create_model
from dxkit.models.slicestack import ExamNetworks, SliceStackNet

SMALL = {"widths": (8, 16), "depths": (1, 1), "strides": (1, 2)}


def _series(lengths: list[int], side: int = 16, chans: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(sum(lengths))
    return [torch.randn(chans, d, side, side, generator=gen) for d in lengths]


def _padded(series: list[torch.Tensor], fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    d_max = max(s.shape[1] for s in series)
    c, _, h, w = series[0].shape
    batch = torch.full((len(series), c, d_max, h, w), fill)
    for i, s in enumerate(series):
        batch[i, :, : s.shape[1]] = s
    return batch, torch.tensor([s.shape[1] for s in series])


def _loop_reference(net: SliceStackNet, series: list[torch.Tensor]) -> torch.Tensor:
    """What public re-implementations do: one slice at a time, then pool by hand."""
    logits = []
    for s in series:
        feats = torch.stack(
            [
                net.backbone.forward_features(s[:, k][None]).mean(dim=(2, 3))[0]
                for k in range(s.shape[1])
            ]
        )
        if net.pooling == "max":
            pooled = feats.max(dim=0).values
        elif net.pooling == "mean":
            pooled = feats.mean(dim=0)
        else:
            pooled = (net.attention(feats).squeeze(-1).softmax(0)[:, None] * feats).sum(0)
        logits.append(net.head(pooled))
    return torch.stack(logits)


@pytest.mark.parametrize(
    ("backbone", "pooling"),
    [
        ("smallresnet", "max"),
        ("smallresnet", "mean"),
        ("smallresnet", "attention"),
        ("resnet18", "max"),
    ],
)
def test_batched_pass_equals_a_slice_loop(backbone: str, pooling: str):
    torch.manual_seed(0)
    kwargs = SMALL if backbone == "smallresnet" else {}
    net = SliceStackNet(backbone, num_findings=3, pooling=pooling, **kwargs).eval()
    series = _series([5, 2, 7], side=32)
    with torch.no_grad():
        batched = net(series)
        reference = _loop_reference(net, series)
    assert batched.shape == (3, 3)
    torch.testing.assert_close(batched, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_padding_is_ignored(pooling: str):
    torch.manual_seed(0)
    net = SliceStackNet("smallresnet", num_findings=2, pooling=pooling, **SMALL).eval()
    series = _series([3, 6, 1])
    with torch.no_grad():
        from_list = net(series)
        for fill in (float("nan"), 1e6):  # anything leaking from padding would show
            batch, lengths = _padded(series, fill)
            torch.testing.assert_close(net(batch, lengths), from_list)


def test_all_slices_go_through_the_backbone_in_one_call():
    net = SliceStackNet("smallresnet", **SMALL).eval()
    calls: list[int] = []
    original = net.backbone.forward_features
    net.backbone.forward_features = lambda x: calls.append(x.shape[0]) or original(x)
    batch, lengths = _padded(_series([4, 9, 2]), fill=0.0)
    with torch.no_grad():
        net(batch, lengths)
    assert calls == [15]  # padded slots (3 × 9 − 15) never reach the backbone


@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_slice_contributions_add_up_to_the_logit(pooling: str):
    torch.manual_seed(0)
    net = SliceStackNet("smallresnet", num_findings=3, pooling=pooling, **SMALL).eval()
    batch, lengths = _padded(_series([4, 7]), fill=0.0)
    with torch.no_grad():
        scores = net.explain_slices(batch, lengths)
        logits = net(batch, lengths)
    torch.testing.assert_close(scores.logits, logits)
    torch.testing.assert_close(scores.contributions.sum(dim=1) + net.head.bias, logits)
    assert (scores.contributions[0, 4:] == 0).all()  # padding contributes nothing
    assert torch.isnan(scores.slice_logits[0, 4:]).all()
    assert (scores.decisive_slice()[0] < 4).all()
    if pooling == "attention":
        assert scores.weights is not None
        torch.testing.assert_close(scores.weights.sum(dim=1), torch.ones(2))
        assert (scores.weights[0, 4:] == 0).all()
    if pooling == "mean":  # linear head: the mean of per-slice logits is the series logit
        torch.testing.assert_close(scores.slice_logits[1].mean(dim=0), logits[1])


def test_decisive_slice_finds_the_slice_that_sets_the_max():
    torch.manual_seed(0)
    net = SliceStackNet("smallresnet", pooling="max", **SMALL).eval()
    with torch.no_grad():
        net.head.weight.fill_(1.0)  # every feature channel pushes the logit up
        series = [torch.zeros(1, 6, 16, 16)]
        series[0][0, 4, 5:9, 5:9] = 5.0  # one slice with a strong finding
        feats = net.slice_features(series[0].movedim(1, 0))
        scores = net.explain_slices(series)
    expected = int(feats.sum(dim=1).argmax())  # slice with the largest features overall
    assert expected == 4
    assert int(scores.decisive_slice()[0, 0]) == 4


def test_grey_input_for_a_three_channel_backbone_and_cam_layer():
    net = SliceStackNet("resnet18", in_chans=1, num_findings=2).eval()
    assert net.backbone.conv1.in_channels == 1
    layer = cam_target_layer(net)
    assert layer is net.backbone.layer4
    maps: list[torch.Tensor] = []
    layer.register_forward_hook(lambda _m, _i, out: maps.append(out))
    with torch.no_grad():
        net(_series([3, 2], side=32))
    assert maps[0].shape[:2] == (5, 512) and maps[0].ndim == 4  # one 2D map per slice


def test_alexnet_backbone_pools_256_features_like_mrnet():
    net = SliceStackNet("alexnet", in_chans=1, pooling="max").eval()
    assert net.num_features == 256
    assert sum(p.numel() for p in net.backbone.parameters()) < 3_000_000  # MLP classifier gone
    with torch.no_grad():
        assert net(_series([2, 3], side=64)).shape == (2, 1)


def test_gradients_flow_and_padding_gets_none():
    torch.manual_seed(0)
    net = SliceStackNet("smallresnet", pooling="attention", **SMALL).train()
    batch, lengths = _padded(_series([2, 5]), fill=0.0)
    batch.requires_grad_(True)
    net(batch, lengths).sum().backward()
    assert batch.grad is not None
    assert (batch.grad[0, :, 2:] == 0).all() and batch.grad[0, :, :2].abs().sum() > 0
    assert net.backbone.stem[0].weight.grad.abs().sum() > 0


def test_bad_inputs_are_named():
    net = SliceStackNet("smallresnet", **SMALL)
    with pytest.raises(InvalidScanError, match=r"shape \(2, 1, 16, 16\)"):
        net(torch.zeros(2, 1, 16, 16))
    with pytest.raises(InvalidScanError, match=r"lengths \[0, 2\]"):
        net(torch.zeros(2, 1, 2, 16, 16), torch.tensor([0, 2]))
    with pytest.raises(InvalidScanError, match="series 1 has shape"):
        net([torch.zeros(1, 2, 16, 16), torch.zeros(1, 0, 16, 16)])
    with pytest.raises(ConfigError, match="pooling 'median'"):
        SliceStackNet("smallresnet", pooling="median")  # type: ignore[arg-type]


@pytest.mark.parametrize(("variant", "n_nets"), [("multitask", 3), ("per_finding", 9)])
def test_exam_networks_give_plane_logits(variant: str, n_nets: int):
    torch.manual_seed(0)
    planes, findings = ["axial", "coronal", "sagittal"], ["abnormal", "acl", "meniscus"]
    exam_net = ExamNetworks("smallresnet", planes, findings, variant=variant, **SMALL).eval()
    assert len(exam_net.nets) == n_nets
    exam = {p: _padded(_series([3 + i, 2]), 0.0) for i, p in enumerate(planes)}
    with torch.no_grad():
        logits = exam_net(
            {p: b for p, (b, _) in exam.items()}, {p: n for p, (_, n) in exam.items()}
        )
    assert logits.shape == (2, 3, 3)
    batch, lengths = exam["coronal"]
    with torch.no_grad():
        if variant == "multitask":
            expected = exam_net.nets["coronal"](batch, lengths)[:, 2]
        else:
            expected = exam_net.nets["meniscus__coronal"](batch, lengths)[:, 0]
    torch.testing.assert_close(logits[:, 1, 2], expected)
    with pytest.raises(InvalidScanError, match=r"lacks planes \['sagittal'\]"):
        exam_net({p: b for p, (b, _) in exam.items() if p != "sagittal"})


@pytest.mark.parametrize("backbone", ["mobilenetv3_small_100", "alexnet"])
def test_every_parameter_is_used(backbone: str):
    # An unused parameter (e.g. MobileNetV3's post-pooling conv_head) breaks DDP training.
    torch.manual_seed(0)
    net = SliceStackNet(backbone, pooling="max")
    net(_series([2, 1], side=32)).sum().backward()
    assert [name for name, p in net.named_parameters() if p.grad is None] == []


def test_registered_as_a_volume_classifier_with_backbone_weights(tmp_path):
    torch.manual_seed(0)
    backbone = create_model("smallresnet", 1, 7, **SMALL)
    path = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), path)
    net = create_model(
        "slicestack", 1, 2, spatial_dims=3, pretrained=path, backbone="smallresnet", **SMALL
    ).eval()
    assert isinstance(net, SliceStackNet)
    torch.testing.assert_close(net.backbone.stem[0].weight, backbone.stem[0].weight)
    volumes = torch.randn(3, 1, 5, 16, 16)  # (N, C, D, H, W), the volume contract
    with torch.no_grad():
        torch.testing.assert_close(net(volumes), net(list(volumes)))
    assert net(volumes).shape == (3, 2)
