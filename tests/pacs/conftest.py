"""The session's Orthanc (see ``orthanc_server``), stopped when the session ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from orthanc_server import Orthanc, start_orthanc


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()
