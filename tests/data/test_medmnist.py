"""MedMNIST source: real files, generated files in every layout, bad files, and downloads.

Downloads are tested against a local http.server on 127.0.0.1, never the real network.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dxkit.data.sources import medmnist
from dxkit.data.sources.medmnist import INFO, load_medmnist, md5sum
from dxkit.errors import ConfigError, DataSourceError, MissingFileError

# From ../shared/data/README.md (split sizes) and the files' label columns.
REAL = {
    "breastmnist": {"n": (546, 78, 156), "positives": (399, 57, 114), "shape": (1, 28, 28)},
    "pneumoniamnist": {"n": (4690, 524, 624), "positives": (3477, 389, 390), "shape": (1, 28, 28)},
    "adrenalmnist3d": {"n": (1188, 98, 298), "positives": (259, 22, 69), "shape": (1, 28, 28, 28)},
}


def write_npz(path: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    arrays = {f"{s}_images": images[s] for s in images} | {f"{s}_labels": labels[s] for s in labels}
    np.savez_compressed(path, **arrays)
    return path


def small_set(
    rng: np.random.Generator, shape: tuple[int, ...], classes: int, columns: int = 1
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    n = {"train": 12, "val": 5, "test": 6}
    images = {s: rng.integers(0, 256, (k, *shape), dtype=np.uint8) for s, k in n.items()}
    labels = {s: rng.integers(0, classes, (k, columns), dtype=np.uint8) for s, k in n.items()}
    return images, labels


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files(medmnist_dir: Path, name: str) -> None:
    data = load_medmnist(name, root=medmnist_dir)
    want = REAL[name]
    assert data.task == "binary" and data.num_outputs == 1
    assert data.spatial_dims == len(want["shape"]) - 1 and data.in_chans == 1
    assert data.native_size == 28 and data.input_kind == "uint8"
    for split, n, pos in zip(("train", "val", "test"), want["n"], want["positives"], strict=True):
        s = data.splits[split]
        assert s.items.shape == (n, *want["shape"]) and s.items.dtype == np.uint8
        assert s.labels.shape == (n, 1) and s.labels.dtype == np.float32
        assert int(s.labels.sum()) == pos and set(np.unique(s.labels)) == {0.0, 1.0}


def test_official_md5_of_real_files(medmnist_dir: Path) -> None:
    # The README's md5s of the official files match the table downloads are checked against.
    assert md5sum(medmnist_dir / "adrenalmnist3d.npz") == "bbd3c5a5576322bc4cdfea780653b1ce"
    assert md5sum(medmnist_dir / "adrenalmnist3d_64.npz") == "17721accfe9fb005146a47d33bc54b2f"
    assert INFO["adrenalmnist3d"].md5 == {
        28: "bbd3c5a5576322bc4cdfea780653b1ce",
        64: "17721accfe9fb005146a47d33bc54b2f",
    }


@pytest.mark.slow  # decompresses 311 MB
def test_real_64px(medmnist_dir: Path) -> None:
    data = load_medmnist("adrenalmnist3d", root=medmnist_dir, size=64)
    assert data.native_size == 64 and data.splits["val"].items.shape == (98, 1, 64, 64, 64)


def test_real_images_match_file(medmnist_dir: Path) -> None:
    data = load_medmnist("breastmnist", path=medmnist_dir / "breastmnist.npz")
    with np.load(medmnist_dir / "breastmnist.npz") as raw:
        np.testing.assert_array_equal(data.splits["test"].items[:, 0], raw["test_images"])
        np.testing.assert_array_equal(data.splits["test"].labels, raw["test_labels"])


def test_info_table_is_consistent() -> None:
    for name in ("breastmnist", "pneumoniamnist", "adrenalmnist3d", "organamnist", "bloodmnist",
                 "chestmnist", "nodulemnist3d"):  # fmt: skip
        info = INFO[name]
        assert set(info.md5) == ({28, 64} if info.spatial_dims == 3 else {28, 64, 128, 224})
        assert all(m is None or len(m) == 32 for m in info.md5.values())
    assert INFO["chestmnist"].task == "multilabel" and len(INFO["chestmnist"].classes) == 14
    assert INFO["bloodmnist"].channels == 3 and INFO["bloodmnist"].task == "multiclass"
    assert INFO["breastmnist"].label_names == ["normal, benign"]
    assert medmnist.file_name("breastmnist", 28) == "breastmnist.npz"
    assert medmnist.file_name("breastmnist", 64) == "breastmnist_64.npz"
    assert medmnist.medmnist_url("adrenalmnist3d", 64) == (
        "https://zenodo.org/records/10519652/files/adrenalmnist3d_64.npz?download=1"
    )


def test_colour_multiclass_layout(tmp_path: Path) -> None:
    images, labels = small_set(np.random.default_rng(0), (28, 28, 3), classes=8)
    path = write_npz(tmp_path / "bloodmnist.npz", images, labels)
    data = load_medmnist("bloodmnist", path=path)
    train = data.splits["train"]
    assert data.task == "multiclass" and data.in_chans == 3 and data.num_outputs == 8
    assert train.items.shape == (12, 3, 28, 28)
    np.testing.assert_array_equal(train.items[3, 2], images["train"][3, :, :, 2])
    np.testing.assert_array_equal(train.labels.argmax(1), labels["train"][:, 0])
    assert np.all(train.labels.sum(1) == 1)


def test_multilabel_and_3d_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images, labels = small_set(rng, (28, 28), classes=2, columns=14)
    data = load_medmnist("chestmnist", path=write_npz(tmp_path / "c.npz", images, labels))
    assert data.task == "multilabel" and data.label_names[0] == "atelectasis"
    np.testing.assert_array_equal(data.splits["val"].labels, labels["val"].astype(np.float32))

    images, labels = small_set(rng, (28, 28, 28), classes=11)
    data = load_medmnist("organmnist3d", path=write_npz(tmp_path / "o.npz", images, labels))
    assert data.spatial_dims == 3 and data.splits["test"].items.shape == (6, 1, 28, 28, 28)


def test_unknown_set_is_inferred(tmp_path: Path) -> None:
    images, labels = small_set(np.random.default_rng(2), (32, 32), classes=5)
    data = load_medmnist("mynewmnist", path=write_npz(tmp_path / "x.npz", images, labels))
    assert data.task == "multiclass" and data.num_outputs == 5 and data.native_size == 32


def test_bad_files_name_file_and_key(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images, labels = small_set(rng, (28, 28), classes=2)
    del labels["val"]
    path = write_npz(tmp_path / "nokey.npz", images, labels)
    with pytest.raises(DataSourceError, match=r"nokey\.npz: no key 'val_labels'"):
        load_medmnist("breastmnist", path=path)

    images, labels = small_set(rng, (28, 28), classes=2)
    images["train"] = images["train"].astype(np.float32)
    path = write_npz(tmp_path / "float.npz", images, labels)
    with pytest.raises(DataSourceError, match=r"float\.npz: 'train_images' has dtype float32"):
        load_medmnist("breastmnist", path=path)

    images, labels = small_set(rng, (28, 28), classes=2)
    labels["test"] = labels["test"][:-1]
    path = write_npz(tmp_path / "short.npz", images, labels)
    with pytest.raises(DataSourceError, match=r"'test_labels' has shape \(5, 1\), expected \(6"):
        load_medmnist("breastmnist", path=path)

    images, labels = small_set(rng, (28, 28), classes=5)
    path = write_npz(tmp_path / "classes.npz", images, labels)
    with pytest.raises(DataSourceError, match=r"class ids in 0\.\.1"):
        load_medmnist("breastmnist", path=path)

    images, labels = small_set(rng, (28, 28, 28), classes=2)
    path = write_npz(tmp_path / "volume.npz", images, labels)
    with pytest.raises(DataSourceError, match=r"expected \(N, H, W\)"):
        load_medmnist("breastmnist", path=path)

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(DataSourceError, match=r"junk\.npz: not a readable \.npz"):
        load_medmnist("breastmnist", path=junk)


def test_missing_file_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"breastmnist_64\.npz.*download=True"):
        load_medmnist("breastmnist", root=tmp_path, size=64)
    with pytest.raises(ConfigError, match="unknown MedMNIST set 'nosuchmnist'"):
        load_medmnist("nosuchmnist", root=tmp_path)
    with pytest.raises(ConfigError, match=r"no size 128"):
        load_medmnist("adrenalmnist3d", root=tmp_path, size=128)
    with pytest.raises(MissingFileError, match=r"nothere\.npz"):
        load_medmnist("breastmnist", path=tmp_path / "nothere.npz")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Serve a folder on 127.0.0.1 and point the MedMNIST mirror at it."""
    served = tmp_path / "served"
    served.mkdir()

    def handler(*args: object, **kwargs: object) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv(medmnist.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}")
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def _served_breastmnist(served: Path) -> str:
    images, labels = small_set(np.random.default_rng(4), (28, 28), classes=2)
    path = write_npz(served / "breastmnist.npz", images, labels)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _set_md5(monkeypatch: pytest.MonkeyPatch, md5: str | None) -> None:
    info = INFO["breastmnist"]
    monkeypatch.setitem(INFO, "breastmnist", replace(info, md5={**info.md5, 28: md5}))


