"""Window presets, [0, 1] mapping, multi-window stacks and the file's own windows."""

from __future__ import annotations

import numpy as np
import pytest

from dxkit.errors import ConfigError
from dxkit.preprocess.window import (
    WINDOWS,
    WindowTransform,
    apply_window,
    file_windows,
    parse_windows,
    resolve_window,
    stack_windows,
    window_uint8,
)


def test_presets() -> None:
    assert WINDOWS["brain"] == (40, 80) and WINDOWS["subdural"] == (80, 200)
    assert WINDOWS["bone"] == (600, 2800) and WINDOWS["lung"] == (-600, 1500)
    assert WINDOWS["soft_tissue"] == (40, 400) and WINDOWS["mediastinum"] == (50, 350)
    assert "stroke" in WINDOWS
    with pytest.raises(ConfigError, match="unknown window 'brian'"):
        resolve_window("brian")
    with pytest.raises(ConfigError, match="positive"):
        resolve_window((40, 0))


def test_apply_window_hand_values() -> None:
    hu = np.array([-1000, 0, 20, 40, 60, 80, 2000], dtype=np.float32)
    np.testing.assert_allclose(apply_window(hu, 40, 80), [0, 0, 0.25, 0.5, 0.75, 1, 1])
    assert apply_window(hu, 40, 80).dtype == np.float32
    np.testing.assert_array_equal(window_uint8(hu, 40, 80), [0, 0, 64, 128, 191, 255, 255])


def test_stack_windows_shapes_and_order() -> None:
    hu = np.random.default_rng(0).uniform(-1000, 1500, (1, 8, 9)).astype(np.float32)
    out = stack_windows(hu, ["brain", "subdural", (600, 2800)])
    assert out.shape == (3, 8, 9) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1], apply_window(hu[0], 80, 200))
    np.testing.assert_array_equal(out[2], apply_window(hu[0], 600, 2800))
    assert stack_windows(hu[0], ["bone"]).shape == (1, 8, 9)
    vol = np.zeros((4, 8, 9), np.float32)
    assert stack_windows(vol, ["brain", "bone"]).shape == (2, 4, 8, 9)
    np.testing.assert_array_equal(WindowTransform(["brain", "bone"])(hu), out[[0, 2]])


def test_file_windows_single_and_multi() -> None:
    assert file_windows({"WindowCenter": 30.0, "WindowWidth": 80.0}) == [(30.0, 80.0)]
    assert file_windows({"WindowCenter": [36.0, 36.0], "WindowWidth": [80.0, 80.0]}) == [
        (36.0, 80.0),
        (36.0, 80.0),
    ]
    assert file_windows({}) == []


def test_parse_windows() -> None:
    assert parse_windows("brain, subdural,40:80") == ["brain", "subdural", (40.0, 80.0)]
    with pytest.raises(ConfigError):
        parse_windows("brain,foo")
