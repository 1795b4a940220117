"""A folder's scans summarised from their headers: sizes, channels, modalities.

The folder source and ``dxkit init`` choose the model's input from the whole distribution,
never from one file (a 957 px first file once made a CPU run crawl at 957 px). The rules:

- **size**: the median largest side, capped at ``SIZE_CAP`` (256 for 2-D, 64 for volumes),
  unless ``preprocess.size`` is set;
- **channels**: 3 when any scan is colour (RGB, RGBA, palette, colour DICOM), else 1.
  Alpha is dropped; grey scans are repeated to 3 channels for a colour model
  (``Preprocessing.adapt_channels``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dxkit.errors import DataSourceError, DxkitError
from dxkit.io.headers import ScanHeader, read_header

log = logging.getLogger(__name__)
SIZE_CAP = {2: 256, 3: 64}
MAX_SURVEYED = 5000  # headers read per folder; larger folders are sampled (seeded)


@dataclass
class ScanSurvey:
    """Header facts over (a sample of) a folder's scans."""

    count: int
    surveyed: int
    spatial_dims: int
    sides: list[int]  # largest side per surveyed scan
    channels: Counter[int] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)
    modalities: Counter[str] = field(default_factory=Counter)
    shapes: Counter[str] = field(default_factory=Counter)
    patient_ids: Counter[bool] = field(default_factory=Counter)  # DICOM: has a PatientID
    patient_keys: list[str | None] | None = None  # per scan, in order; None when sampled

    def dicom_groups(self) -> np.ndarray | None:
        """Hashed DICOM PatientIDs of every scan, when every scan was read and has one."""
        keys = self.patient_keys
        if keys is None or any(k is None for k in keys):
            return None
        return np.asarray(keys, dtype=str)

    @property
    def in_chans(self) -> int:
        """3 when any scan is colour, else 1 (the module docstring's rule)."""
        return 3 if any(c >= 3 for c in self.channels) else 1

    @property
    def size_range(self) -> tuple[int, int]:
        return min(self.sides), max(self.sides)

    def default_size(self) -> int:
        """The median largest side, capped for the scan's dimensionality."""
        median = int(np.median(self.sides))
        return min(median, SIZE_CAP.get(self.spatial_dims, 256))

    def channel_rule(self) -> str:
        mixed = ", ".join(f"{m} ×{n}" for m, n in self.modes.most_common())
        if self.in_chans == 3:
            return f"3 channels (some scans are colour: {mixed}; grey repeated, alpha dropped)"
        return f"1 channel (every scan is grey: {mixed})"


def survey_scans(paths: Sequence[Path], seed: int = 0) -> ScanSurvey:
    """Read the headers of ``paths`` (a seeded sample of ``MAX_SURVEYED`` when longer)."""
    if not paths:
        raise DataSourceError("no scans to survey; the folder lists no files")
    picks: Sequence[int] = range(len(paths))
    if len(paths) > MAX_SURVEYED:
        rng = np.random.default_rng(seed)
        picks = sorted(rng.choice(len(paths), MAX_SURVEYED, replace=False).tolist())
    headers: list[ScanHeader] = []
    for i in picks:
        try:
            headers.append(read_header(paths[i]))
        except DxkitError as err:
            raise DataSourceError(f"{paths[i]}: could not read the scan's header: {err}") from err
    dims = Counter(len(h.spatial) for h in headers)
    spatial_dims = dims.most_common(1)[0][0]
    if len(dims) > 1:
        odd = next(h for h in headers if len(h.spatial) != spatial_dims)
        raise DataSourceError(
            f"{odd.path}: a {len(odd.spatial)}-D scan among {dims[spatial_dims]} "
            f"{spatial_dims}-D ones; keep 2-D images and volumes in separate folders"
        )
    return ScanSurvey(
        count=len(paths),
        surveyed=len(headers),
        spatial_dims=spatial_dims,
        sides=[h.largest_side for h in headers],
        channels=Counter(h.channels for h in headers),
        modes=Counter(h.mode for h in headers),
        modalities=Counter(h.modality for h in headers if h.modality),
        shapes=Counter("×".join(str(s) for s in h.spatial) for h in headers),
        patient_ids=Counter(h.has_patient_id for h in headers if h.has_patient_id is not None),
        patient_keys=[h.patient_key for h in headers] if len(headers) == len(paths) else None,
    )


def size_histogram(sides: Sequence[int], bins: Sequence[int] = (64, 128, 256, 512, 1024)) -> str:
    """``≤64: 3 · ≤128: 40 · >1024: 2``: how many scans fall in each largest-side bin."""
    counts: Counter[str] = Counter()
    for s in sides:
        label = next((f"≤{b}" for b in bins if s <= b), f">{bins[-1]}")
        counts[label] += 1
    order = [f"≤{b}" for b in bins] + [f">{bins[-1]}"]
    return " · ".join(f"{k} px: {counts[k]}" for k in order if counts[k])