def test_download_checks_md5(file_server: Path, tmp_path: Path, monkeypatch) -> None:
    _set_md5(monkeypatch, _served_breastmnist(file_server))
    root = tmp_path / "root"
    data = load_medmnist("breastmnist", root=root, download=True)
    assert (root / "breastmnist.npz").is_file() and len(data.splits["train"]) == 12
    assert [p.name for p in root.iterdir()] == ["breastmnist.npz"]  # no temp file left


def test_download_wrong_md5_leaves_nothing(file_server: Path, tmp_path: Path, monkeypatch) -> None:
    _served_breastmnist(file_server)
    _set_md5(monkeypatch, "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(
        DataSourceError, match=r"md5 [0-9a-f]{32} does not match the expected 0{32}"
    ):
        load_medmnist("breastmnist", root=root, download=True)
    assert list(root.iterdir()) == []


def test_download_unknown_md5_warns(file_server: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    _served_breastmnist(file_server)
    _set_md5(monkeypatch, None)
    with caplog.at_level(logging.WARNING, logger="dxkit.data.sources.medmnist"):
        load_medmnist("breastmnist", root=tmp_path, download=True)
    assert "no known md5" in caplog.text


def test_download_missing_file_names_url(file_server: Path, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"could not download http://127\.0\.0\.1:\d+/"
                       r"breastmnist_64\.npz\?download=1 .*save it as"):  # fmt: skip
        load_medmnist("breastmnist", root=tmp_path / "root", size=64, download=True)
    assert list((tmp_path / "root").iterdir()) == []


def test_download_offline_says_how_to_place_file(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(medmnist.MIRROR_ENV, f"http://127.0.0.1:{port}")
    dest = tmp_path / "breastmnist.npz"
    with pytest.raises(DataSourceError, match=rf"download it by hand from .* save it as {dest}"):
        load_medmnist("breastmnist", root=tmp_path, download=True)
    assert not any(tmp_path.iterdir())


def test_download_to_an_explicit_path_and_folder_as_path(
    file_server: Path, tmp_path: Path, monkeypatch
) -> None:
    _set_md5(monkeypatch, _served_breastmnist(file_server))
    target = tmp_path / "mine" / "breast.npz"
    data = load_medmnist("breastmnist", path=target, download=True)
    assert target.is_file() and len(data.splits["test"]) == 6
    (tmp_path / "mine" / "breastmnist.npz").write_bytes(target.read_bytes())
    data = load_medmnist("breastmnist", path=tmp_path / "mine")  # a folder: looked up by name
    assert len(data.splits["val"]) == 5
