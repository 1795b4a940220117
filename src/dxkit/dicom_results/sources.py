"""Source headers made fit to be referenced by new DICOM objects.

Real archives hold files that break strict builders: anonymised sets replace UIDs with
strings such as ``ID_30ea2b02d4`` (RSNA), and leave SOP Class UID only in the file meta
information or nowhere. DICOM lets us derive the SOP Class (file meta, else the modality's
storage class) and requires valid UIDs in references, so an invalid UID is replaced by a
UID derived from it (``2.25.<hash>``: the same original always maps to the same
replacement, so all results of one study stay together). The original strings are not
copied anywhere; ``SourceRefs.replaced`` only says which attributes were replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dxkit.dicom_results.identity import derived_uid
from dxkit.errors import DxkitError
from dxkit.io.dicom import lenient_values


class DicomOutputError(DxkitError, ValueError):
    """A result could not be written as DICOM (message in plain words, for any client)."""


# Storage SOP classes by modality (PS3.4 B.5), for files that do not say theirs.
MODALITY_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
# Type-2 attributes highdicom copies from the source: they must exist, and may be empty.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                "StudyTime", "ReferringPhysicianName", "AccessionNumber", "StudyID")  # fmt: skip
# Pixel-module values highdicom needs from a SEG's source image; never the pixels.
DROPPED = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class SourceRefs:
    """Linkable copies of the source headers (in the source's order) and the attribute
    keywords whose original values were not valid UIDs."""

    headers: list[Dataset]
    replaced: list[str] = field(default_factory=list)

    @property
    def study_uid(self) -> str:
        return str(self.headers[0].StudyInstanceUID)


def _valid(value: Any) -> bool:
    return bool(value) and UID(str(value)).is_valid


def sop_class_of(ds: Dataset) -> UID:
    """The header's SOP Class UID, else the file meta's, else its modality's storage class."""
    own = ds.get("SOPClassUID")
    if _valid(own):
        return UID(str(own))
    meta = getattr(ds, "file_meta", None)
    stored = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    if _valid(stored):
        return UID(str(stored))
    return UID(MODALITY_CLASSES.get(str(ds.get("Modality", "")).upper(), SECONDARY_CAPTURE))


def _fill_uids(copy: Dataset, original: Dataset, replaced: set[str], index: int) -> None:
    for keyword in UID_KEYWORDS:
        value = original.get(keyword)
        if _valid(value):
            continue
        if keyword == "FrameOfReferenceUID" and value is None:
            continue  # optional: projection images have none
        if value:
            setattr(copy, keyword, derived_uid("dxkit-source", keyword, str(value)))
        elif keyword == "SOPInstanceUID":
            # No instance UID at all: derive one from the series and the position in it.
            series = str(copy.get("SeriesInstanceUID", "")) or str(original.get("PatientID", ""))
            setattr(copy, keyword, derived_uid("dxkit-source", keyword, series, str(index)))
        else:
            seed = str(original.get("SeriesInstanceUID") or original.get("SOPInstanceUID") or "")
            setattr(copy, keyword, derived_uid("dxkit-source", keyword, seed))
        replaced.add(keyword)


def reference_headers(headers: Sequence[Dataset]) -> SourceRefs:
    """Copies of ``headers`` that new objects can reference; refuses only what cannot be
    linked at all (no headers, several studies)."""
    if not headers:
        raise DicomOutputError("DICOM output needs the source DICOM headers; none were given")
    replaced: set[str] = set()
    out = []
    with lenient_values():
        for i, ds in enumerate(headers):
            copy = Dataset()
            for element in ds:
                if element.keyword not in DROPPED:  # a new element: never edit the source's
                    copy.add(DataElement(element.tag, element.VR, element.value))
            if getattr(ds, "file_meta", None) is not None:
                copy.file_meta = ds.file_meta
            copy.SOPClassUID = sop_class_of(ds)
            _fill_uids(copy, ds, replaced, i)
            for keyword in TYPE2_COPIED:
                if keyword not in copy:
                    setattr(copy, keyword, None)
            out.append(copy)
        studies = {str(ds.StudyInstanceUID) for ds in out}
    if len(studies) > 1:
        raise DicomOutputError(
            f"the source images belong to {len(studies)} different studies; results are "
            "written into one study, so send the images of one study"
        )
    return SourceRefs(out, sorted(replaced))
