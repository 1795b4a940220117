"""Preprocessing: the single read-scan → model-input path saved with each model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dxkit.errors import InvalidScanError
from dxkit.preprocess.spec import Preprocessing


def test_uint8_scaling_resize_and_normalisation() -> None:
    p = Preprocessing(in_chans=1, size=4, mean=[0.5], std=[0.25])
    image = np.full((8, 8), 255, dtype=np.uint8)
    out = p.apply(image)
    assert out.shape == (1, 4, 4)
    assert torch.allclose(out, torch.full((1, 4, 4), 2.0))  # (1.0 - 0.5) / 0.25


def test_windows_become_channels_with_hand_values() -> None:
    p = Preprocessing(
        in_chans=2, input_kind="hounsfield", windows=[(40, 80), (600, 2800)],
        mean=[0, 0], std=[1, 1],
    )  # fmt: skip
    hu = np.array([[0.0, 40.0], [80.0, 2000.0]], dtype=np.float32)
    out = p.apply(hu)
    # brain 40/80 spans 0..80 HU; bone 600/2800 spans -800..2000 HU
    expected_brain = torch.tensor([[0.0, 0.5], [1.0, 1.0]])
    expected_bone = torch.tensor([[800 / 2800, 840 / 2800], [880 / 2800, 1.0]])
    assert torch.allclose(out[0], expected_brain)
    assert torch.allclose(out[1], expected_bone)


def test_channel_adaptation() -> None:
    rgb = np.stack([np.zeros((4, 4)), np.full((4, 4), 255.0), np.full((4, 4), 255.0)])
    grey = Preprocessing(in_chans=1).apply(rgb)
    assert grey.shape == (1, 4, 4) and torch.allclose(grey, torch.full_like(grey, 2 / 3))
    three = Preprocessing(in_chans=3, mean=[0, 0, 0], std=[1, 1, 1]).apply(np.ones((4, 4)) * 255)
    assert three.shape == (3, 4, 4)
    with pytest.raises(InvalidScanError, match="channels"):
        Preprocessing(in_chans=3).apply(np.zeros((2, 4, 4)))


def test_volume_resize_and_rank_errors() -> None:
    p = Preprocessing(spatial_dims=3, size=8)
    assert p.apply(np.zeros((4, 16, 16), dtype=np.uint8)).shape == (1, 8, 8, 8)
    with pytest.raises(InvalidScanError, match="3-D scan"):
        p.apply(np.zeros((16, 16)))


def test_non_finite_input_is_rejected_with_source_name() -> None:
    bad = np.zeros((4, 4), dtype=np.float32)
    bad[1, 1] = np.nan
    with pytest.raises(InvalidScanError, match=r"x\.npy.*NaN"):
        Preprocessing(input_kind="float").apply(bad, source="x.npy")


def test_windows_need_one_channel() -> None:
    p = Preprocessing(in_chans=1, input_kind="hounsfield", windows=[(40, 80)])
    with pytest.raises(InvalidScanError, match="single-channel"):
        p.apply(np.zeros((3, 4, 4)))
