"""Findings as a TID 1500 measurement report (Comprehensive 3D SR, built by highdicom).

One measurement group per finding: the probability and the decision threshold as numeric
measurements, the call as a qualitative evaluation (present/absent), the model as the
algorithm (name, version, checkpoint hash as parameter) and as the device observer (its UID
is derived from the checkpoint hash, which is how a rerun finds this report), and the source
images it read. Instances that could not be read are listed as text items, so the report
says what it did not see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dxkit.dicom_results.identity import MANUFACTURER, ModelIdentity, result_uid
from dxkit.dicom_results.sources import DicomOutputError, SourceRefs

PRIVATE_SCHEME = "99DXKIT"
SERIES_NUMBER = 9902
SKIPPED_CODE = ("SKIPPED", "Instance not read")


@dataclass(frozen=True)
class Finding:
    """One finding's result: probability, the threshold it was called at, and the call."""

    name: str
    probability: float
    threshold: float
    positive: bool


def _concept(hd: Any, value: str, meaning: str) -> Any:
    return hd.sr.CodedConcept(value[:16], PRIVATE_SCHEME, meaning[:64])


def _group(hd: Any, finding: Finding, refs: SourceRefs, identity: ModelIdentity) -> Any:
    from pydicom.sr.codedict import codes

    unit = hd.sr.CodedConcept("1", "UCUM", "no units")
    finding_concept = _concept(hd, f"F-{finding.name}", finding.name)
    algorithm = hd.sr.AlgorithmIdentification(
        name=identity.name, version=identity.version, parameters=[f"sha256={identity.sha256}"]
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=result_uid(identity, refs.study_uid, "finding", finding.name),
            identifier=f"dxkit {finding.name}"[:64],
        ),
        finding_type=finding_concept,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=_concept(hd, "PROB", "Probability"),
                value=float(finding.probability),
                unit=unit,
            ),
            hd.sr.Measurement(
                name=_concept(hd, "THRESH", "Decision threshold"),
                value=float(finding.threshold),
                unit=unit,
            ),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=finding_concept,
                value=codes.SCT.Present if finding.positive else codes.SCT.Absent,
            )
        ],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=ds.SOPClassUID,
                referenced_sop_instance_uid=ds.SOPInstanceUID,
            )
            for ds in refs.headers
        ],
    )


def build_report(
    hd: Any,
    refs: SourceRefs,
    findings: Sequence[Finding],
    identity: ModelIdentity,
    skipped: Sequence[tuple[str, str]] = (),
) -> Any:
    """The measurement report of ``findings`` on ``refs``' images, in their study;
    ``skipped`` lists ``(SOP Instance UID, reason)`` of instances that were not read."""
    from pydicom.sr.codedict import codes

    study = refs.study_uid
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=identity.device_uid,
            name=identity.name[:64],
            manufacturer_name=MANUFACTURER,
            model_name=identity.version[:64],
            serial_number=identity.sha256[:64],
        ),
    )
    try:
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=device),
            procedure_reported=hd.sr.CodedConcept("363679005", "SCT", "Imaging"),
            imaging_measurements=[_group(hd, f, refs, identity) for f in findings],
        )
        container = report[0]
        for uid, reason in skipped:
            container.ContentSequence.append(
                hd.sr.TextContentItem(
                    name=_concept(hd, *SKIPPED_CODE),
                    value=f"{uid}: {reason}"[:1024],
                    relationship_type="CONTAINS",
                )
            )
        return hd.sr.Comprehensive3DSR(
            evidence=refs.headers,
            content=report,
            series_instance_uid=result_uid(identity, study, "report-series"),
            series_number=SERIES_NUMBER,
            sop_instance_uid=result_uid(identity, study, "report"),
            instance_number=1,
            manufacturer=MANUFACTURER,
            series_description=f"dxkit findings {identity.name}"[:64],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise DicomOutputError(
            f"the findings could not be written as a DICOM report: {err}"
        ) from None


@dataclass
class ReadReport:
    """What a dxkit report says, read back with highdicom."""

    device_uid: str
    findings: dict[str, Finding]
    referenced: set[str]
    skipped: list[str]


def read_report(hd: Any, dataset: Any) -> ReadReport:
    """Parse a report written by ``build_report`` (used for reruns and by the tests)."""
    from pydicom.sr.codedict import codes

    sr = hd.sr.Comprehensive3DSR.from_dataset(dataset)
    device_uid = ""
    for ctx in sr.content.get_observer_contexts(observer_type=codes.DCM.Device):
        device_uid = str(ctx.observer_identifying_attributes.uid)
    findings: dict[str, Finding] = {}
    referenced: set[str] = set()
    for group in sr.content.get_image_measurement_groups():
        name = group.finding_type.meaning
        values = {m.name.value: float(m.value) for m in group.get_measurements()}
        calls = group.get_qualitative_evaluations()
        positive = bool(calls) and calls[0].value == codes.SCT.Present
        findings[name] = Finding(name, values["PROB"], values["THRESH"], positive)
        for item in group[0].ContentSequence:
            for ref in item.get("ReferencedSOPSequence", []):
                referenced.add(str(ref.ReferencedSOPInstanceUID))
    skipped = [
        str(item.TextValue)
        for item in sr.ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == SKIPPED_CODE[0]
    ]
    return ReadReport(device_uid, findings, referenced, skipped)
