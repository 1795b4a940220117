"""Shared test fixtures: where the real data lives, and deterministic torch on 2 cores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# OpenMP threads that spin while waiting make every torch op crawl when other processes
# share the cores (seen: 40x slower steps); passive waiting costs nothing when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DXKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def _require(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not present at {path} (set DXKIT_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real images beside the project; skips the test when absent."""
    return _require("")


@pytest.fixture(scope="session")
def medmnist_dir() -> Path:
    return _require("medmnist")


@pytest.fixture(scope="session")
def rsna_dir() -> Path:
    return _require("rsna_ich_dicom")


@pytest.fixture(scope="session")
def siim_dir() -> Path:
    return _require("siim_pneumothorax_sample")


@pytest.fixture(autouse=True, scope="session")
def _quiet_torch() -> None:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module that trains tiny networks: two busy threads on two
    shared cores thrash (measured 10x slower here). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
