"""The slice store: packed bytes equal the prepared arrays; reads are exact and fork-safe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from dxkit.data.ct_cache import CacheRecipe, prepare_ct_cache
from dxkit.data.slice_store import SliceStore, SliceStoreWriter, pack_cache, read_manifest
from dxkit.data.stream import StoreDataset, UnitBatch
from dxkit.data.synthetic import generate_ct_dataset
from dxkit.errors import DataSourceError, MissingFileError


def test_pack_cache_round_trips_every_kept_slice(tmp_path) -> None:
    src = tmp_path / "dcm"
    generate_ct_dataset(src, 5, size=48, seed=2)
    prepare_ct_cache(src, tmp_path / "cache", CacheRecipe.build(size=32))
    manifest = pack_cache(tmp_path / "cache", tmp_path / "store", shard_size=2)
    index = pd.read_parquet(tmp_path / "cache" / "index.parquet")
    kept = index[index["kept"]].reset_index(drop=True)
    assert manifest["image_id"].tolist() == kept["image_id"].tolist()
    assert "patient" in manifest.columns and manifest["shard"].max() == (len(kept) - 1) // 2
    store = SliceStore(tmp_path / "store")
    for row in read_manifest(tmp_path / "store").itertuples():
        expected = np.load(tmp_path / "cache" / row.array)
        np.testing.assert_array_equal(store.read(row.shard, row.offset), expected)
    np.testing.assert_array_equal(
        store.memmap(0)[1], np.load(tmp_path / "cache" / kept["array"].iloc[1])
    )


def test_loader_workers_stream_exact_batches(tmp_path) -> None:
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (10, 2, 4, 4), dtype=np.uint8)
    writer = SliceStoreWriter(tmp_path, (2, 4, 4), shard_size=3)
    refs = writer.add_block(block[:4]) + writer.add_block(block[4:])
    writer.close()
    manifest = pd.DataFrame(
        {"shard": [r[0] for r in refs], "offset": [r[1] for r in refs], "y": np.arange(10) % 2}
    )
    dataset = StoreDataset(tmp_path, manifest, ["y"])
    mean, std = (0.5, 0.25), (0.5, 2.0)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=UnitBatch(mean, std))
    x = torch.cat([b[0] for b in loader])
    expected = (block / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert x.dtype == torch.float32


def test_bad_stores_name_the_file(tmp_path) -> None:
    with pytest.raises(MissingFileError, match=r"store\.json"):
        SliceStore(tmp_path)
    writer = SliceStoreWriter(tmp_path, (1, 2, 2))
    with pytest.raises(DataSourceError, match="shape"):
        writer.add_block(np.zeros((1, 1, 3, 3), np.uint8))
    writer.add_block(np.zeros((1, 1, 2, 2), np.uint8))
    writer.close()
    with pytest.raises(DataSourceError, match="short read"):
        SliceStore(tmp_path).read(0, 4)
