"""Slice-stack exam maps on one common scale, deciding slices, and segmenter probability maps.

The plane networks here are real ``SliceStackNet``/``ExamNetworks`` objects whose backbone is
replaced by an intensity read-out (feature = the slice's mean intensity, head weight w_f per
finding), so each slice's logit is ``w_f × mean(slice)`` and its Grad-CAM map is exactly
``w_f × slice / n_pixels``: evidence ratios between slices and planes are known by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dxkit.data.exam import PLANES, Exam, IntensityNormalization, Series
from dxkit.errors import ConfigError
from dxkit.explain.volume import explain_exam, explain_series, peak_slice, segmentation_map
from dxkit.infer.exam_model import ExamModel, FusionInputs
from dxkit.models.fusion import PlaneFusion
from dxkit.models.slicestack import ExamNetworks, SliceStackNet
from dxkit.preprocess.spec import Preprocessing

FINDINGS = ["abnormal", "acl", "meniscus"]
WEIGHTS = [1.0, 0.5, 2.0]  # head weight per finding
SIDE = 16


class IntensityBackbone(nn.Module):
    """``forward_features`` = relu(1×1 conv with weight 1): the slice itself, one channel
    (the CAM layer is the ReLU's output, so the gradient is w/n on every pixel)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU())
        nn.init.ones_(self.features[0].weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def read_out(net: SliceStackNet, weights: list[float]) -> SliceStackNet:
    net.backbone = IntensityBackbone()
    net.num_features = 1
    net.head = nn.Linear(1, len(weights))
    with torch.no_grad():
        net.head.weight.copy_(torch.tensor(weights)[:, None])
        net.head.bias.zero_()
    net.dxkit_cam_layer = "backbone.features"
    return net.eval()


def exam_model(variant: str = "multitask", size: int | None = None) -> ExamModel:
    kwargs = {"widths": [8], "depths": [1], "strides": [1]}
    networks = ExamNetworks("smallresnet", PLANES, FINDINGS, variant=variant, **kwargs)
    for key, net in networks.nets.items():
        finding = key.split("__")[0]
        weights = WEIGHTS if variant == "multitask" else [WEIGHTS[FINDINGS.index(finding)]]
        read_out(net, weights)
    rng = np.random.default_rng(0)
    fusion = PlaneFusion(PLANES, FINDINGS).fit(rng.random((30, 3, 3)), rng.random((30, 3)) > 0.5)
    return ExamModel(
        networks=networks.eval(),
        fusion=fusion,
        fusion_inputs=FusionInputs("probability"),
        normalization=IntensityNormalization(scale=255.0, mean=0.0, std=1.0),
        size=size,
        thresholds=[0.5, 0.5, 0.5],
    )


def blob_series(depth: int, blobs: dict[int, float]) -> np.ndarray:
    """uint8 ``(depth, SIDE, SIDE)``: zero, with a 4×4 square of the given value on slices."""
    vol = np.zeros((depth, SIDE, SIDE), np.uint8)
    for s, value in blobs.items():
        vol[s, 6:10, 5:9] = value
    return vol


def knee_exam() -> Exam:
    volumes = {
        "axial": blob_series(4, {0: 120, 2: 200}),
        "coronal": blob_series(3, {1: 100}),
        "sagittal": blob_series(5, {4: 50}),
    }
    return Exam("e1", {p: Series(p, data=v, exam_id="e1") for p, v in volumes.items()})


def test_every_slice_of_every_plane_shares_one_scale() -> None:
    maps = explain_exam(exam_model(), knee_exam(), "abnormal")
    n = SIDE * SIDE
    assert maps.vmax == pytest.approx(WEIGHTS[0] * 200 / 255 / n, rel=1e-5)  # hand-computed
    peaks = {p: s.raw.reshape(len(s.raw), -1).max(axis=1) for p, s in maps.series.items()}
    shown = {p: s.display(maps.vmax).reshape(len(s.raw), -1).max(axis=1)
             for p, s in maps.series.items()}  # fmt: skip
    # The ratio of evidence survives: 120 vs 200 in one plane, 100 and 50 in the others.
    np.testing.assert_allclose(shown["axial"], [0.6, 0, 1.0, 0], atol=1e-5)
    np.testing.assert_allclose(shown["coronal"], [0, 0.5, 0], atol=1e-5)
    np.testing.assert_allclose(shown["sagittal"], [0, 0, 0, 0, 0.25], atol=1e-5)
    assert peaks["axial"][0] / peaks["axial"][2] == pytest.approx(120 / 200, rel=1e-5)
    for plane, series in maps.series.items():
        assert series.raw.shape == knee_exam().volume(plane).shape


def test_deciding_slice_is_the_one_that_carries_the_max_pooled_score() -> None:
    maps = explain_exam(exam_model(), knee_exam(), "acl")
    assert {p: s.deciding_slice for p, s in maps.series.items()} == {
        "axial": 2, "coronal": 1, "sagittal": 4,
    }  # fmt: skip
    axial = maps.series["axial"]
    # One feature channel, max pooling: the deciding slice carries the whole logit.
    assert axial.contributions[2] == pytest.approx(axial.logit, rel=1e-5)
    assert axial.contributions[0] == 0.0
    assert axial.slice_logits[0] == pytest.approx(WEIGHTS[1] * 120 / 255 * 16 / (SIDE * SIDE))
    assert maps.deciding_plane in PLANES and set(maps.fusion_terms) == set(PLANES)
    assert 0.0 < maps.probability < 1.0


@pytest.mark.parametrize("variant", ["multitask", "per_finding"])
def test_the_asked_findings_network_output_is_explained(variant: str) -> None:
    model = exam_model(variant)
    one = explain_exam(model, knee_exam(), "abnormal")
    two = explain_exam(model, knee_exam(), "meniscus")
    assert two.finding == "meniscus" and two.finding_index == 2
    assert two.vmax / one.vmax == pytest.approx(WEIGHTS[2] / WEIGHTS[0], rel=1e-5)


def test_default_finding_and_unknown_finding() -> None:
    model = exam_model()
    fused = model.predict([knee_exam()])[1][0]
    assert explain_exam(model, knee_exam()).finding == FINDINGS[int(np.argmax(fused))]
    with pytest.raises(ConfigError, match=r"'effusion'.*'abnormal', 'acl', 'meniscus'"):
        explain_exam(model, knee_exam(), "effusion")


def test_maps_return_to_each_series_resolution_when_the_network_sees_less() -> None:
    maps = explain_exam(exam_model(size=8), knee_exam(), "acl")
    axial = maps.series["axial"]
    assert axial.model_map.shape == (4, 8, 8) and axial.raw.shape == (4, SIDE, SIDE)
    row, col = np.unravel_index(int(np.argmax(axial.raw[2])), (SIDE, SIDE))
    assert 5 <= row <= 10 and 4 <= col <= 9  # on the blob


def test_series_maps_reject_methods_without_a_layer_and_unknown_layers() -> None:
    net = read_out(SliceStackNet("smallresnet", widths=[8], depths=[1], strides=[1]), [1.0])
    series = torch.zeros((1, 3, SIDE, SIDE))
    with pytest.raises(ConfigError, match="support gradcam, gradcam\\+\\+"):
        explain_series(net, series, 0, (SIDE, SIDE), method="occlusion")
    with pytest.raises(ConfigError, match=r"'backbone\.nope' does not exist"):
        explain_series(net, series, 0, (SIDE, SIDE), layer="backbone.nope")
    result = explain_series(net, series, 0, (SIDE, SIDE), method="gradcam++")
    assert result.raw.shape == (3, SIDE, SIDE) and not result.raw.any()  # no evidence anywhere


def test_peak_slice() -> None:
    raw = np.zeros((5, 4, 4), np.float32)
    raw[3, 1, 2] = 2.0
    raw[1, 0, 0] = 1.0
    assert peak_slice(raw) == 3


def test_segmenter_map_is_its_probability_on_the_scans_grid() -> None:
    seg = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        seg.weight.fill_(4.0)
        seg.bias.copy_(torch.tensor([-2.0, 0.0]))
    image = np.random.default_rng(0).uniform(0, 255, (SIDE, SIDE)).astype(np.float32)
    probs = segmentation_map(seg, Preprocessing(), image, class_index=0)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-(4 * image / 255 - 2))), rtol=1e-5)
    big = np.kron(image, np.ones((2, 2), np.float32))
    assert segmentation_map(seg, Preprocessing(size=SIDE), big).shape == (32, 32)
    with pytest.raises(ConfigError, match="no class 5"):
        segmentation_map(seg, Preprocessing(), image, class_index=5)


def test_unet_segmenter_probability_map() -> None:
    from dxkit.models.segment import create_segmenter

    torch.manual_seed(0)
    unet = create_segmenter("unet", "resnet18", in_chans=1, num_classes=1).eval()
    image = np.random.default_rng(0).uniform(0, 255, (40, 48)).astype(np.float32)
    probs = segmentation_map(unet, Preprocessing(size=32), image)
    with torch.no_grad():
        direct = torch.sigmoid(unet(Preprocessing(size=32).apply(image)[None]))[0, 0].numpy()
    assert probs.shape == (40, 48) and probs.min() >= 0.0 and probs.max() <= 1.0
    assert probs.mean() == pytest.approx(float(direct.mean()), abs=0.02)
