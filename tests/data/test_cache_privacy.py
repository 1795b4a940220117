"""The RSNA slice cache and its packed store hold keyed pseudonyms, never the PatientID."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from dxkit.cli.prepare import app
from dxkit.data.ct_cache import CacheRecipe, prepare_ct_cache
from dxkit.data.pseudonyms import SALT_FILE, hash_id
from dxkit.data.slice_store import pack_cache
from dxkit.data.synthetic import generate_ct_dataset
from dxkit.errors import ConfigError

runner = CliRunner()


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dcm")
    generate_ct_dataset(root, 4, slices_per_patient=3, size=32, seed=9)
    # The generator names each series folder after its patient; the cache keeps paths as
    # laid out (image ids join the labels), so give the folders neutral names, as RSNA does.
    for n, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        folder.rename(root / f"series{n}")
    (root / "labels.csv").unlink()
    return root


def _identity(root: Path) -> tuple[dict[str, str], set[str]]:
    """file → PatientID from the headers, and every identity value the files carry."""
    ids, values = {}, set()
    for path in sorted(root.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ids[path.relative_to(root).as_posix()] = str(ds.PatientID)
        values |= {str(ds.PatientID), str(ds.PatientName)}
        values |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)}
    return ids, values


def _text(path: Path) -> str:
    return pd.read_parquet(path).astype(str).to_csv()


def test_cache_and_store_hold_no_patient_id(dicoms, tmp_path) -> None:
    ids, identity = _identity(dicoms)
    assert len(set(ids.values())) == 4
    cache = tmp_path / "cache"
    prepare_ct_cache(dicoms, cache, CacheRecipe.build(size=24, min_brain_share=0.0))
    store = tmp_path / "store"
    pack_cache(cache, store, shard_size=4)
    written = [cache / "index.parquet", cache / "index.errors.parquet", store / "manifest.parquet"]
    for path in written:
        text = _text(path)
        assert not [v for v in identity if v in text], f"patient identity in {path}"
    for path in (cache / "prepare.json", store / "store.json"):
        assert not [v for v in identity if v in path.read_text()], f"patient identity in {path}"
    # The pseudonyms are the project key's HMAC of each file's PatientID: patients still group.
    key_file = tmp_path / SALT_FILE  # beside the cache, not inside it (nor in the store)
    key = key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o077 == 0
    index = pd.read_parquet(cache / "index.parquet")
    assert index["PatientID"].tolist() == [hash_id(ids[f], key) for f in index["file"]]
    manifest = pd.read_parquet(store / "manifest.parquet")
    assert manifest["patient"].tolist() == index["PatientID"].tolist()
    assert json.loads((cache / "prepare.json").read_text())["patient_ids"] == "pseudonyms"


def test_keep_phi_salt_file_and_no_mixing(dicoms, tmp_path) -> None:
    ids, _ = _identity(dicoms)
    key = tmp_path / "project.key"
    key.write_text("a-project-secret\n")
    # One project key: the cache and the metadata table give a patient the same pseudonym.
    args = ["--size", "24", "--salt-file", str(key)]
    assert (
        runner.invoke(app, ["rsna", str(dicoms), "-o", str(tmp_path / "c"), *args]).exit_code == 0
    )
    table_args = ["dicom", str(dicoms), "-o", str(tmp_path / "m.parquet"), "--salt-file", str(key)]
    assert runner.invoke(app, table_args).exit_code == 0
    index = pd.read_parquet(tmp_path / "c" / "index.parquet")
    table = pd.read_parquet(tmp_path / "m.parquet")
    assert set(index["PatientID"]) == set(table["PatientID"])
    assert set(index["PatientID"]) == {hash_id(v, "a-project-secret") for v in ids.values()}
    assert not (tmp_path / SALT_FILE).exists()  # the named key was used, none created
    clear = runner.invoke(app, ["rsna", str(dicoms), "-o", str(tmp_path / "phi"), "--keep-phi"])
    assert clear.exit_code == 0 and "patient identity" in clear.output
    phi = pd.read_parquet(tmp_path / "phi" / "index.parquet")
    assert phi["PatientID"].tolist() == [ids[f] for f in phi["file"]]
    # Resuming a clear cache without --keep-phi (or the reverse) would mix the two.
    with pytest.raises(ConfigError, match="clear"):
        prepare_ct_cache(dicoms, tmp_path / "phi", CacheRecipe.build())
