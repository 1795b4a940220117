"""``dxkit listen`` as a DICOM node: Orthanc is told (REST ``/modalities/dxkit/store``) to
send a study to dxkit by C-STORE; once the study is quiet, the results come back to Orthanc
by C-STORE and sit in the same study."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
import requests
from deploy_fixtures import ct_checkpoint
from orthanc_server import Orthanc

pytestmark = pytest.mark.pacs
pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from dxkit.pacs.inference import PacsModel  # noqa: E402
from dxkit.pacs.listen import Destination, Listener  # noqa: E402


def test_study_sent_by_orthanc_comes_back_with_results(orthanc: Orthanc, tmp_path: Path) -> None:
    from dxkit.data.synthetic import generate_ct_dataset

    generate_ct_dataset(tmp_path, n_patients=1, slices_per_patient=4, size=64, seed=21)
    files = sorted(tmp_path.rglob("*.dcm"))
    [orthanc_study] = set(orthanc.upload(files))
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    done = threading.Event()
    statuses: list[str] = []

    def finished(uid: str, status: str) -> None:
        statuses.append(status)
        done.set()

    destination = Destination("ORTHANC", "127.0.0.1", orthanc.dicom_port)
    listener = Listener(PacsModel(ct_checkpoint()), destination, aet="DXKIT",
                        port=orthanc.listener_port, quiet=1.0, on_done=finished)  # fmt: skip
    listener.start()
    try:
        r = requests.post(f"{orthanc.rest}/modalities/dxkit/store", data=orthanc_study,
                          timeout=60)  # fmt: skip
        r.raise_for_status()
        assert done.wait(120), "the listener never finished the study"
    finally:
        listener.stop()
    assert statuses == ["sent"]
    modalities = sorted(s["MainDicomTags"].get("Modality") for s in orthanc.series_of(study))
    assert modalities.count("SR") == 1 and modalities.count("CT") == 1
    assert len(modalities) == 3  # source, report, heatmap


def test_send_to_must_name_aet_host_and_port() -> None:
    from dxkit.errors import ConfigError

    assert Destination.parse("PACS@10.0.0.5:104") == Destination("PACS", "10.0.0.5", 104)
    with pytest.raises(ConfigError, match="AET@HOST:PORT"):
        Destination.parse("pacs:104")


def test_refused_association_is_a_clear_error_after_retries() -> None:
    from orthanc_server import free_port

    from dxkit.pacs.errors import PacsError
    from dxkit.pacs.listen import send

    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    with pytest.raises(PacsError, match="refused or the node could not be reached after 2"):
        send(Destination("NOBODY", "127.0.0.1", free_port()), [ds], "DXKIT", attempts=2,
             first_delay=0.05)  # fmt: skip
