"""Stored pixel values → Hounsfield units (the DICOM modality LUT) and the RSNA intercept repair.

Pure NumPy on arrays and tag values, no file access, so the DICOM reader, the metadata
table and the RSNA preparation all share one definition of "Hounsfield units".

The repair: a known part of the RSNA 2019 head-CT collection is 12-bit unsigned
(PixelRepresentation 0, BitsStored 12) with a RescaleIntercept above −100, although the
stored values are Hounsfield units whose negatives wrapped modulo 4096 (air −1000 stored as
3096). Applying the header's LUT gives nonsense; adding 1000, wrapping values ≥ 4096 back
and using intercept −1000 recovers the true values.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

REPAIR_INTERCEPT = -1000.0
_WRAP = 4096  # 2**12: the stored range of the 12-bit files


class Hounsfield(NamedTuple):
    """HU pixels plus how they were obtained (kept for the prepare report)."""

    hu: np.ndarray
    repaired: bool
    slope: float
    intercept: float


def needs_intercept_repair(
    *,
    pixel_representation: int,
    bits_stored: int,
    intercept: float,
    modality: str | None = "CT",
) -> bool:
    """True for the RSNA bad-intercept defect: CT, 12-bit unsigned, intercept above −100."""
    return (
        (modality in (None, "", "CT"))
        and int(pixel_representation) == 0
        and int(bits_stored) == 12
        and float(intercept) > -100.0
    )


def repair_bad_intercept(stored: np.ndarray) -> np.ndarray:
    """Stored values of a bad-intercept file made valid for intercept −1000 (int32 copy)."""
    fixed = np.asarray(stored).astype(np.int32) + 1000
    fixed[fixed >= _WRAP] -= _WRAP
    return fixed


def _repaired_float32(stored: np.ndarray) -> np.ndarray:
    """``repair_bad_intercept(stored)`` as float32, computed in place on one float32 array.

    Stored values of up to 16 bits plus 1000 are integers below 2**24, so float32 holds
    them exactly and the result equals the int32 route (a test checks every 16-bit
    value) with fewer passes and no int32 temporaries; wider types take the int32 route.
    """
    stored = np.asarray(stored)
    if stored.dtype.kind not in "ui" or stored.dtype.itemsize > 2:
        return repair_bad_intercept(stored).astype(np.float32)
    hu = np.array(stored, dtype=np.float32)
    hu += np.float32(1000)
    np.subtract(hu, np.float32(_WRAP), out=hu, where=hu >= _WRAP)
    return hu


def invert_monochrome1(stored: np.ndarray, *, bits_stored: int, signed: bool) -> np.ndarray:
    """Flip MONOCHROME1 stored values (bright = low) so that high means dense, as in MONOCHROME2."""
    if signed:
        return -1 - np.asarray(stored).astype(np.int32)
    return (1 << int(bits_stored)) - 1 - np.asarray(stored).astype(np.int32)


def to_hounsfield(
    stored: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    pixel_representation: int = 1,
    bits_stored: int = 16,
    modality: str | None = "CT",
    repair: bool = True,
) -> Hounsfield:
    """Apply the modality LUT ``hu = stored * slope + intercept`` (float32), repairing if needed.

    ``repair=False`` applies the header as written even to defect files (for comparisons).
    """
    slope, intercept = float(slope), float(intercept)
    if repair and needs_intercept_repair(
        pixel_representation=pixel_representation,
        bits_stored=bits_stored,
        intercept=intercept,
        modality=modality,
    ):
        hu = _repaired_float32(stored)
        intercept, repaired = REPAIR_INTERCEPT, True
    else:
        hu = np.array(stored, dtype=np.float32)  # one new array, then in-place arithmetic
        repaired = False
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    return Hounsfield(hu, repaired, slope, intercept)
