"""Dask preparation: identical to the single-process path, resumable per partition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from dxkit.data.ct_cache import CacheRecipe, _slice_chunk, prepare_ct_cache
from dxkit.data.dask_cluster import parse_scheduler
from dxkit.data.dask_prepare import run_chunks_dask
from dxkit.data.dicom_table import ResumableParts, build_dicom_table, chunked, list_files
from dxkit.data.pseudonyms import output_salt
from dxkit.data.synthetic import generate_ct_dataset, write_defect
from dxkit.errors import ConfigError

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """One 2-worker local cluster for the module, reached by address (the remote path)."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("dcm")
    generate_ct_dataset(src, 4, slices_per_patient=5, size=48, seed=3)
    write_defect(src / "broken.dcm", "truncated")
    return src


def _cache_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "slices").glob("*.npy"))}


def test_dask_cache_is_identical_to_single_process(dicoms, scheduler, tmp_path) -> None:
    recipe = CacheRecipe.build(size=32)
    one = prepare_ct_cache(dicoms, tmp_path / "one", recipe, chunk_size=4)
    many = prepare_ct_cache(dicoms, tmp_path / "dask", recipe, chunk_size=4, scheduler=scheduler)
    assert (many.kept, many.dropped, many.failed) == (one.kept, one.dropped, one.failed)
    assert one.failed == 1 and one.kept > 10
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one" / "index.parquet"),
        pd.read_parquet(tmp_path / "dask" / "index.parquet"),
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one" / "index.errors.parquet"),
        pd.read_parquet(tmp_path / "dask" / "index.errors.parquet"),
    )
    a, b = _cache_bytes(tmp_path / "one"), _cache_bytes(tmp_path / "dask")
    assert list(a) == list(b) and a == b


def test_dask_context_cache_is_identical(dicoms, scheduler, tmp_path) -> None:
    recipe = CacheRecipe.build(size=32, context=True)
    prepare_ct_cache(dicoms, tmp_path / "one", recipe, chunk_size=4)
    prepare_ct_cache(dicoms, tmp_path / "dask", recipe, chunk_size=4, scheduler=scheduler)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one" / "index.parquet"),
        pd.read_parquet(tmp_path / "dask" / "index.parquet"),
    )
    assert _cache_bytes(tmp_path / "one") == _cache_bytes(tmp_path / "dask")


def test_killed_dask_run_resumes_per_partition(dicoms, scheduler, tmp_path) -> None:
    recipe = CacheRecipe.build(size=32)
    out = tmp_path / "dask"
    (out / "slices").mkdir(parents=True)
    chunks = list(chunked(list_files(dicoms), 4))
    parts = ResumableParts(out / "index.parquet")
    salt = output_salt(False, None, out.parent)  # the key prepare_ct_cache uses below
    # As if killed after the first two partitions finished: their parts and slices stay.
    run_chunks_dask(_slice_chunk, chunks[:2], (dicoms, out, recipe, salt), parts, scheduler)
    assert len(list(parts.parts.glob("rows-dask-*.parquet"))) == 2
    report = prepare_ct_cache(dicoms, out, recipe, chunk_size=4, scheduler=scheduler)
    assert report.skipped == sum(len(c) for c in chunks[:2])
    assert report.processed == report.files - report.skipped
    prepare_ct_cache(dicoms, tmp_path / "one", recipe, chunk_size=4)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one" / "index.parquet"),
        pd.read_parquet(out / "index.parquet"),
    )
    assert _cache_bytes(tmp_path / "one") == _cache_bytes(out)


def test_dask_metadata_table_is_identical(dicoms, scheduler, tmp_path) -> None:
    one = build_dicom_table(dicoms, tmp_path / "one.parquet", pixel_stats=True, chunk_size=4)
    many = build_dicom_table(
        dicoms, tmp_path / "dask.parquet", pixel_stats=True, chunk_size=4, scheduler=scheduler
    )
    pd.testing.assert_frame_equal(one.table, many.table)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "dask.parquet")
    )
    pd.testing.assert_frame_equal(one.errors, many.errors)


def test_scheduler_values_are_checked() -> None:
    assert parse_scheduler("local") == ("local", None)
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.5:8786") == ("tcp://10.0.0.5:8786", None)
    with pytest.raises(ConfigError, match="local:N"):
        parse_scheduler("local:0")
    with pytest.raises(ConfigError, match="scheduler address"):
        parse_scheduler("10.0.0.5:8786")


def test_prepare_rsna_cli_on_a_local_cluster(dicoms, tmp_path) -> None:
    from typer.testing import CliRunner

    from dxkit.cli.prepare import app

    runner = CliRunner()
    for name, extra in (("one", []), ("dask", ["--scheduler", "local:1"])):
        args = ["rsna", str(dicoms), "--out", str(tmp_path / name), "--size", "32", *extra]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one" / "index.parquet"),
        pd.read_parquet(tmp_path / "dask" / "index.parquet"),
    )
    bad = runner.invoke(
        app, ["rsna", str(dicoms), "--out", str(tmp_path / "x"), "--scheduler", "x"]
    )
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)
