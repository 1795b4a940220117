"""A DICOM node (pynetdicom): receive studies by C-STORE, read each once it has been quiet
for a while, send the results to a destination by C-STORE.

A study counts as complete when no instance of it arrived for ``quiet`` seconds (DIMSE has
no "end of study" message; modalities and PACS routers send instance by instance). Received
instances are kept in memory until their study is read. Sending retries refused or dropped
associations with backoff; a study whose results cannot be sent is logged (hashed UID) and
dropped, and the node keeps listening.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from dxkit.errors import ConfigError, DxkitError
from dxkit.pacs.client import hashed, quiet_third_party_logs
from dxkit.pacs.errors import NoSuitableSeriesError, PacsError
from dxkit.pacs.inference import PacsModel
from dxkit.pacs.rules import pick_series
from dxkit.pacs.run import build_results

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Destination:
    """Where results go: an AE title, host and port."""

    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        try:
            aet, address = text.split("@", 1)
            host, port = address.rsplit(":", 1)
            return cls(aet, host, int(port))
        except ValueError:
            raise ConfigError(
                f"--send-to {text!r}: write it as AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242"
            ) from None


def send(destination: Destination, datasets: list[Dataset], aet: str, attempts: int = 4,
         first_delay: float = 0.5) -> None:  # fmt: skip
    """C-STORE ``datasets`` to ``destination``; retries refused associations and failures."""
    from pynetdicom import AE

    ae = AE(ae_title=aet)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    delay = first_delay
    for attempt in range(1, attempts + 1):
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.aet)
        if assoc.is_established:
            try:
                statuses = [assoc.send_c_store(ds) for ds in datasets]
            finally:
                assoc.release()
            failed = [s for s in statuses if not s or int(s.Status) != 0]
            if not failed:
                return
            reason = "the destination did not accept every object"
        else:
            reason = "the association was refused or the node could not be reached"
        if attempt < attempts:
            log.warning("C-STORE to %s failed (%s); retry %d in %.1f s", destination.aet, reason,
                        attempt, delay)  # fmt: skip
            time.sleep(delay)
            delay *= 2
    raise PacsError(
        f"sending results to {destination.aet}@{destination.host}:{destination.port}: {reason} "
        f"after {attempts} attempts; check --send-to and that the node accepts {aet}"
    )


@dataclass
class _Study:
    instances: list[Dataset] = field(default_factory=list)
    last: float = 0.0


class Listener:
    """A C-STORE SCP that reads complete studies with ``model`` and sends the results."""

    def __init__(self, model: PacsModel, destination: Destination, aet: str = "DXKIT",
                 host: str = "127.0.0.1", port: int = 11112, quiet: float = 10.0,
                 on_done: Callable[[str, str], None] | None = None) -> None:  # fmt: skip
        self.model, self.destination, self.aet = model, destination, aet
        self.host, self.port, self.quiet = host, port, quiet
        self.on_done = on_done
        self._studies: dict[str, _Study] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._worker: threading.Thread | None = None

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        study = str(ds.get("StudyInstanceUID", ""))
        with self._lock:
            entry = self._studies.setdefault(study, _Study())
            entry.instances.append(ds)
            entry.last = time.monotonic()
        return 0x0000

    def start(self) -> None:
        """Listen in the background (returns at once)."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        quiet_third_party_logs()
        ae = AE(ae_title=self.aet)
        for context in StoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store)]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self._worker = threading.Thread(target=self._watch, name="dxkit-listen", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=60)
        if self._server is not None:
            self._server.shutdown()

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._lock:
                ready = [s for s, e in self._studies.items() if now - e.last >= self.quiet]
                batches = {s: self._studies.pop(s).instances for s in ready}
            for study, instances in batches.items():
                status = self._read(study, instances)
                if self.on_done is not None:
                    self.on_done(study, status)

    def _read(self, study: str, instances: list[Dataset]) -> str:
        import highdicom as hd

        tag = hashed(study)
        series: dict[str, list[Dataset]] = {}
        for ds in instances:
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
        try:
            chosen = pick_series(self.model.rules, series)
            output = self.model.infer({slot: series[uid] for slot, uid in chosen.items()})
            send(self.destination, build_results(hd, self.model, output), self.aet)
        except NoSuitableSeriesError as err:
            log.info("study %s: no suitable series (%s)", tag, type(err).__name__)
            return "no suitable series"
        except DxkitError as err:
            log.error("study %s: %s", tag, type(err).__name__)
            return "failed"
        log.info("study %s: results sent to %s", tag, self.destination.aet)
        return "sent"
