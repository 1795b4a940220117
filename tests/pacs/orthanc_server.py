"""A real Orthanc PACS for the PACS tests: started on free loopback ports in a temporary
folder from a JSON config (DICOMweb plugin on, no authentication, loopback-only HTTP, a
modality entry for dxkit's listener), waited for, and stopped at the end. Skips with the
reason when Orthanc or its DICOMweb plugin is not installed (scripts/ensure-orthanc.sh).
"""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SERVICE = Path(__file__).resolve().parents[1] / "serve"
if str(SERVICE) not in sys.path:
    sys.path.insert(0, str(SERVICE))  # deploy_fixtures: the session's trained CT model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its REST root, DICOMweb root and DICOM port."""

    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    folder: Path
    listener_port: int

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.rest}/dicom-web"

    def upload(self, files: list[Path]) -> list[str]:
        """Store files as they are (REST ``/instances``); their Orthanc study ids."""
        studies = []
        for path in files:
            r = requests.post(f"{self.rest}/instances", data=path.read_bytes(), timeout=30)
            r.raise_for_status()
            studies.append(r.json()["ParentStudy"])
        return studies

    def series_of(self, study_uid: str) -> list[dict]:
        """Orthanc's own view of a study's series (main DICOM tags)."""
        query = {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        found = requests.post(f"{self.rest}/tools/find", json=query, timeout=30).json()
        if not found:
            return []
        return list(requests.get(f"{self.rest}/studies/{found[0]}/series", timeout=30).json())

    def instance_count(self) -> int:
        return int(requests.get(f"{self.rest}/statistics", timeout=30).json()["CountInstances"])

    def restart(self) -> None:
        """Start again on the same config, ports and storage (after ``kill``)."""
        self.stop()
        fresh = _launch(self.folder / "orthanc.json", self.folder)
        self.process = fresh
        _wait(self)

    def kill(self) -> None:
        """Kill the process at once (a PACS crashing mid-run)."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_orthanc(folder: Path) -> Orthanc:
    """Start Orthanc with a config in ``folder``; wait until its REST API answers."""
    binary = shutil.which("Orthanc")
    if binary is None or not PLUGIN.is_file():
        pytest.skip("Orthanc + DICOMweb plugin not installed (run scripts/ensure-orthanc.sh)")
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port, listener_port = free_port(), free_port(), free_port()
    config = {
        "Name": "dxkit-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,  # HTTP from loopback only (Orthanc 1.10 has no bind)
        "AuthenticationEnabled": False,
        "DicomCheckModalityHost": True,
        "DicomAlwaysAllowStore": False,  # only the modalities below may store
        "DicomModalities": {"dxkit": ["DXKIT", "127.0.0.1", listener_port]},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
        "HttpTimeout": 30,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=1))
    orthanc = Orthanc(_launch(path, folder), http_port, dicom_port, folder, listener_port)
    atexit.register(orthanc.stop)  # even when the session dies before its finalizers
    _wait(orthanc)
    return orthanc


def _launch(config: Path, folder: Path) -> subprocess.Popen[bytes]:
    log = (folder / "orthanc.log").open("ab")
    return subprocess.Popen([str(shutil.which("Orthanc")), str(config)], stdout=log,
                            stderr=subprocess.STDOUT, cwd=folder)  # fmt: skip


def _wait(orthanc: Orthanc) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if orthanc.process.poll() is not None:
            log = (orthanc.folder / "orthanc.log").read_text()[-2000:]
            raise RuntimeError(f"Orthanc exited: {log}")
        try:
            if requests.get(f"{orthanc.rest}/system", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.2)
    orthanc.stop()
    raise RuntimeError("Orthanc did not answer within 30 s")
