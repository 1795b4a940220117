"""Model results as DICOM objects that join the source study (one place for the server's
``output=dicom`` and the PACS integration).

- ``identity.ModelIdentity``: name, version and checkpoint hash; deterministic result UIDs.
- ``sources.reference_headers``: source headers made linkable (SOP Class derived, invalid
  UIDs replaced by derived valid ones), the only place source identifiers are handled.
- ``report.build_report``: TID 1500 measurement report (Comprehensive 3D SR).
- ``segmentation.build_segmentation``: binary DICOM SEG of a predicted mask.
- ``capture.build_heatmap_capture``: Secondary Capture heatmap, scale and warning burned in.

Every object carries the source's patient and study modules (that is what files it in the
right study); they are never logged. Needs highdicom (the ``dicom-out`` extra).
"""

from __future__ import annotations

from dxkit.dicom_results.identity import ModelIdentity, result_uid
from dxkit.dicom_results.report import Finding, build_report, read_report
from dxkit.dicom_results.sources import DicomOutputError, reference_headers

__all__ = [
    "DicomOutputError",
    "Finding",
    "ModelIdentity",
    "build_report",
    "read_report",
    "reference_headers",
    "result_uid",
]
