"""A torch Dataset over a ``LabelledSet``: read → preprocess → (augment) → tensor.

Scans are read and brought to the model's unit range and size once, then kept in memory
(``cache=True``, ``data.cache`` in the config), because re-decoding DICOM or PNG files every
epoch dominates CPU time on small images. With ``cache=False`` nothing is kept: items that
are ``SliceRef`` (a packed slice store) stream from the OS page cache, so memory stays flat
in dataset size. Normalisation and augmentation run per access, so they stay random.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dxkit.data.slice_store import SliceRef, open_store
from dxkit.data.source import LabelledSet
from dxkit.preprocess.spec import Preprocessing

log = logging.getLogger(__name__)
Augment = Callable[[torch.Tensor], torch.Tensor]


def read_item(item: np.ndarray | Path | str | SliceRef) -> tuple[np.ndarray, str]:
    """Return the raw array of one item and a name for error messages."""
    if isinstance(item, SliceRef):
        return open_store(item.store).read(item.shard, item.offset), f"{item.store}@{item.offset}"
    if isinstance(item, (str, Path)):
        from dxkit.io import read_scan

        return read_scan(Path(item)), str(item)
    return np.asarray(item), "in-memory scan"


class ScanDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Preprocessed scans with float32 label vectors, optionally augmented."""

    def __init__(
        self,
        labelled: LabelledSet,
        preprocessing: Preprocessing,
        augment: Augment | None = None,
        cache: bool = True,
    ) -> None:
        self.labelled = labelled
        self.preprocessing = preprocessing
        self.augment = augment
        self.labels = torch.as_tensor(np.asarray(labelled.labels, dtype=np.float32))
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.labelled)

    def unit(self, index: int) -> torch.Tensor:
        """The scan in unit range, with the model's channels and size, not yet normalised."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        array, name = read_item(self.labelled.items[index])
        p = self.preprocessing
        t = p.resize(p.adapt_channels(p.to_unit_range(array, name), name))
        if self._cache is not None:
            self._cache[index] = t
        return t

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocessing.normalize(self.unit(index))
        if self.augment is not None:
            x = self.augment(x)
        return x, self.labels[index]


def channel_stats(dataset: ScanDataset, max_items: int = 2000, seed: int = 0) -> tuple[list, list]:
    """Per-channel mean and std of the unit-range scans, from up to ``max_items`` of them."""
    n = len(dataset)
    rng = np.random.default_rng(seed)
    picks = rng.choice(n, size=min(n, max_items), replace=False) if n > max_items else range(n)
    total = total_sq = None
    count = 0
    for i in picks:
        t = dataset.unit(int(i)).double()
        flat = t.reshape(t.shape[0], -1)
        s, sq = flat.sum(1), (flat * flat).sum(1)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += flat.shape[1]
    if total is None or total_sq is None:
        return [0.0], [1.0]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return [float(m) for m in mean], [float(s) for s in std]
