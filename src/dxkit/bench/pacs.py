"""``dxkit bench pacs``: per-study latency of pull → infer → push against a DICOMweb PACS
(Orthanc on loopback), split into retrieve / infer / build / store, and studies per minute
per modality, beside the floor: a plain dicomweb-client retrieve of the same study and a
store of it back (what any integration must pay for the transfers alone).

Each round first deletes the study's earlier dxkit results through Orthanc's REST API
(``DELETE /series/{id}``), so every round does the full work instead of the rerun skip.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from dxkit.dicom_results import result_uid
from dxkit.pacs.client import PacsClient
from dxkit.pacs.inference import PacsModel
from dxkit.pacs.run import run_study

STAGES = ("retrieve", "infer", "build", "store")
RESULT_SERIES = ("report-series", "seg-series", "heatmap-series")


@dataclass
class Case:
    """A modality's model and a folder of DICOM files (one or more studies)."""

    label: str
    model: Path
    folder: Path


def upload_folder(rest: str, folder: Path) -> list[str]:
    """Store every ``.dcm`` under ``folder`` in Orthanc; the Study Instance UIDs."""
    ids = set()
    for path in sorted(folder.rglob("*.dcm")):
        r = requests.post(f"{rest}/instances", data=path.read_bytes(), timeout=60)
        r.raise_for_status()
        ids.add(r.json()["ParentStudy"])
    return [
        requests.get(f"{rest}/studies/{i}", timeout=60).json()["MainDicomTags"]["StudyInstanceUID"]
        for i in sorted(ids)
    ]


def delete_results(rest: str, model: PacsModel, study: str) -> None:
    wanted = {str(result_uid(model.identity, study, kind)) for kind in RESULT_SERIES}
    for uid in wanted:
        found = requests.post(f"{rest}/tools/lookup", data=uid, timeout=60).json()
        for item in found:
            if item.get("Type") == "Series":
                requests.delete(f"{rest}/series/{item['ID']}", timeout=60).raise_for_status()


def floor_seconds(client: PacsClient, study: str) -> float:
    """A plain dicomweb-client retrieve of the whole study and a store of it back."""
    start = time.perf_counter()
    instances = client.web.retrieve_study(study, media_types=(("application/dicom", "*"),))
    client.web.store_instances(list(instances))
    return time.perf_counter() - start


def bench_pacs(dicomweb: str, rest: str, cases: Sequence[Case], rounds: int = 3) -> str:
    """The markdown table (one row per case), median seconds per study over the rounds."""
    client = PacsClient(dicomweb, timeout=120)
    rows = []
    for case in cases:
        model = PacsModel(case.model)
        studies = upload_folder(rest, case.folder)
        stage_times: dict[str, list[float]] = {s: [] for s in STAGES}
        totals, floors = [], []
        for _ in range(rounds):
            for study in studies:
                delete_results(rest, model, study)
                start = time.perf_counter()
                outcome = run_study(client, model, study)
                totals.append(time.perf_counter() - start)
                if outcome.status != "written":
                    raise RuntimeError(f"{case.label}: study {outcome.status}: {outcome.detail}")
                for stage in STAGES:
                    stage_times[stage].append(outcome.seconds[stage])
                floors.append(floor_seconds(client, study))
        med = {s: statistics.median(v) for s, v in stage_times.items()}
        total, floor = statistics.median(totals), statistics.median(floors)
        rows.append(
            f"| {case.label} | {len(studies)} | {med['retrieve']:.3f} | {med['infer']:.3f} | "
            f"{med['build']:.3f} | {med['store']:.3f} | {total:.3f} | {60 / total:.1f} | "
            f"{floor:.3f} | {60 / floor:.1f} |"
        )
    header = (
        "| modality (model) | studies | retrieve s | infer s | build s | store s | total s "
        "| studies/min | floor: retrieve + store s | floor studies/min |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    note = (
        f"Median seconds per study over {rounds} rounds (each round deletes the earlier "
        "results first). Total includes the rerun check and series selection (QIDO + "
        "metadata). Floor: dicomweb-client `retrieve_study` + `store_instances` of the same "
        "study, nothing else."
    )
    return "\n".join([header, *rows, "", note])
