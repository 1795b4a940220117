"""A Dataset that streams uint8 slices from a ``SliceStore`` and becomes float per batch.

Items stay uint8 ``(C, H, W)`` from the disk read to the collated batch (a quarter of the
bytes float32 would move through worker queues); ``UnitBatch`` turns the whole batch into
normalised float32 in one vectorised step. Nothing is kept between accesses unless
``cache_items`` is set (then uint8 copies, not float tensors, and only in that process).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from dxkit.data.slice_store import SliceStore, read_manifest


class StoreDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Rows of a store's manifest: ``(uint8 slice, float32 labels)`` per index."""

    def __init__(
        self,
        store: Path | str | SliceStore,
        manifest: pd.DataFrame | None = None,
        label_columns: Sequence[str] = (),
        cache_items: bool = False,
    ) -> None:
        self.store = store if isinstance(store, SliceStore) else SliceStore(store)
        table = read_manifest(self.store.root) if manifest is None else manifest
        self.shards = table["shard"].to_numpy(np.int64)
        self.offsets = table["offset"].to_numpy(np.int64)
        cols = list(label_columns)
        labels = table[cols].to_numpy(np.float32, copy=True) if cols else np.zeros((len(table), 0))
        self.labels = torch.as_tensor(labels, dtype=torch.float32)
        self._cache: dict[int, np.ndarray] | None = {} if cache_items else None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = None if self._cache is None else self._cache.get(index)
        if array is None:
            array = self.store.read(int(self.shards[index]), int(self.offsets[index]))
            if self._cache is not None:
                self._cache[index] = array
        return torch.from_numpy(array.copy()), self.labels[index]


class UnitBatch:
    """Collate uint8 items into one float32 batch: ``(x / 255 − mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(
        self, items: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([i[0] for i in items]).to(torch.float32).div_(255.0)
        y = torch.stack([i[1] for i in items])
        return (x - self.mean) / self.std, y
