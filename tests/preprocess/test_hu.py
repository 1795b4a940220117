"""Modality LUT and the RSNA bad-intercept repair on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from dxkit.preprocess.hu import (
    invert_monochrome1,
    needs_intercept_repair,
    repair_bad_intercept,
    to_hounsfield,
)


def test_linear_lut() -> None:
    stored = np.array([[0, 1024, 1064]], dtype=np.int16)
    out = to_hounsfield(stored, slope=1.0, intercept=-1024.0)
    np.testing.assert_array_equal(out.hu, [[-1024, 0, 40]])
    assert out.hu.dtype == np.float32 and not out.repaired
    half = to_hounsfield(np.array([10, 20], np.uint16), slope=0.5, intercept=-3.0)
    np.testing.assert_array_equal(half.hu, [2.0, 7.0])


@pytest.mark.parametrize(
    ("repr_", "bits", "intercept", "modality", "expected"),
    [
        (0, 12, 1.0, "CT", True),
        (0, 12, 0.0, None, True),
        (0, 12, -1024.0, "CT", False),  # the normal 12-bit RSNA file
        (1, 16, 1.0, "CT", False),
        (0, 16, 1.0, "CT", False),
        (0, 12, 1.0, "MR", False),
    ],
)
def test_detection(repr_, bits, intercept, modality, expected) -> None:
    assert (
        needs_intercept_repair(
            pixel_representation=repr_, bits_stored=bits, intercept=intercept, modality=modality
        )
        is expected
    )


def test_repair_exact_values() -> None:
    # True HU -1000 (air), -1, 0, 35, 70 (blood), 1000 (bone), 3095, stored with negatives
    # wrapped modulo 4096 as in the defective files.
    true_hu = np.array([-1000, -1, 0, 35, 70, 1000, 3095])
    stored = np.mod(true_hu, 4096).astype(np.uint16)
    np.testing.assert_array_equal(stored, [3096, 4095, 0, 35, 70, 1000, 3095])
    np.testing.assert_array_equal(
        repair_bad_intercept(stored), [0, 999, 1000, 1035, 1070, 2000, 4095]
    )
    out = to_hounsfield(stored, slope=1, intercept=1, pixel_representation=0, bits_stored=12)
    assert out.repaired and out.intercept == -1000.0
    np.testing.assert_array_equal(out.hu, true_hu)
    plain = to_hounsfield(
        stored, slope=1, intercept=1, pixel_representation=0, bits_stored=12, repair=False
    )
    assert not plain.repaired and plain.hu[0] == 3097.0


def test_monochrome1_inversion() -> None:
    np.testing.assert_array_equal(
        invert_monochrome1(np.array([0, 4095, 1000], np.uint16), bits_stored=12, signed=False),
        [4095, 0, 3095],
    )
    np.testing.assert_array_equal(
        invert_monochrome1(np.array([-32768, 0, 32767], np.int16), bits_stored=16, signed=True),
        [32767, -1, -32768],
    )
