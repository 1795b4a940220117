"""The FastAPI application: models loaded once, REST routes, the web page, safe defaults.

``create_app`` loads every model at start-up through ``Predictor`` (``.ckpt``) or
``OnnxPredictor`` (``.onnx``). Every request gets a random id (logged, and returned in
``X-Request-ID`` and in error bodies); logs carry that id, the route, the status and the
time — never a file name, patient name or identifier. Errors are JSON
``{"error": {"status", "type", "message"}, "request_id"}``; a bad upload is a 4xx.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dxkit import __version__
from dxkit.errors import (
    ConfigError,
    DxkitError,
    InvalidScanError,
    MissingFileError,
    UnsupportedFormatError,
)
from dxkit.serve.routes import api, router
from dxkit.serve.served import load_models
from dxkit.serve.uploads import Limits, RequestError

log = logging.getLogger("dxkit.serve")
STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
]


def _error_body(status: int, kind: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"error": {"status": status, "type": kind, "message": message}, "request_id": request_id}
    ).encode()


class Guard:
    """Outermost ASGI layer: request id, request-size limit, security headers, one log line.

    The size limit is enforced on ``Content-Length`` before the body is read, and by
    counting when the body is streamed without one (chunked).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = {"code": 0}
        path: str = scope["path"]
        page = path == "/" or path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                headers.append((b"x-content-type-options", b"nosniff"))
                if page:
                    headers.extend(PAGE_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        try:
            refused = await self._check_size(scope, receive)
            if isinstance(refused, tuple):
                code, text = refused
                await self._reply(send_with_headers, code, text, request_id)
            else:
                await self.app(scope, refused, send_with_headers)
        finally:
            ms = (time.perf_counter() - start) * 1000
            log.info("request %s %s %s -> %s in %.0f ms", request_id, scope["method"], path,
                     status["code"], ms)  # fmt: skip

    async def _check_size(self, scope: Scope, receive: Receive) -> Receive | tuple[int, str]:
        limit = self.max_bytes
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        too_big = (
            413,
            f"the request is larger than this server's limit of {limit // 2**20} MB "
            "(--max-upload-mb); send fewer or smaller files",
        )
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return 400, "Content-Length is not a number"
            return too_big if declared > limit else receive
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return receive
        # Chunked upload without Content-Length: buffer while counting, then replay.
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > limit:
                return too_big
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay

    @staticmethod
    async def _reply(send: Send, status: int, message: str, request_id: str) -> None:
        body = _error_body(status, "RequestTooLarge" if status == 413 else "BadRequest",
                           message, request_id)  # fmt: skip
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _status_of(err: DxkitError) -> int:
    if isinstance(err, RequestError):
        return err.status
    if isinstance(err, UnsupportedFormatError):
        return 415
    if isinstance(err, InvalidScanError):
        return 422
    if isinstance(err, ConfigError | MissingFileError):
        return 400
    return 400


def _json_error(request: Request, status: int, kind: str, message: str, **extra: Any) -> Any:
    request_id = getattr(request.state, "request_id", "")
    body = json.loads(_error_body(status, kind, message, request_id))
    return JSONResponse(body, status_code=status, headers=extra.get("headers"))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DxkitError)
    async def dxkit_error(request: Request, err: DxkitError) -> JSONResponse:
        status = _status_of(err)
        log.info("request %s refused: %s (%d)", request.state.request_id, type(err).__name__,
                 status)  # fmt: skip
        return _json_error(request, status, type(err).__name__, str(err))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        message = "; ".join(parts) or "the request is malformed"
        return _json_error(request, 422, "ValidationError", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = err.detail if isinstance(err.detail, str) else json.dumps(err.detail)
        if err.status_code == 400 and "parsing the body" in message:
            message = "the multipart body could not be parsed; send the files as form-data"
        return _json_error(
            request, err.status_code, "HTTPError", message, headers=getattr(err, "headers", None)
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        # Type only: an exception's text may quote data from the upload.
        log.error("request %s failed: %s", getattr(request.state, "request_id", "?"),
                  type(err).__name__)  # fmt: skip
        return _json_error(
            request, 500, "InternalError", "the server failed on this request; see its log"
        )


def create_app(
    model_paths: list[Path],
    token: str | None = None,
    max_upload_mb: int = 256,
    max_pixels: int = 64 * 2**20,
    max_files: int = 1000,
    max_unzipped_mb: int = 1024,
    threads: int | None = None,
    parallel: int | None = None,
) -> FastAPI:
    """The dxkit server for the given checkpoints/exports (loaded once, here).

    ``threads``: intra-op threads per inference (PyTorch's setting is process-wide; None
    leaves it); ``parallel``: inferences at a time (default: one per CPU core).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    parallel = parallel or os.cpu_count() or 1
    models = load_models([Path(p) for p in model_paths], threads=threads, parallel=parallel)
    app = FastAPI(
        title="dxkit",
        version=__version__,
        description="Diagnosis from medical scans with heatmaps: upload a scan, get the "
        "probability of each finding against its validated threshold.",
    )
    app.state.models = models
    app.state.token = token or None
    app.state.limits = Limits(
        max_upload_bytes=max_upload_mb * 2**20,
        max_pixels=max_pixels,
        max_files=max_files,
        max_unzipped_bytes=max_unzipped_mb * 2**20,
    )
    _install_error_handlers(app)
    app.include_router(router)
    app.include_router(api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.add_middleware(Guard, max_bytes=app.state.limits.max_upload_bytes + 2**20)
    log.info("serving %d model(s): %s", len(models), ", ".join(models))
    return app
