"""Pull, infer, push: one study from a DICOMweb PACS through a model and back.

Safe to rerun and to fail: result UIDs are derived from the study and the model's
checkpoint hash (``dxkit.dicom_results.identity``), the report is stored last and is the
mark of a finished study, so a study whose report exists (with this model's device UID) is
skipped, and a run cut short re-stores the same UIDs next time instead of adding copies.
Logs name studies and series by hashed UIDs only.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from dxkit.dicom_results import build_report, reference_headers, result_uid
from dxkit.dicom_results.capture import build_heatmap_capture, display_grey
from dxkit.dicom_results.identity import MANUFACTURER
from dxkit.dicom_results.segmentation import build_segmentation
from dxkit.io.dicom import lenient_values
from dxkit.pacs.client import PacsClient, hashed
from dxkit.pacs.errors import NoSuitableSeriesError
from dxkit.pacs.inference import ModelOutput, PacsModel
from dxkit.pacs.rules import pick_series

log = logging.getLogger(__name__)
DEVICE_OBSERVER_UID = "121012"  # DCM code of the SR's "Device Observer UID" item


@dataclass
class StudyOutcome:
    """What happened to one study: ``written``, ``already done`` or ``no suitable series``."""

    study: str
    status: str
    detail: str = ""
    stored: list[str] = field(default_factory=list)  # SOP Class names of stored objects
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _device_uids(item: Dataset) -> set[str]:
    found = set()
    for child in item.get("ContentSequence", []):
        names = child.get("ConceptNameCodeSequence", [])
        if names and names[0].CodeValue == DEVICE_OBSERVER_UID and "UID" in child:
            found.add(str(child.UID))
        found |= _device_uids(child)
    return found


def already_reported(client: PacsClient, model: PacsModel, study: str) -> bool:
    """True when the study holds this model version's report (found by its derived series
    UID, confirmed by the device observer UID inside it)."""
    series = result_uid(model.identity, study, "report-series")
    if not client.has_series(study, series):
        return False
    return any(
        str(model.identity.device_uid) in _device_uids(sr)
        for sr in client.instance_metadata(study, series)
    )


def _candidates(client: PacsClient, study: str) -> dict[str, list[Dataset]]:
    """Headers of every series of the study that dxkit did not write."""
    out = {}
    for s in client.series_of(study):
        headers = client.instance_metadata(study, s["uid"])
        if headers and str(headers[0].get("Manufacturer", "")) != MANUFACTURER:
            out[s["uid"]] = headers
    return out


def build_results(hd: Any, model: PacsModel, output: ModelOutput) -> list[Dataset]:
    """The result objects in store order: SEG / SC first, the report last."""
    # pydicom and highdicom warn (and pydicom logs) with header values: none may reach logs.
    with lenient_values(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _build_results(hd, model, output)


def _build_results(hd: Any, model: PacsModel, output: ModelOutput) -> list[Dataset]:
    headers = [ds for slot in output.used.values() for ds in slot]
    refs = reference_headers(headers)
    objects = []
    for index, mask in output.masks:
        objects.append(build_segmentation(hd, refs, index, mask, output.mask_label, model.identity))
    if output.heatmap is not None:
        h = output.heatmap
        grey = display_grey(h["slice"], h["window"])
        objects.append(build_heatmap_capture(hd, refs, h["index"], grey, h["heat"], h["finding"],
                                             h["method"], "relative to this map's maximum",
                                             model.identity))  # fmt: skip
    objects.append(build_report(hd, refs, output.findings, model.identity, output.skipped))
    return objects


def run_study(client: PacsClient, model: PacsModel, study: str) -> StudyOutcome:
    """Retrieve, pick series, infer, build and store one study's results."""
    import highdicom as hd

    tag = hashed(study)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if already_reported(client, model, study):
        log.info("study %s: already reported by this model version", tag)
        return StudyOutcome(study, "already done")
    try:
        chosen = pick_series(model.rules, _candidates(client, study))
    except NoSuitableSeriesError as err:
        log.info("study %s: no suitable series", tag)
        return StudyOutcome(study, "no suitable series", str(err))
    series = {slot: client.retrieve_series(study, uid) for slot, uid in chosen.items()}
    seconds["retrieve"] = time.perf_counter() - start
    t = time.perf_counter()
    output = model.infer(series)
    seconds["infer"] = time.perf_counter() - t
    t = time.perf_counter()
    objects = build_results(hd, model, output)
    seconds["build"] = time.perf_counter() - t
    t = time.perf_counter()
    for ds in objects:  # one at a time, report last: a cut run leaves no report behind
        client.store([ds], f"a {ds.SOPClassUID.name} into study {tag}")
    seconds["store"] = time.perf_counter() - t
    log.info("study %s: %d objects stored, %d instances skipped", tag, len(objects),
             len(output.skipped))  # fmt: skip
    return StudyOutcome(
        study,
        "written",
        stored=[ds.SOPClassUID.name for ds in objects],
        skipped=[uid for uid, _ in output.skipped],
        seconds=seconds,
    )
