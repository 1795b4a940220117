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


def test_inputs_are_found_by_the_predict_walker(tmp_path) -> None:
    """Folders are walked as ``dxkit predict`` walks them: DICOM without a suffix found,
    hidden files and sidecars skipped; manifests and missing paths handled."""
    import shutil

    from dxkit.data.synthetic import generate_ct_dataset
    from dxkit.errors import MissingFileError

    dcm = tmp_path / "dcm"
    generate_ct_dataset(dcm, 1, size=16, seed=2)
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    np.save(scans / "a.npy", np.zeros((8, 8), np.float32))
    np.save(scans / "sub" / "b.npy", np.zeros((8, 8), np.float32))
    np.save(scans / ".hidden.npy", np.zeros((8, 8), np.float32))
    (scans / "notes.txt").write_text("not a scan")
    shutil.copy(next(dcm.rglob("*.dcm")), scans / "IM0001")  # PACS exports: no suffix
    expected = [scans / "IM0001", scans / "a.npy", scans / "sub" / "b.npy"]
    assert resolve_inputs([scans]) == expected
    manifest = tmp_path / "list.csv"
    pd.DataFrame({"path": ["scans/a.npy"]}).to_csv(manifest, index=False)
    assert resolve_inputs([manifest, scans / "a.npy"]) == [scans / "a.npy"] * 2
    with pytest.raises(MissingFileError, match="no such file"):
        resolve_inputs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="no scan files"):
        resolve_inputs([tmp_path / "empty"])
