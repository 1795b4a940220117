"""A DICOMweb PACS (QIDO-RS search, WADO-RS retrieve, STOW-RS store) behind retries."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import requests
from pydicom.dataset import Dataset

from dxkit.pacs.retry import with_retries

ANY_SYNTAX = (("application/dicom", "*"),)
# dicomweb-client and urllib3 log request URLs (which hold study/series UIDs) at DEBUG;
# pynetdicom logs SOP Instance UIDs of every C-STORE: our logs carry hashed UIDs only.
QUIET_LOGGERS = ("dicomweb_client", "pynetdicom", "urllib3.connectionpool")


def quiet_third_party_logs() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def hashed(uid: str) -> str:
    """What logs may say about a UID: a short one-way hash."""
    return hashlib.sha256(str(uid).encode()).hexdigest()[:10]


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class PacsClient:
    """One DICOMweb service root (e.g. ``http://host:8042/dicom-web``)."""

    def __init__(self, url: str, timeout: float = 30.0, attempts: int = 4) -> None:
        from dicomweb_client.api import DICOMwebClient

        quiet_third_party_logs()
        self.url = url
        self.attempts = attempts
        self.web = DICOMwebClient(url=url, session=_TimeoutSession(timeout))
        # Our own retries (with_retries) also cover refused connections and timeouts,
        # which dicomweb-client's status-code retries do not; one mechanism, not two.
        self.web.set_http_retry_params(retry=False)

    def _call(self, what: str, call: Any) -> Any:
        return with_retries(what, call, attempts=self.attempts)

    def find_studies(
        self, study: str | None = None, since: str | None = None, accession: str | None = None
    ) -> list[str]:
        """Study Instance UIDs matching the filters (``since`` is YYYYMMDD)."""
        filters: dict[str, Any] = {}
        if study:
            filters["StudyInstanceUID"] = study
        if since:
            filters["StudyDate"] = f"{since.replace('-', '')}-"
        if accession:
            filters["AccessionNumber"] = accession
        found = self._call("searching studies", lambda: self.web.search_for_studies(
            search_filters=filters))  # fmt: skip
        return [str(_value(s, "0020000D")) for s in found]

    def series_of(self, study: str) -> list[dict[str, Any]]:
        """Per series: UID, modality, body part, description and instance count."""
        found = self._call(
            f"listing the series of study {hashed(study)}",
            lambda: self.web.search_for_series(study_instance_uid=study),
        )
        return [
            {
                "uid": str(_value(s, "0020000E")),
                "modality": _value(s, "00080060"),
                "instances": int(_value(s, "00201209") or 0),
            }
            for s in found
        ]

    def instance_metadata(self, study: str, series: str) -> list[Dataset]:
        """Headers (no pixels) of a series' instances, as pydicom datasets."""
        meta = self._call(
            f"reading series {hashed(series)}",
            lambda: self.web.retrieve_series_metadata(study, series),
        )
        return [Dataset.from_json(m) for m in meta]

    def retrieve_series(self, study: str, series: str) -> list[Dataset]:
        """Instances as stored (any transfer syntax: a PACS that transcodes compressed
        images may change pixel values; pydicom decodes what was stored)."""
        return list(
            self._call(
                f"retrieving series {hashed(series)}",
                lambda: self.web.retrieve_series(study, series, media_types=ANY_SYNTAX),
            )
        )

    def has_series(self, study: str, series: str) -> bool:
        found = self._call(
            f"looking for earlier results in study {hashed(study)}",
            lambda: self.web.search_for_series(
                study_instance_uid=study, search_filters={"SeriesInstanceUID": series}
            ),
        )
        return bool(found)

    def store(self, datasets: Sequence[Dataset], what: str) -> None:
        self._call(f"storing {what}", lambda: self.web.store_instances(list(datasets)))


class _TimeoutSession(requests.Session):
    """A session whose requests give up after ``timeout`` seconds (requests has no
    session-wide timeout)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)
