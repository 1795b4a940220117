"""Prepared slices as chunked uint8 arrays on disk, read one slice at a time with ``pread``.

A store is a folder: ``store.json`` (slice shape, dtype, shard names), ``shards/*.bin``
(raw C-ordered ``uint8 (n, C, H, W)`` blocks, ``shard_size`` slices each) and
``manifest.parquet`` (one row per slice: ``image_id``, ``shard``, ``offset``, labels,
``patient``, ``split``), so a training run never lists files again.

Why explicit reads, not ``np.memmap``: pages of a memory map that a process touches count
in its resident set (``RssFile``) until the kernel reclaims them, so a memmapped epoch over
200k slices "grows" every worker's RSS with the data; ``os.pread`` copies one slice into a
fresh buffer and leaves the file's pages in the shared OS page cache only. `dxkit bench
scale` measures both (benchmarks/RESULTS.md). No library offers this reader (zarr would
add a dependency and per-chunk decompression for data that does not compress), hence the
few lines here.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dxkit.errors import DataSourceError, MissingFileError

STORE_FORMAT = "dxkit-slice-store/1"
MANIFEST = "manifest.parquet"


@dataclass(frozen=True)
class SliceRef:
    """One slice of a store: what a ``LabelledSet`` item is for streamed data."""

    store: Path
    shard: int
    offset: int


class SliceStoreWriter:
    """Append uint8 slices of one shape into shard files; ``close`` writes ``store.json``."""

    def __init__(
        self, out_dir: Path | str, shape: Sequence[int], shard_size: int = 4096, prefix: str = ""
    ) -> None:
        self.out = Path(out_dir)
        self.shape = tuple(int(s) for s in shape)
        self.shard_size = int(shard_size)
        self.prefix = prefix
        self.slice_bytes = int(np.prod(self.shape))
        (self.out / "shards").mkdir(parents=True, exist_ok=True)
        self.shards: list[str] = []
        self.count = 0
        self._fh: Any = None
        self._in_shard = 0

    def _next_shard(self) -> None:
        if self._fh is not None:
            self._fh.close()
        name = f"shards/{self.prefix}{len(self.shards):05d}.bin"
        self.shards.append(name)
        self._fh = (self.out / name).open("wb")
        self._in_shard = 0

    def add_block(self, block: np.ndarray) -> list[tuple[int, int]]:
        """Append ``(n, *shape)`` uint8 slices; return their ``(shard, offset)``."""
        block = np.ascontiguousarray(block, dtype=np.uint8)
        if block.shape[1:] != self.shape:
            raise DataSourceError(f"slices of shape {block.shape[1:]} in a {self.shape} store")
        refs = []
        start = 0
        while start < len(block):
            if self._fh is None or self._in_shard == self.shard_size:
                self._next_shard()
            take = min(self.shard_size - self._in_shard, len(block) - start)
            refs += [
                (len(self.shards) - 1, (self._in_shard + i) * self.slice_bytes) for i in range(take)
            ]
            self._fh.write(block[start : start + take].tobytes())
            self._in_shard += take
            start += take
        self.count += len(block)
        return refs

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        info = {
            "format": STORE_FORMAT,
            "shape": list(self.shape),
            "dtype": "uint8",
            "shards": self.shards,
            "count": self.count,
        }
        tmp = self.out / ".store.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, self.out / "store.json")


class SliceStore:
    """Read slices of a store by ``(shard, offset)``; file handles opened lazily per process.

    Safe in forked DataLoader workers: descriptors are keyed by the process id, so a worker
    never shares a file position (``pread`` has none anyway) or a closed descriptor.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        info_path = self.root / "store.json"
        if not info_path.is_file():
            raise MissingFileError(f"{info_path}: not a slice store; write one with pack_cache")
        info = json.loads(info_path.read_text())
        if info.get("format") != STORE_FORMAT:
            raise DataSourceError(f"{info_path}: format {info.get('format')!r}, not {STORE_FORMAT}")
        self.shape = tuple(int(s) for s in info["shape"])
        self.shards = [self.root / s for s in info["shards"]]
        self.count = int(info["count"])
        self.slice_bytes = int(np.prod(self.shape))
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": {}}

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked: the parent's descriptors are not ours to reuse
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = os.open(self.shards[shard], os.O_RDONLY)
            self._fds[shard] = fd
        return fd

    def read(self, shard: int, offset: int) -> np.ndarray:
        """One slice, uint8 ``shape``, in its own buffer (not a view of the file)."""
        data = os.pread(self._fd(shard), self.slice_bytes, offset)
        if len(data) != self.slice_bytes:
            raise DataSourceError(
                f"{self.shards[shard]}: short read at byte {offset} (store truncated?)"
            )
        return np.frombuffer(data, np.uint8).reshape(self.shape)

    def read_many(self, refs: Iterable[tuple[int, int]]) -> np.ndarray:
        """Several slices stacked into one uint8 ``(n, *shape)`` array."""
        refs = list(refs)
        out = np.empty((len(refs), *self.shape), np.uint8)
        for i, (shard, offset) in enumerate(refs):
            out[i] = self.read(shard, offset)
        return out

    def memmap(self, shard: int) -> np.ndarray:
        """A shard as ``np.memmap`` (for comparison: touched pages count in RSS)."""
        n = os.path.getsize(self.shards[shard]) // self.slice_bytes
        return np.memmap(self.shards[shard], np.uint8, "r", shape=(n, *self.shape))


@functools.lru_cache(maxsize=16)
def open_store(root: Path) -> SliceStore:
    """One ``SliceStore`` per folder and process (its descriptors are opened lazily)."""
    return SliceStore(root)


def read_manifest(root: Path | str) -> pd.DataFrame:
    """The store's slice table (``image_id``, ``shard``, ``offset``, labels, patient, split)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise MissingFileError(f"{path}: no manifest; write the store with pack_cache")
    return pd.read_parquet(path)


def write_manifest(root: Path | str, manifest: pd.DataFrame) -> Path:
    from dxkit.data.dicom_table import atomic_parquet

    path = Path(root) / MANIFEST
    atomic_parquet(manifest.reset_index(drop=True), path)
    return path


def pack_cache(cache_dir: Path | str, out_dir: Path | str, shard_size: int = 4096) -> pd.DataFrame:
    """A prepared slice cache (``index.parquet`` + ``slices/*.npy``) → a slice store.

    Kept slices go in index order; the manifest keeps every column of the index (labels,
    ``PatientID`` as ``patient``) plus ``shard`` and ``offset``.
    """
    cache, out = Path(cache_dir), Path(out_dir)
    index = pd.read_parquet(cache / "index.parquet")
    index = index[index["kept"].astype(bool)].reset_index(drop=True)
    if index.empty:
        raise DataSourceError(f"{cache}: no kept slices to pack")
    first = np.load(cache / index["array"].iloc[0])
    writer = SliceStoreWriter(out, first.shape, shard_size)
    refs: list[tuple[int, int]] = []
    for rel in index["array"]:
        refs += writer.add_block(np.load(cache / rel)[None])
    writer.close()
    manifest = index.rename(columns={"PatientID": "patient"})
    manifest["shard"] = [r[0] for r in refs]
    manifest["offset"] = [r[1] for r in refs]
    write_manifest(out, manifest)
    if (cache / "prepare.json").is_file():  # the recipe travels with the slices
        shutil.copy2(cache / "prepare.json", out / "prepare.json")
    return manifest
