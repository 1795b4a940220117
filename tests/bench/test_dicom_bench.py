"""``dxkit bench dicom``'s measured variants run on the real RSNA files (short runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dxkit.bench.dicom import measure


@pytest.mark.parametrize("workers", [1, 2])
def test_dxkit_variant_prepares_every_copy(rsna_dir: Path, workers: int) -> None:
    result = measure("dxkit", rsna_dir, workers, seconds=0.2)
    # At least one full pass over the 100 files, all of them counted as processed.
    assert result["files"] >= 100 and result["files"] % 100 == 0
    assert result["seconds"] > 0 and result["rss_main"] > 0


def test_floor_variant_and_unknown_variant(rsna_dir: Path) -> None:
    result = measure("floor", rsna_dir, 1, seconds=0.05)
    assert result["files"] >= 100 and result["files"] % 100 == 0
    with pytest.raises(ValueError, match="unknown variant"):
        measure("nope", rsna_dir, 1, seconds=0.05)
