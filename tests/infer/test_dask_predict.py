"""Batch inference on Dask gives the single-process Predictor's numbers, row for row."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dxkit.cli import main
from dxkit.infer.dask_predict import _worker_predictor, predict_dask, resolve_inputs
from dxkit.infer.predictor import Predictor
from dxkit.train.config import config_from_dict
from dxkit.train.fit import fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from test_engine import toy_config, toy_npz

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("toy")
    result = fit(config_from_dict(toy_config(root, epochs=1)), progress=False)
    images = np.load(toy_npz(root / "scans.npz", n=70, seed=4))["train_images"]
    scans = root / "scans"
    scans.mkdir()
    files = []
    for i, image in enumerate(images):
        files.append(scans / f"s{i:03d}.npy")
        np.save(files[-1], image.astype(np.float32))
    return result.best_checkpoint, files


def test_dask_predictions_equal_the_predictor(trained, scheduler, tmp_path) -> None:
    ckpt, files = trained
    reference = Predictor.from_checkpoint(ckpt).predict_files(files, batch_size=16)
    table = predict_dask(
        ckpt, files, tmp_path / "p.csv", scheduler, batch_size=16, partition_size=16
    )
    assert table["file"].tolist() == [str(f) for f in files]
    names = list(reference[0].probabilities)
    expected = np.array([[p.probabilities[n] for n in names] for p in reference])
    np.testing.assert_array_equal(table[names].to_numpy(), expected)  # exact, not close
    parts = sorted((tmp_path / "p.csv.parts").glob("part-*.parquet"))
    assert len(parts) == 5  # 70 files in partitions of 16
    # The model was loaded at most once in each worker, however many partitions it ran.
    with distributed.Client(scheduler) as client:
        loads = client.run(lambda: _worker_predictor.cache_info().misses)
    assert 0 < sum(loads.values()) <= 2 and max(loads.values()) == 1


def test_cli_dask_csv_is_byte_identical(trained, scheduler, tmp_path) -> None:
    ckpt, files = trained
    with pytest.raises(SystemExit) as one:
        main(["predict", str(ckpt), *map(str, files), "--out", str(tmp_path / "one.csv")])
    assert one.value.code == 0
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": [str(f) for f in files]}).to_csv(manifest, index=False)
    with pytest.raises(SystemExit) as many:
        main(["predict", str(ckpt), str(manifest), "--out", str(tmp_path / "dask.csv"),
              "--scheduler", scheduler])  # fmt: skip
    assert many.value.code == 0
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_inputs_from_a_folder_and_errors(trained, tmp_path) -> None:
    _, files = trained
    assert resolve_inputs([files[0].parent]) == sorted(files)
    with pytest.raises(SystemExit) as bad:
        main(["predict", str(trained[0]), str(files[0]), "--scheduler", "local:1"])
    assert bad.value.code == 2  # --out is required
