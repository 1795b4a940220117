"""The head-CT slice cache: values, repair counts, cleaning, 2.5D, resuming after interruption."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dxkit.data.ct_cache import CacheRecipe, prepare_ct_cache, window_crop_resize
from dxkit.data.synthetic import generate_ct_dataset, head_phantom, write_ct_slice, write_defect
from dxkit.errors import ConfigError
from dxkit.preprocess.crop import Box


def test_window_crop_resize_matches_hand_values() -> None:
    hu = np.full((8, 8), 40.0, np.float32)  # brain-window centre everywhere
    hu[:, 4:] = 1000.0
    recipe = CacheRecipe.build(["brain", (520.0, 960.0)], size=8)  # 40 … 1000 HU
    out = window_crop_resize(hu, Box(0, 8, 0, 8), recipe)
    assert out.shape == (2, 8, 8) and out.dtype == np.uint8
    assert out[0, 0, 0] == 128 and out[0, 0, 7] == 255  # (40-0)/80*255 = 127.5 → 128
    assert out[1, 0, 0] == 0 and out[1, 0, 7] == 255


def test_prepare_counts_repairs_drops_and_failures(tmp_path) -> None:
    src = tmp_path / "dcm"
    generate_ct_dataset(src, 6, size=64, seed=1)
    generate_ct_dataset(src / "rsna_defect", 3, size=64, seed=2, encoding="bad_intercept")
    air = np.full((64, 64), -1000.0, np.float32)
    write_ct_slice(
        src / "empty.dcm",
        air,
        patient_id="E",
        study_uid="1.2",
        series_uid="1.2.3",
        instance_number=1,
        position_z=0.0,
    )
    write_defect(src / "broken.dcm", "truncated")
    report = prepare_ct_cache(src, tmp_path / "cache", CacheRecipe.build(size=32))
    assert (report.files, report.kept, report.dropped, report.failed) == (11, 9, 1, 1)
    assert report.repaired == 3
    index = pd.read_parquet(tmp_path / "cache" / "index.parquet")
    repaired = index[index["hu_repaired"]]
    assert sorted(repaired["file"].str.split("/").str[0].unique()) == ["rsna_defect"]
    assert not index.loc[index["image_id"] == "empty", "kept"].item()
    arrays = [np.load(tmp_path / "cache" / p) for p in index["array"].dropna()]
    assert all(a.shape == (3, 32, 32) and a.dtype == np.uint8 for a in arrays)
    # A repaired slice looks like a normal one: mostly air (0) around a bright skull.
    fixed = np.load(tmp_path / "cache" / repaired["array"].iloc[0])
    assert fixed[0, 0, 0] == 0 and fixed[2].max() > 100
    info = json.loads((tmp_path / "cache" / "prepare.json").read_text())
    assert info["repaired"] == 3 and info["errors"][0]["file"] == "broken.dcm"


def test_interrupted_run_resumes_without_loss(tmp_path, monkeypatch) -> None:
    import dxkit.data.ct_cache as cc

    generate_ct_dataset(tmp_path / "dcm", 10, size=32, seed=3)
    real = cc._slice_chunk
    calls = {"n": 0}

    def flaky(paths, root, out, recipe, salt):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(paths, root, out, recipe, salt)

    monkeypatch.setattr(cc, "_slice_chunk", flaky)
    recipe = CacheRecipe.build(size=16, min_brain_share=0.0)
    with pytest.raises(KeyboardInterrupt):
        prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", recipe, chunk_size=3)
    slices = tmp_path / "cache" / "slices"
    assert len(list(slices.glob("*.npy"))) == 6
    assert not list(slices.glob(".*tmp"))  # no half-written arrays
    first = {p.name: p.read_bytes() for p in slices.glob("*.npy")}
    monkeypatch.setattr(cc, "_slice_chunk", real)
    report = prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", recipe, chunk_size=3)
    assert report.skipped == 6 and report.processed == 4 and report.kept == 10
    assert all((slices / name).read_bytes() == data for name, data in first.items())
    assert prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", recipe).processed == 0


def test_context_stacks_sorted_neighbours(tmp_path) -> None:
    src = tmp_path / "dcm"
    depth = 4
    for z in range(depth):  # slice z has a uniform 'brain' of 10*z HU; names reversed
        hu, _ = head_phantom(32, np.random.default_rng(z), noise_hu=0.0)
        hu[(hu > -100) & (hu < 100)] = 10.0 * z  # brain and ventricles
        write_ct_slice(
            src / f"s{depth - z}.dcm",
            hu,
            patient_id="P",
            study_uid="1.2",
            series_uid="1.2.3",
            instance_number=depth - z,
            position_z=2.5 * z,
        )
    recipe = CacheRecipe.build(["brain"], size=32, min_brain_share=0.0, context=True)
    report = prepare_ct_cache(src, tmp_path / "cache", recipe)
    assert report.channels == 3 and report.kept == depth
    index = pd.read_parquet(tmp_path / "cache" / "index.parquet").sort_values("slice_position")
    centre = (16, 16)
    for z, rel in enumerate(index["array"]):
        stack = np.load(tmp_path / "cache" / rel)
        brain = [int(stack[k][centre]) for k in range(3)]
        expected = [min(max(n, 0), depth - 1) for n in (z - 1, z, z + 1)]
        # brain window 0..80 HU: 10*z HU → round(10*z / 80 * 255)
        assert brain == [round(10 * n / 80 * 255 + 1e-9) for n in expected], (z, brain)


def test_resuming_with_another_recipe_is_refused(tmp_path) -> None:
    generate_ct_dataset(tmp_path / "dcm", 2, size=32, seed=0)
    prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", CacheRecipe.build(size=16))
    with pytest.raises(ConfigError, match="another --out"):
        prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", CacheRecipe.build(size=24))


def test_context_series_with_inconsistent_sizes_is_reported(tmp_path) -> None:
    src = tmp_path / "dcm"
    for z, size in enumerate([32, 32, 40]):
        hu, _ = head_phantom(size, np.random.default_rng(z))
        write_ct_slice(
            src / f"s{z}.dcm",
            hu,
            patient_id="P",
            study_uid="1.2",
            series_uid="1.2.3",
            instance_number=z + 1,
            position_z=2.5 * z,
        )
    recipe = CacheRecipe.build(["brain"], size=16, min_brain_share=0.0, context=True)
    report = prepare_ct_cache(src, tmp_path / "cache", recipe)
    assert report.failed == 3 and report.kept == 0
    assert all("inconsistent slice sizes" in e["reason"] for e in report.errors)


def test_real_rsna_files_cache(rsna_dir, tmp_path) -> None:
    report = prepare_ct_cache(rsna_dir, tmp_path / "cache", CacheRecipe.build(size=64))
    assert report.files == 100 and report.failed == 0 and report.repaired == 0
    assert report.kept + report.dropped == 100 and report.kept >= 85
    index = pd.read_parquet(tmp_path / "cache" / "index.parquet")
    dropped = index[~index["kept"]]
    assert (dropped["brain_share"] < 0.01).all() and (
        index[index["kept"]]["brain_share"] >= 0.01
    ).all()
    sample = np.load(tmp_path / "cache" / index["array"].dropna().iloc[0])
    assert sample.shape == (3, 64, 64) and sample.dtype == np.uint8
    assert sample[0].max() == 255 and sample[0].min() == 0  # skull white, air black
