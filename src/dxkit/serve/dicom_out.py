"""Results as DICOM, so they can go back to a PACS: the heatmap overlay as a Secondary
Capture image and the findings as a Comprehensive Structured Report, both in the input's
study (highdicom builds and validates them; install the ``dicom-out`` extra).

The outputs carry the input's patient and study modules — that is what links them to the
study in a PACS — so they go to the client who uploaded the scan and nowhere else.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from dxkit import __version__
from dxkit.io.dicom import lenient_values
from dxkit.serve.served import Explanation
from dxkit.serve.uploads import RequestError, Scan

# Dark-to-bright stops (inferno-like), the same as the web page's heatmap colours.
HEAT_STOPS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)
PRIVATE_SCHEME = "99DXKIT"


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise RequestError(
            "DICOM output needs highdicom on the server (pip install 'dxkit[dicom-out]')", 501
        ) from None
    return highdicom


def heat_colours(t: np.ndarray) -> np.ndarray:
    """0–1 values → RGB float32 ``(..., 3)`` along ``HEAT_STOPS``."""
    x = np.clip(t, 0.0, 1.0) * (len(HEAT_STOPS) - 1)
    i = np.minimum(x.astype(int), len(HEAT_STOPS) - 2)
    f = (x - i)[..., None]
    return HEAT_STOPS[i] * (1 - f) + HEAT_STOPS[i + 1] * f


def overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Grey uint8 ``(H, W)`` + 0–1 heatmap → RGB uint8 ``(H, W, 3)`` (weak evidence clear)."""
    alpha = (opacity * np.clip((heat - 0.2) / 0.8, 0.0, 1.0))[..., None]
    grey = np.repeat(image[..., None].astype(np.float32), 3, axis=-1)
    return np.rint((1 - alpha) * grey + alpha * heat_colours(heat)).astype(np.uint8)


def display_grey(slice_: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """One slice → uint8 grey: through a CT window, else stretched to its own range."""
    if window is not None:
        center, width = window
        unit = (slice_ - (center - width / 2)) / width
    else:
        lo, hi = float(slice_.min()), float(slice_.max())
        unit = (slice_ - lo) / (hi - lo) if hi > lo else np.zeros_like(slice_)
    return np.rint(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)


def _orientation(iop: Sequence[float] | None) -> tuple[str, str] | None:
    """PatientOrientation letters from ImageOrientationPatient (dominant axis of each)."""
    if iop is None or len(iop) != 6:
        return None
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    out = []
    for vector in (iop[:3], iop[3:]):
        axis = int(np.argmax(np.abs(vector)))
        out.append(letters[axis][0] if vector[axis] > 0 else letters[axis][1])
    return out[0], out[1]


# Type-2 attributes highdicom copies from the source: they must exist, and may be empty.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                "StudyTime", "ReferringPhysicianName", "AccessionNumber", "StudyID")  # fmt: skip


def _linkable(headers: Sequence[Any]) -> list[Any]:
    """Copies of the input headers with empty type-2 attributes filled in; refuses headers
    whose UIDs are not valid DICOM UIDs (anonymised sets such as RSNA's use 'ID_…')."""
    from pydicom.uid import UID

    out = []
    for ds in headers:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if not UID(str(ds.get(keyword, ""))).is_valid:
                raise RequestError(
                    f"the upload's {keyword} is not a valid DICOM UID, so results could not be "
                    "linked to its study in a PACS; DICOM output needs the original UIDs",
                    422,
                )
        copy = ds.copy()
        for keyword in TYPE2_COPIED:
            if keyword not in copy:
                setattr(copy, keyword, None)
        out.append(copy)
    return out


def _require_dicom_upload(scan: Scan) -> None:
    if not scan.dicom_headers or scan.kind not in ("dicom", "series"):
        raise RequestError("DICOM output needs a DICOM upload (one file or a series)", 422)


def check_dicom_output(scan: Scan) -> None:
    """Refuse DICOM output before any inference when the upload cannot be linked to."""
    _highdicom()
    _require_dicom_upload(scan)
    with lenient_values():
        _linkable(scan.dicom_headers)


def results_zip(
    scan: Scan,
    ex: Explanation,
    findings: list[dict[str, Any]],
    model_name: str,
    window: tuple[float, float] | None,
) -> bytes:
    """A zip with ``heatmap_sc.dcm`` and ``findings_sr.dcm`` for a DICOM upload."""
    hd = _highdicom()
    _require_dicom_upload(scan)
    # pydicom warns *and logs* invalid values it meets; the log must not carry header values.
    with lenient_values():
        return _build(hd, scan, ex, findings, model_name, window)


def _build(
    hd: Any,
    scan: Scan,
    ex: Explanation,
    findings: list[dict[str, Any]],
    model_name: str,
    window: tuple[float, float] | None,
) -> bytes:
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    plane = scan.planes["scan"]
    index = ex.peak["slice"] if plane.ndim == 4 else 0
    column = ex.slices["scan"].index(index)
    slice_ = plane[0, index] if plane.ndim == 4 else plane[0]
    top = max(float(m.max()) for m in ex.maps.values())
    heat = ex.maps["scan"][column] / top if top > 0 else ex.maps["scan"][column]
    headers = _linkable(scan.dicom_headers)
    ref = headers[index if len(headers) > 1 else 0]
    rgb = overlay(display_grey(slice_, window if scan.hounsfield else None), heat)
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ref,
            pixel_array=rgb,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=generate_uid(),
            series_number=9901,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="dxkit",
            patient_orientation=_orientation(ref.get("ImageOrientationPatient")) or ("L", "P"),
            series_description=f"dxkit heatmap: {ex.finding} ({ex.method})",
        )
        items = [
            hd.sr.TextContentItem(
                name=hd.sr.CodedConcept("MODEL", PRIVATE_SCHEME, "Model"),
                value=f"{model_name} (dxkit {__version__}); research use, not a diagnosis",
                relationship_type="CONTAINS",
            )
        ]
        for f in findings:
            concept = hd.sr.CodedConcept(f"P-{f['name']}"[:16], PRIVATE_SCHEME,
                                         f"Probability of {f['name']}")  # fmt: skip
            items.append(
                hd.sr.NumContentItem(
                    name=concept,
                    value=float(f["probability"]),
                    unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
                    relationship_type="CONTAINS",
                )
            )
            call = "positive" if f["positive"] else "negative"
            items.append(
                hd.sr.TextContentItem(
                    name=codes.DCM.Finding,
                    value=f"{f['name']}: {call} at threshold {f['threshold']:.3f}",
                    relationship_type="CONTAINS",
                )
            )
        report = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport)
        report.ContentSequence = items
        sr = hd.sr.ComprehensiveSR(
            evidence=headers,
            content=report,
            series_instance_uid=generate_uid(),
            series_number=9902,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="dxkit",
            series_description="dxkit findings",
        )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        # highdicom validates the input's identifiers (e.g. anonymised, non-UID study ids).
        raise RequestError(f"the upload's DICOM header cannot be linked to: {err}", 422) from None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, ds in (("heatmap_sc.dcm", sc), ("findings_sr.dcm", sr)):
            part = io.BytesIO()
            ds.save_as(part, enforce_file_format=True)
            zf.writestr(name, part.getvalue())
    return buf.getvalue()
