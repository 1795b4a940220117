"""The server's ``output=dicom``: the heatmap as a Secondary Capture and the findings as a
TID 1500 measurement report, both in the upload's study, built by ``dxkit.dicom_results``
(the same builders the PACS integration uses; install the ``dicom-out`` extra).

Uploads whose headers lack a SOP Class UID or carry non-UID identifiers (anonymised sets
such as RSNA's) are linked through derived UIDs (``dicom_results.sources``). Every failure
reaches the client as a 4xx/5xx JSON message in plain words, never Python's text. The
outputs carry the input's patient and study modules, so they go to the client who uploaded
the scan and nowhere else (never into the log).
"""

from __future__ import annotations

import io
import logging
import zipfile
from typing import Any

from dxkit import __version__
from dxkit.dicom_results import Finding, ModelIdentity, build_report, reference_headers
from dxkit.dicom_results.capture import (  # re-exported: the page and tests use them
    build_heatmap_capture,
    display_grey,
    heat_colours,
    overlay,
)
from dxkit.dicom_results.sources import DicomOutputError
from dxkit.io.dicom import lenient_values
from dxkit.serve.served import Explanation
from dxkit.serve.uploads import RequestError, Scan

__all__ = ["check_dicom_output", "display_grey", "heat_colours", "overlay", "results_zip"]
log = logging.getLogger(__name__)
BUILD_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError)


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise RequestError(
            "DICOM output needs highdicom on the server (pip install 'dxkit[dicom-out]')", 501
        ) from None
    return highdicom


def _require_dicom_upload(scan: Scan) -> None:
    if not scan.dicom_headers or scan.kind not in ("dicom", "series"):
        raise RequestError("DICOM output needs a DICOM upload (one file or a series)", 422)


def check_dicom_output(scan: Scan) -> None:
    """Refuse DICOM output before any inference when the upload cannot be linked to."""
    _highdicom()
    _require_dicom_upload(scan)
    try:
        reference_headers(scan.dicom_headers)
    except DicomOutputError as err:
        raise RequestError(str(err), 422) from None


def identity_of(model: Any) -> ModelIdentity:
    """The served model's identity: its name, the dxkit version it was made with, and the
    hash of its checkpoint file."""
    try:
        made_with = model.predictor.describe().get("dxkit_version") or __version__
    except (AttributeError, KeyError):
        made_with = __version__
    return ModelIdentity.from_checkpoint(model.path, model.name, f"dxkit {made_with}")


def results_zip(
    scan: Scan,
    ex: Explanation,
    findings: list[dict[str, Any]],
    model: Any,
    window: tuple[float, float] | None,
) -> bytes:
    """A zip with ``heatmap_sc.dcm`` and ``findings_sr.dcm`` for a DICOM upload."""
    hd = _highdicom()
    _require_dicom_upload(scan)
    try:
        # pydicom warns *and logs* invalid values it meets; the log must not carry them.
        with lenient_values():
            return _build(hd, scan, ex, findings, identity_of(model), window)
    except DicomOutputError as err:
        raise RequestError(str(err), 422) from None
    except BUILD_ERRORS as err:
        # Type only in the log and nothing of Python's text to the client: it may quote
        # header values.
        log.warning("DICOM output failed: %s", type(err).__name__)
        raise RequestError(
            "the results could not be written as DICOM for this upload (its header is "
            "missing attributes the objects need); ask for output=json instead",
            422,
        ) from None


def _build(
    hd: Any,
    scan: Scan,
    ex: Explanation,
    findings: list[dict[str, Any]],
    identity: ModelIdentity,
    window: tuple[float, float] | None,
) -> bytes:
    plane = scan.planes["scan"]
    index = ex.peak["slice"] if plane.ndim == 4 else 0
    column = ex.slices["scan"].index(index)
    slice_ = plane[0, index] if plane.ndim == 4 else plane[0]
    top = max(float(m.max()) for m in ex.maps.values())
    heat = ex.maps["scan"][column] / top if top > 0 else ex.maps["scan"][column]
    refs = reference_headers(scan.dicom_headers)
    ref_index = index if len(refs.headers) > 1 else 0
    grey = display_grey(slice_, window if scan.hounsfield else None)
    sc = build_heatmap_capture(hd, refs, ref_index, grey, heat, ex.finding, ex.method,
                               "relative to this map's maximum", identity)  # fmt: skip
    calls = [Finding(f["name"], float(f["probability"]), float(f["threshold"]),
                     bool(f["positive"])) for f in findings]  # fmt: skip
    sr = build_report(hd, refs, calls, identity)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, ds in (("heatmap_sc.dcm", sc), ("findings_sr.dcm", sr)):
            part = io.BytesIO()
            ds.save_as(part, enforce_file_format=True)
            zf.writestr(name, part.getvalue())
    return buf.getvalue()
