"""2-D (and 3-D) classifier heatmaps against models whose maps are known by hand.

``RegionNet``: feature channel k is the (non-negative) scan inside region k, global average
pooling and an identity head give logit k = mean of the scan over region k. Grad-CAM of
output k is then exactly ``scan × mask_k / n_pixels`` (weights = mean gradient = 1/n), so
the target index, the raw (unscaled) units and the geometry can all be checked exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dxkit.errors import ConfigError, InvalidScanError
from dxkit.explain.cam import METHODS, CamExplainer
from dxkit.explain.geometry import map_to_scan
from dxkit.models.registry import create_model
from dxkit.preprocess.spec import CTRecipe, Preprocessing

SIDE = 24


class MaskedFeatures(nn.Module):
    """``relu(conv1x1(x)) * masks``: one channel per region; the conv (weight 1, no bias)
    gives the output a gradient path."""

    def __init__(self, masks: torch.Tensor) -> None:
        super().__init__()
        dims = masks.ndim - 1
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(1, masks.shape[0], 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.register_buffer("masks", masks[None].float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) * self.masks


class RegionNet(nn.Module):
    def __init__(self, masks: torch.Tensor) -> None:
        super().__init__()
        self.features = MaskedFeatures(masks)
        self.dxkit_cam_layer = "features"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(2).mean(dim=2)  # identity head on pooled features


def regions(dims: int = 2, side: int = SIDE) -> torch.Tensor:
    """Three masks: left third, middle third, right third (along the last axis)."""
    masks = torch.zeros((3,) + (side,) * dims)
    for k in range(3):
        masks[k, ..., k * side // 3 : (k + 1) * side // 3] = 1
    return masks


def scan(dims: int = 2, side: int = SIDE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(10, 250, (side,) * dims).astype(np.float32)


def explainer(
    task: str, method: str = "gradcam", dims: int = 2, side: int = SIDE, **pre: object
) -> CamExplainer:
    names = ["a", "b", "c"] if task != "binary" else ["a"]
    masks = regions(dims, side)[: len(names)]
    return CamExplainer(
        RegionNet(masks), Preprocessing(spatial_dims=dims, **pre), names, task, method
    )


@pytest.mark.parametrize("task", ["binary", "multilabel", "multiclass"])
def test_gradcam_is_the_hand_computed_map_of_the_asked_finding(task: str) -> None:
    ex = explainer(task)
    image = scan()
    masks = regions().numpy()
    for k, name in enumerate(ex.label_names):
        heat = ex.explain(image, finding=name)
        expected = image / 255.0 * masks[k] / image.size  # uint8 scale, then CAM = A_k / n
        assert heat.finding == name and heat.finding_index == k
        np.testing.assert_allclose(heat.raw, expected, rtol=1e-5, atol=1e-9)
        assert heat.peak[1] // (SIDE // 3) == k  # the hottest pixel is in region k
        logits = ex.logits(ex.preprocessing.apply(image)[None])[0]
        assert heat.logit == pytest.approx(float(logits[k]), rel=1e-6)


@pytest.mark.parametrize("method", ["gradcam++", "scorecam", "occlusion"])
def test_every_method_points_at_the_asked_region(method: str) -> None:
    ex = explainer("multilabel", method)
    image = scan()
    for k, name in enumerate(ex.label_names):
        heat = ex.explain(image, finding=name)
        column_mass = heat.raw.sum(axis=0)
        thirds = [column_mass[j * 8 : (j + 1) * 8].sum() for j in range(3)]
        assert int(np.argmax(thirds)) == k, (method, name, thirds)


def test_maps_are_raw_not_stretched_to_0_1() -> None:
    ex = explainer("multilabel")
    image = scan()
    weak, strong = ex.explain(image, "b"), ex.explain(image * 0.5, "b")
    np.testing.assert_allclose(strong.raw, weak.raw * 0.5, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(strong.normalised, weak.normalised, atol=1e-5)
    assert weak.normalised.max() == pytest.approx(1.0) and weak.raw.max() < 0.01


def test_maps_come_back_at_the_scans_resolution() -> None:
    ex = explainer("multilabel", size=SIDE)
    image = np.kron(scan(), np.ones((2, 3), dtype=np.float32))  # 48 x 72 scan, model sees 24²
    heat = ex.explain(image, "c")
    assert heat.model_map.shape == (SIDE, SIDE) and heat.raw.shape == (48, 72)
    assert heat.peak[1] >= 48  # region "c" is the right third of the scan
    assert heat.raw[:, :44].max() < 0.05 * heat.raw.max()


def test_volume_maps_are_trilinear_at_the_volumes_resolution() -> None:
    ex = explainer("multilabel", dims=3, side=12, size=12)
    volume = np.random.default_rng(1).uniform(10, 250, (12, 12, 12)).astype(np.float32)
    big = np.kron(volume, np.ones((2, 2, 2), dtype=np.float32))  # (24, 24, 24)
    heat = ex.explain(big, "a")
    assert heat.raw.shape == (24, 24, 24) and heat.model_map.shape == (12, 12, 12)
    assert heat.peak[2] < 8  # region "a": the first third along the last axis


def test_batch_equals_one_by_one() -> None:
    ex = explainer("multiclass")
    images = [scan(seed=s) for s in range(3)]
    batch = ex.explain_batch(images, "b")
    for image, heat in zip(images, batch, strict=True):
        np.testing.assert_allclose(heat.raw, ex.explain(image, "b").raw, rtol=1e-5)


def test_default_finding_is_the_most_probable() -> None:
    ex = explainer("multiclass")
    image = scan()
    image[:, 16:] = 250.0  # region "c" brightest → largest logit
    assert ex.explain(image).finding == "c"


def test_registered_models_bring_their_cam_layer() -> None:
    pre = Preprocessing(in_chans=1, size=32)
    for name, layer in (("resnet18", "layer4"), ("smallresnet", "stages.2")):
        model = create_model(name, 1, 2)
        assert CamExplainer(model, pre, ["x", "y"], "multiclass").layer == layer


def test_unknown_finding_lists_the_valid_ones() -> None:
    ex = explainer("multilabel")
    with pytest.raises(ConfigError, match=r"'pneumothorax'.*valid findings: 'a', 'b', 'c'"):
        ex.explain(scan(), "pneumothorax")
    assert ex.explain(scan(), "B").finding == "b"  # case does not matter


def test_unknown_or_unusable_layer_lists_the_valid_ones() -> None:
    model = create_model("smallresnet", 1, 1, widths=[8, 16], depths=[1, 1], strides=[1, 2])
    pre = Preprocessing(in_chans=1)
    with pytest.raises(ConfigError, match=r"'layer9'.*stages\.1.*default: 'stages\.1'"):
        CamExplainer(model, pre, ["x"], "binary", layer="layer9")
    flat = CamExplainer(model, pre, ["x"], "binary", layer="head")  # a linear layer
    with pytest.raises(ConfigError, match=r"'head'.*spatial feature map"):
        flat.explain(scan())
    named = CamExplainer(model, pre, ["x"], "binary", layer="stages.0")
    assert named.explain(scan()).layer == "stages.0"


def test_method_and_layer_combinations_are_checked() -> None:
    model = RegionNet(regions())
    pre = Preprocessing()
    with pytest.raises(ConfigError, match="gradcam, gradcam\\+\\+, scorecam, occlusion"):
        CamExplainer(model, pre, ["a", "b", "c"], "multilabel", method="lime")
    with pytest.raises(ConfigError, match="does not apply to occlusion"):
        CamExplainer(model, pre, ["a", "b", "c"], "multilabel", "occlusion", layer="features")
    assert set(METHODS) >= {"gradcam", "gradcam++", "scorecam", "occlusion"}


def test_scan_that_does_not_fit_says_what_the_model_expects() -> None:
    ex = explainer("multilabel", size=SIDE)
    with pytest.raises(InvalidScanError, match=r"expects a 2-D scan .* 0–255 .* 24 px"):
        ex.explain(np.zeros((1, 5, SIDE, SIDE), np.float32), source="vol.npy")
    with pytest.raises(InvalidScanError, match=r"vol\.npy: has 2 channels but the model expects 1"):
        ex.explain(np.zeros((2, SIDE, SIDE), np.float32), source="vol.npy")


def test_head_ct_maps_land_in_the_head_box() -> None:
    """A head-CT recipe crops to the head: the map must go back into that box, zero outside."""
    from dxkit.data.synthetic import head_phantom
    from dxkit.preprocess.crop import head_box

    hu, _ = head_phantom(64, np.random.default_rng(0))
    pre = Preprocessing(ct=CTRecipe(windows=[(40.0, 80.0)], size=32), in_chans=1)
    mapped = map_to_scan(pre, hu, np.ones((32, 32), np.float32))
    top, bottom, left, right = head_box(hu)
    inside = np.zeros_like(mapped, dtype=bool)
    inside[max(top, 0) : bottom, max(left, 0) : right] = True
    assert mapped.shape == hu.shape
    np.testing.assert_allclose(mapped[inside], 1.0, atol=1e-6)
    assert not mapped[~inside].any() and (~inside).any()
