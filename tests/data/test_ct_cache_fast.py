"""The faster cache writer: same .npy bytes as ``np.save``, the resize recorded in the
recipe (old caches keep Pillow), and real RSNA slices cached exactly as serving makes them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dxkit.data.ct_cache import CacheRecipe, prepare_ct_cache, save_array
from dxkit.data.sources.rsna import RSNA_LABELS, load_rsna
from dxkit.data.synthetic import generate_ct_dataset
from dxkit.errors import ConfigError
from dxkit.io import read_scan
from dxkit.preprocess.spec import CTRecipe


def test_save_array_writes_what_np_save_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for array in (rng.integers(0, 256, (3, 40, 40), dtype=np.uint8),
                  rng.integers(0, 256, (9, 16, 16), dtype=np.uint8)[:, ::2],  # not contiguous
                  rng.normal(size=(2, 5)).astype(np.float32)):  # fmt: skip
        save_array(array, tmp_path / "a.npy")
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        assert (tmp_path / "a.npy").read_bytes() == buf.getvalue()
        np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]  # no temporary left behind


def test_recipe_records_the_resize_and_old_caches_keep_pillow(tmp_path: Path) -> None:
    dcm = generate_ct_dataset(tmp_path / "dcm", 12, size=48, positive_fraction=0.5, seed=3)
    table = pd.read_csv(dcm)
    ids = [f.removesuffix(".dcm").replace("/", "__") for f in table.path]
    any_ = table.lesion.astype(int).to_numpy()
    labels = pd.DataFrame({n: 0 for n in RSNA_LABELS}, index=ids).assign(any=any_)
    prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", CacheRecipe.build(size=32),
                     labels=labels)  # fmt: skip
    info_path = tmp_path / "cache" / "prepare.json"
    info = json.loads(info_path.read_text())
    assert info["recipe"]["resize"] == "area"
    assert load_rsna(tmp_path / "cache").extra["ct_recipe"]["resize"] == "area"
    # A cache written before the field existed was resized with Pillow: models trained on
    # it replay Pillow, and resuming it with the new writer is refused (no mixed arrays).
    del info["recipe"]["resize"]
    info_path.write_text(json.dumps(info))
    raw = load_rsna(tmp_path / "cache").extra["ct_recipe"]
    assert raw["resize"] == "pillow" and CTRecipe.model_validate(raw).resize == "pillow"
    with pytest.raises(ConfigError, match="another --out folder"):
        prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", CacheRecipe.build(size=32),
                         labels=labels)  # fmt: skip
    assert CTRecipe(windows=[(40.0, 80.0)], size=32).resize == "pillow"  # old checkpoints


def test_real_rsna_cache_equals_serving_replay(rsna_dir: Path, tmp_path: Path) -> None:
    recipe = CacheRecipe.build(size=128)
    report = prepare_ct_cache(rsna_dir, tmp_path / "cache", recipe, chunk_size=50)
    assert report.files == 100 and report.failed == 0 and report.kept >= 85
    assert report.repaired == 0  # the 12-bit RSNA files here carry a correct intercept
    ct = CTRecipe(windows=list(recipe.windows), size=128, resize=recipe.resize)
    index = pd.read_parquet(tmp_path / "cache" / "index.parquet")
    kept = index[index["kept"]]
    for row in kept.iloc[::4].itertuples():
        stored = np.load(tmp_path / "cache" / row.array)
        assert stored.shape == (3, 128, 128) and stored.dtype == np.uint8
        np.testing.assert_array_equal(ct.prepare(read_scan(rsna_dir / row.file)), stored)
