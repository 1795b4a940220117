"""Head crop, slice cleaning by brain share, and 2.5D neighbour stacking."""

from __future__ import annotations

import numpy as np
import pytest

from dxkit.data.synthetic import head_phantom
from dxkit.preprocess.clean import brain_share, keep_slice, select_slices
from dxkit.preprocess.context import neighbour_indices, stack_context
from dxkit.preprocess.crop import Box, crop, crop_to_head, head_box, resize


def _off_centre_head() -> np.ndarray:
    hu, _ = head_phantom(64, np.random.default_rng(0), scale=0.5, noise_hu=0.0)
    canvas = np.full((128, 128), -1000.0, np.float32)
    canvas[10:74, 50:114] = hu  # the head sits top-right, not in the centre
    canvas[120:123, 20:110] = 300.0  # a 'table' strip below, separate from the head
    return canvas


def test_head_box_follows_the_head_not_the_centre() -> None:
    hu = _off_centre_head()
    tissue = np.argwhere(hu[:100] > -300)
    box = head_box(hu, margin=0.0, square=False)
    assert box.top <= tissue[:, 0].min() and box.bottom >= tissue[:, 0].max() + 1
    assert box.left <= tissue[:, 1].min() and box.right >= tissue[:, 1].max() + 1
    assert box.bottom <= 100  # the table is not part of the head
    assert box.bottom - box.top <= np.ptp(tissue[:, 0]) + 1 + 10  # sampling every 4th pixel
    sq = head_box(hu)
    assert sq.bottom - sq.top == sq.right - sq.left


def test_crop_pads_outside_with_air_and_resize() -> None:
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = crop(img, Box(-1, 3, 2, 6))
    assert out.shape == (4, 4)
    np.testing.assert_array_equal(out[0], -1024.0)
    np.testing.assert_array_equal(out[1:, :2], img[:3, 2:])
    np.testing.assert_array_equal(out[1:, 2:], -1024.0)
    small = resize(np.full((2, 64, 48), 7, np.uint8), 32)
    assert small.shape == (2, 32, 32) and small.dtype == np.uint8 and (small == 7).all()
    assert crop_to_head(_off_centre_head(), size=32).shape == (32, 32)


def test_brain_share_and_selection() -> None:
    hu = np.array([[-1000, 0, 40], [80, 81, 1000]], dtype=np.float32)
    assert brain_share(hu) == pytest.approx(3 / 6)
    assert keep_slice(hu, 0.5) and not keep_slice(hu, 0.51)
    air = np.full((4, 4), -1000.0)
    assert select_slices([hu, air], 0.01).tolist() == [True, False]


def test_context_neighbours_in_order() -> None:
    np.testing.assert_array_equal(neighbour_indices(3), [[0, 0, 1], [0, 1, 2], [1, 2, 2]])
    vol = np.arange(4)[:, None, None, None] * np.ones((4, 2, 3, 3))  # slice s, 2 channels
    vol[:, 1] += 100
    out = stack_context(vol)
    assert out.shape == (4, 6, 3, 3)
    np.testing.assert_array_equal(out[2, :, 0, 0], [1, 101, 2, 102, 3, 103])
    np.testing.assert_array_equal(out[0, :, 0, 0], [0, 100, 0, 100, 1, 101])
    assert stack_context(np.zeros((5, 3, 3))).shape == (5, 3, 3, 3)
