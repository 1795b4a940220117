"""The REST routes: health, the models on offer, predict and explain (multipart uploads)."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile

from dxkit.preprocess.window import WINDOWS
from dxkit.serve.auth import require_token
from dxkit.serve.intake import ACCEPTED
from dxkit.serve.served import Explanation, Findings, ServedModel
from dxkit.serve.uploads import (
    PLANE_FIELDS,
    Limits,
    RequestError,
    Scan,
    read_upload,
    remove_workdir,
)
from dxkit.serve.view import display_side, heatmap_view, plane_view

log = logging.getLogger("dxkit.serve")
router = APIRouter()
api = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

ModelField = Annotated[
    str | None, Form(description="Model name from /v1/models (optional when only one is served)")
]
FilesField = Annotated[
    list[UploadFile] | None,
    File(description="One PNG/JPEG, one DICOM, the DICOM files of one series, or a zip of them"),
]
PlaneField = Annotated[UploadFile | None, File(description="An exam's plane as a .npy stack")]
ViewField = Annotated[
    bool, Form(description="Also return the scan (and heatmap) as arrays for display")
]


@router.get("/healthz", tags=["health"])
def healthz(request: Request) -> dict[str, Any]:
    """Liveness: the server is up and its models are loaded."""
    return {"status": "ok", "models": len(request.app.state.models)}


@api.get("/models", tags=["models"])
def list_models(request: Request) -> dict[str, Any]:
    """The served models: names, findings, thresholds, expected input and preprocessing."""
    state = request.app.state
    return {
        "models": [m.describe() for m in state.models.values()],
        "window_presets": {k: {"center": c, "width": w} for k, (c, w) in WINDOWS.items()},
        "limits": state.limits.as_dict(),
    }


def _model(request: Request, name: str | None) -> ServedModel:
    models: dict[str, ServedModel] = request.app.state.models
    if name is None or name == "":
        if len(models) == 1:
            return next(iter(models.values()))
        raise RequestError(f"several models are served; name one in 'model': {', '.join(models)}")
    if name not in models:
        raise RequestError(
            f"no model named {name!r}; this server has: {', '.join(models)}", status=404
        )
    return models[name]


@dataclass
class _Uploads:
    """The scan parts of a request, not yet read: files, or an exam's three planes."""

    files: list[UploadFile] | None
    planes: dict[str, UploadFile | None]


async def _uploads(
    request: Request,
    files: FilesField = None,
    axial: PlaneField = None,
    coronal: PlaneField = None,
    sagittal: PlaneField = None,
) -> _Uploads:
    """The upload fields predict and explain share (a FastAPI dependency); a request with
    none of them is refused with what is actually wrong with it."""
    planes = {"axial": axial, "coronal": coronal, "sagittal": sagittal}
    if not files and not any(planes.values()):
        content_type = request.headers.get("content-type", "")
        form = await request.form() if content_type.startswith("multipart/") else None
        raise RequestError(missing_file_message(content_type, form))
    return _Uploads(files, planes)


def missing_file_message(content_type: str, form: Any) -> str:
    """Why a request carries no scan: not multipart, no file part, or a misnamed one."""
    fields = "a file part named 'files' (or 'axial', 'coronal', 'sagittal' for an exam)"
    if not content_type.startswith("multipart/form-data"):
        sent = content_type.split(";")[0].strip()
        is_what = f"is {sent}" if sent else "has no Content-Type"
        return (
            f"no file was uploaded: the request {is_what}, not multipart/form-data; send the "
            f"scan as {fields}"
        )
    misnamed = sorted({k for k, v in form.multi_items() if not isinstance(v, str)})
    if misnamed:
        return (
            f"no file was uploaded under the expected name: the form has a file in "
            f"{', '.join(repr(k) for k in misnamed)}; send it as {fields}"
        )
    text = sorted(k for k in form if k in ("files", *PLANE_FIELDS))
    if text:
        return (
            f"no file was uploaded: {', '.join(repr(k) for k in text)} holds text, not a file; "
            "send it as a file part (with a filename)"
        )
    return f"no file was uploaded: the form has no file part; add {fields} ({ACCEPTED})"


UploadsField = Annotated[_Uploads, Depends(_uploads)]


def _read_scan(request: Request, uploads: _Uploads, served: ServedModel) -> Scan:
    limits: Limits = request.app.state.limits
    workdir = Path(tempfile.mkdtemp(prefix="dxkit-upload-"))  # mode 0700, ours alone
    try:
        return read_upload(
            [(f.filename or "", f.file) for f in uploads.files or []],
            {p: (f.filename or p, f.file) for p, f in uploads.planes.items() if f is not None},
            limits,
            workdir,
            radiograph=getattr(served, "radiograph_scaling", None),  # segmenters
        )
    finally:
        remove_workdir(workdir)


def _findings_json(model: ServedModel, found: Findings) -> list[dict[str, Any]]:
    positive = (
        found.positive if found.positive is not None else model.decisions(found.probabilities)
    )
    out = []
    for i, name in enumerate(model.label_names):
        item: dict[str, Any] = {
            "name": name,
            "probability": float(found.probabilities[i]),
            "threshold": model.thresholds[i],
            "positive": positive[i],
        }
        if found.deciding and found.deciding[i] is not None:
            item["deciding_slices"] = found.deciding[i]
        if found.per_plane is not None:
            item["planes"] = {p: float(v[i]) for p, v in found.per_plane.items()}
        out.append(item)
    return out


