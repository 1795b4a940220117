"""The head-CT recipe in ``Preprocessing``: a raw HU slice becomes exactly the cached array.

The reference is always the cache itself (``prepare_ct_cache`` writing ``.npy`` files, read
back with NumPy), so the serving path cannot drift from what training read. Equality is
exact (tolerance 0): both paths run the same float32 crop, Pillow resize and uint8 rounding.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from dxkit.data.ct_cache import CacheRecipe, prepare_ct_cache, window_crop_resize
from dxkit.data.synthetic import generate_ct_dataset, head_phantom, head_volume, write_series
from dxkit.errors import InvalidScanError
from dxkit.io import read_scan
from dxkit.preprocess.crop import Box, head_box
from dxkit.preprocess.spec import CTRecipe, Preprocessing, ct_window_channels


def spec_for(recipe: CacheRecipe, size: int | None = None) -> Preprocessing:
    """The model-side preprocessing of a cache made with ``recipe`` (unit mean/std)."""
    ct = CTRecipe(
        windows=list(recipe.windows),
        window_names=list(recipe.window_names),
        size=recipe.size,
        context=recipe.context,
        resize=recipe.resize,
    )
    c = ct.channels
    return Preprocessing(in_chans=c, size=size or recipe.size, ct=ct, mean=[0.0] * c, std=[1.0] * c)


def cached(cache: Path) -> pd.DataFrame:
    index = pd.read_parquet(cache / "index.parquet")
    return index[index["kept"]].reset_index(drop=True)


def test_ct_window_channels_is_the_cache_writer() -> None:
    hu, _ = head_phantom(96, np.random.default_rng(1), lesion=True)
    recipe = CacheRecipe.build(["brain", "subdural", (600.0, 2800.0)], size=40)
    box = head_box(hu)
    ours = ct_window_channels(hu, box, list(recipe.windows), recipe.size)
    np.testing.assert_array_equal(ours, window_crop_resize(hu, box, recipe))
    # A box past the image edge is padded with air (-1024 HU) → 0 in the brain window.
    padded = ct_window_channels(hu, Box(-20, 76, -20, 76), [(40.0, 80.0)], 96)
    assert padded.dtype == np.uint8 and padded[0, :10, :10].max() == 0


def test_raw_dicom_reproduces_the_cached_slice(tmp_path: Path) -> None:
    # signed 16-bit and RSNA bad-intercept files: the repair happens in reading, both paths.
    generate_ct_dataset(tmp_path / "dcm", 3, size=72, positive_fraction=1.0, seed=4)
    generate_ct_dataset(tmp_path / "dcm" / "bad", 2, size=72, seed=5, encoding="bad_intercept")
    recipe = CacheRecipe.build(size=48)
    report = prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", recipe)
    assert report.kept == 5 and report.repaired == 2
    pre = spec_for(recipe)
    for row in cached(tmp_path / "cache").itertuples():
        stored = np.load(tmp_path / "cache" / row.array)
        raw = read_scan(tmp_path / "dcm" / row.file)
        assert raw.shape == (1, 72, 72) and raw.min() < -900  # Hounsfield units
        np.testing.assert_array_equal(pre.ct.prepare(raw, row.file), stored)  # type: ignore[union-attr]
        from_raw = pre.apply(raw, row.file)
        from_npy = pre.apply(read_scan(tmp_path / "cache" / row.array))  # (1, 3, 48, 48) float32
        assert torch.equal(from_raw, from_npy)
        assert torch.equal(from_npy, torch.from_numpy(stored.astype(np.float32)) / 255.0)


def test_model_size_differs_from_cache_size(tmp_path: Path) -> None:
    generate_ct_dataset(tmp_path / "dcm", 2, size=64, seed=6)
    recipe = CacheRecipe.build(["brain", "bone"], size=40)
    prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", recipe)
    pre = spec_for(recipe, size=24)  # the model trains at 24 px from the 40 px cache
    row = cached(tmp_path / "cache").iloc[0]
    from_raw = pre.apply(read_scan(tmp_path / "dcm" / row["file"]))
    stored = np.load(tmp_path / "cache" / row["array"])
    assert from_raw.shape == (2, 24, 24)
    assert torch.equal(from_raw, pre.apply(stored))  # uint8 straight from np.load


def test_context_replays_neighbours_and_single_slices(tmp_path: Path, caplog) -> None:
    hu, _ = head_volume(4, size=64, rng=np.random.default_rng(2), lesion=True)
    paths = write_series(tmp_path / "dcm" / "series", hu, patient_id="P1", seed=2)
    alone, _ = head_phantom(64, np.random.default_rng(9))
    single = write_series(tmp_path / "dcm" / "single", alone[None], patient_id="P2", seed=3)
    recipe = CacheRecipe.build(["brain", "subdural"], size=32, min_brain_share=0.0, context=True)
    prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", recipe)
    index = cached(tmp_path / "cache").set_index("file")

    def stored(path: Path) -> np.ndarray:
        rel = path.relative_to(tmp_path / "dcm").as_posix()
        return np.load(tmp_path / "cache" / index.loc[rel, "array"])

    pre = spec_for(recipe)
    ct = pre.ct
    assert ct is not None and pre.in_chans == 6
    for z, path in enumerate(paths):  # paths are in true slice order; ends repeat the edge
        around = [paths[max(z - 1, 0)], path, paths[min(z + 1, len(paths) - 1)]]
        neighbours = np.stack([read_scan(p)[0] for p in around])
        np.testing.assert_array_equal(ct.prepare(neighbours), stored(path))
    # One slice alone stands in for its neighbours, exactly as in a one-slice series.
    with caplog.at_level(logging.WARNING, logger="dxkit.preprocess.spec"):
        np.testing.assert_array_equal(ct.prepare(read_scan(single[0])), stored(single[0]))
    assert "2.5D" in caplog.text


def test_prepared_arrays_pass_through_and_bad_shapes_are_named() -> None:
    recipe = CacheRecipe.build(["brain", "subdural", "bone"], size=16)
    pre = spec_for(recipe)
    prepared = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    assert pre.ct.prepare(prepared) is prepared  # type: ignore[union-attr]
    with pytest.raises(InvalidScanError, match=r"slice\.npy.*\(3, 16, 16\)"):
        pre.apply(np.zeros((3, 20, 20), np.uint8), source="slice.npy")  # another cache's size
    with pytest.raises(InvalidScanError, match=r"x\.dcm.*one head-CT slice"):
        pre.apply(np.full((3, 30, 30), -1000.0, np.float32), source="x.dcm")  # no context here
    bad = np.full((1, 30, 30), -1000.0, np.float32)
    bad[0, 3, 3] = np.inf
    with pytest.raises(InvalidScanError, match="infinite"):
        pre.apply(bad)


def test_ct_recipe_round_trips_and_excludes_plain_windows() -> None:
    pre = spec_for(CacheRecipe.build(size=32, context=True))
    again = Preprocessing.model_validate(pre.model_dump(mode="json"))  # as in a checkpoint
    assert again == pre and again.ct is not None and again.ct.channels == 9
    with pytest.raises(ValidationError, match="ct recipe already holds the windows"):
        Preprocessing(in_chans=3, windows=[(40, 80)], ct=pre.ct)