def _answer(
    request: Request, model: ServedModel, scan: Scan, found: Findings, view: bool, start: float
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": request.state.request_id,
        "model": model.name,
        "backend": model.backend,
        "task": model.task,
        "scan": scan.summary(),
        "findings": _findings_json(model, found),
        "input_warning": found.input_warning,
    }
    if found.segmentation is not None:
        body["segmentation"] = found.segmentation
    if found.per_slice is not None:
        body["per_slice"] = {
            "plane": "scan",
            "probabilities": [[round(float(p), 6) for p in row] for row in found.per_slice],
        }
    if view:
        body["view"] = {
            "planes": {
                # a radiograph is in [0, 1]: shown on the 0–255 scale of the other images
                name: plane_view(a * 255.0 if scan.kind == "radiograph" else a, scan.hounsfield)
                for name, a in scan.planes.items()
            },
            "file_windows": [{"center": c, "width": w} for c, w in scan.file_windows],
        }
    body["seconds"] = round(time.perf_counter() - start, 4)
    body["computed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return body


@api.post("/predict", tags=["predict"])
def predict(
    request: Request,
    uploads: UploadsField,
    model: ModelField = None,
    view: ViewField = False,
) -> dict[str, Any]:
    """Probability of each finding for one uploaded scan, against its threshold."""
    start = time.perf_counter()
    served = _model(request, model)
    scan = _read_scan(request, uploads, served)
    found = served.predict(scan)
    log.info("request %s: predict %s on a %s", request.state.request_id, served.name, scan.kind)
    return _answer(request, served, scan, found, view, start)


def _window(model: Any) -> tuple[float, float]:
    """The window a person would read this model's CT through: its first, else brain."""
    pre = getattr(model, "pre", None)
    windows = (pre.windows or (pre.ct.windows if pre.ct else None)) if pre else None
    return tuple(windows[0]) if windows else WINDOWS["brain"]


def _heatmap_json(scan: Scan, ex: Explanation, view: bool, model: ServedModel) -> dict[str, Any]:
    from dxkit.explain.overlay import RELEVANT, evidence_weight, scale_note

    top = max(float(m.max()) for m in ex.maps.values())
    threshold = model.thresholds[model.label_names.index(ex.finding)]
    weight = evidence_weight(ex.probability, threshold)
    out: dict[str, Any] = {
        "finding": ex.finding,
        "method": ex.method,
        "layer": ex.layer,
        "probability": ex.probability,
        "slices": ex.slices,
        "peak": ex.peak,
        "raw_max": top,
        "scale": {
            "reference": "map maximum",  # 1 = the maximum over this answer's maps
            "shared": "the slices and planes of this answer",
            "weight": weight,  # probability / threshold, at most 1
            "relevant": RELEVANT,
            "note": scale_note(ex.probability, threshold, "answer's map maximum"),
        },
    }
    if view:
        views = {}
        for plane, maps in ex.maps.items():
            a = scan.planes[plane]
            depth, channels = (a.shape[1], 1) if a.ndim == 4 else (1, a.shape[0])
            size = display_side(a.shape[-2], a.shape[-1], depth, channels)
            views[plane] = heatmap_view(maps, ex.slices[plane], size, top, weight)
        out["view"] = views
    return out


@api.post("/explain", tags=["explain"])
def explain(
    request: Request,
    uploads: UploadsField,
    model: ModelField = None,
    finding: Annotated[
        str | None, Form(description="Finding to explain (default: the most probable)")
    ] = None,
    method: Annotated[str, Form(description="gradcam, gradcam++ or occlusion")] = "gradcam",
    view: ViewField = False,
    output: Annotated[
        str,
        Form(
            description="'json', or 'dicom': a zip of a Secondary Capture (heatmap) and a "
            "Structured Report (findings) in the input's study"
        ),
    ] = "json",
) -> Any:
    """The prediction plus a heatmap of where the model looked for one finding."""
    start = time.perf_counter()
    served = _model(request, model)
    served.check_explain(method)
    if output not in ("json", "dicom"):
        raise RequestError(f"output {output!r}: use 'json' or 'dicom'")
    scan = _read_scan(request, uploads, served)
    if output == "dicom":
        from dxkit.serve.dicom_out import check_dicom_output

        check_dicom_output(scan)
    found = served.predict(scan)
    ex = served.explain(scan, finding or None, method, found)
    log.info("request %s: explain %s on a %s", request.state.request_id, served.name, scan.kind)
    if output == "dicom":
        from dxkit.serve.dicom_out import results_zip

        data = results_zip(scan, ex, _findings_json(served, found), served, _window(served))
        return Response(
            data,
            media_type="application/zip",
            headers={"content-disposition": 'attachment; filename="dxkit-results.zip"'},
        )
    body = _answer(request, served, scan, found, view, start)
    body["heatmap"] = _heatmap_json(scan, ex, view, served)
    body["seconds"] = round(time.perf_counter() - start, 4)
    return body
