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
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
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
# /docs and /redoc: their own files only (ReDoc's sidebar would fetch a logo from its CDN);
# inline script and style, which Swagger UI's page and ReDoc's styling need.
DOCS_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
]
DOCS_PATHS = ("/docs", "/redoc")


def _error_body(status: int, kind: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"error": {"status": status, "type": kind, "message": message}, "request_id": request_id}
    ).encode()


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SPOOL_BLOCK = 1 << 20


class Guard:
    """Outermost ASGI layer: request id, trusted hosts, request-size limit, security
    headers, one log line.

    Hosts: Starlette's ``TrustedHostMiddleware`` decides (loopback names unless told), and
    its plain-text refusal is replaced by the JSON error every other refusal uses. Size: a
    declared ``Content-Length`` over the limit is refused before the body is read; a body
    streamed without one (chunked) is copied to a private, unnamed temporary file while
    counting, refused the moment it passes the limit, and replayed from disk — memory stays
    at one block whatever the body's size.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, allowed_hosts: list[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.hosts = TrustedHostMiddleware(self._host_ok, allowed_hosts=allowed_hosts)

    async def _host_ok(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["dxkit.host_ok"] = True
        spool: IO[bytes] | None = None
        try:
            try:
                body, spool = await self._check_size(scope, receive)
            except _RefusedError as refused:
                await _reply(send, refused.status, str(refused), scope["state"]["request_id"])
                return
            await self.app(scope, body, send)
        finally:
            if spool is not None:
                spool.close()

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
            if not scope.get("dxkit.host_ok"):  # TrustedHostMiddleware refused the Host
                if message["type"] == "http.response.start":
                    status["code"] = 400
                    await _reply(send_with_headers_raw, 400, BAD_HOST, request_id)
                return
            await send_with_headers_raw(message)

        async def send_with_headers_raw(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                headers.append((b"x-content-type-options", b"nosniff"))
                if page:
                    headers.extend(PAGE_HEADERS)
                elif path in DOCS_PATHS:
                    headers.extend(DOCS_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.hosts(scope, receive, send_with_headers)
        finally:
            ms = (time.perf_counter() - start) * 1000
            log.info("request %s %s %s -> %s in %.0f ms", request_id, scope["method"], path,
                     status["code"], ms)  # fmt: skip

    async def _check_size(self, scope: Scope, receive: Receive) -> tuple[Receive, IO[bytes] | None]:
        """The body to read (``receive``, or a replay of its spool file), or ``_RefusedError``."""
        limit = self.max_bytes
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        too_big = _RefusedError(
            413,
            f"the request is larger than this server's limit of {limit // 2**20} MB "
            "(--max-upload-mb); send fewer or smaller files",
        )
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise _RefusedError(400, "Content-Length is not a number") from None
            if declared > limit:
                raise too_big
            return receive, None
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return receive, None
        # Streamed without Content-Length: spool to disk while counting, then replay.
        # 0600 and unlinked at once; closed by _host_ok once the request is answered.
        spool = tempfile.TemporaryFile(prefix="dxkit-body-")  # noqa: SIM115
        total = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    spool.close()
                    return receive, None
                block = message.get("body", b"")
                total += len(block)
                if total > limit:
                    raise too_big
                spool.write(block)  # page-cache write: cheap enough on the event loop
                if not message.get("more_body", False):
                    break
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        finished = False

        async def replay() -> Message:
            nonlocal finished
            if finished:
                return await receive()  # after the body: disconnect notices
            block = spool.read(SPOOL_BLOCK)
            finished = spool.tell() >= total
            return {"type": "http.request", "body": block, "more_body": not finished}

        return replay, spool


class _RefusedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


BAD_HOST = (
    "this server does not answer to that Host name; open it by a name it was started with "
    "(loopback by default), or start it with --allowed-host NAME"
)


async def _reply(send: Send, status: int, message: str, request_id: str) -> None:
    kind = {413: "RequestTooLarge", 400: "BadRequest"}.get(status, "BadRequest")
    body = _error_body(status, kind, message, request_id)
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


# Starlette's words for a multipart body it cannot parse → what the client should do.
_SEND_FORM = "let the HTTP client build the form (e.g. curl -F files=@scan.dcm URL)"
MULTIPART_MESSAGES = {
    "Missing boundary in multipart.": "the Content-Type multipart/form-data has no boundary; "
    + _SEND_FORM,
    "Invalid multipart data.": "the multipart body does not match its boundary (cut short or "
    "hand-built?); " + _SEND_FORM,
    "There was an error parsing the body": "the multipart body could not be parsed; " + _SEND_FORM,
}


def validation_message(error: Any) -> str:
    """One FastAPI validation error in plain words (a text value where a file belongs is
    the usual one)."""
    where = ".".join(str(x) for x in error.get("loc", ()) if x not in ("body",))
    field = where.split(".")[0] or "request"
    if "UploadFile" in str(error.get("msg", "")):
        return f"{field!r} holds text, not a file; send it as a file part (with a filename)"
    if error.get("type") == "missing":
        return f"{field!r} is required"
    return f"{where or 'request'}: {error.get('msg', 'invalid')}"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DxkitError)
    async def dxkit_error(request: Request, err: DxkitError) -> JSONResponse:
        status = _status_of(err)
        log.info("request %s refused: %s (%d)", request.state.request_id, type(err).__name__,
                 status)  # fmt: skip
        return _json_error(request, status, type(err).__name__, str(err))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        message = "; ".join(validation_message(e) for e in err.errors())
        return _json_error(request, 422, "ValidationError", message or "the request is malformed")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = err.detail if isinstance(err.detail, str) else json.dumps(err.detail)
        if err.status_code == 400:
            message = MULTIPART_MESSAGES.get(message, message)
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
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """The dxkit server for the given checkpoints/exports (loaded once, here).

    ``allowed_hosts``: the ``Host`` names requests may carry (default: loopback names only,
    which defeats DNS rebinding against a local server); ``["*"]`` accepts any.

    ``threads``: intra-op threads per inference (PyTorch's setting is process-wide; None
    leaves it); ``parallel``: inferences at a time (default: one per CPU core).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    parallel = parallel or os.cpu_count() or 1
    models = load_models([Path(p) for p in model_paths], threads=threads, parallel=parallel)
    # /docs and /redoc from Swagger UI and ReDoc files shipped in fastapi-offline: no CDN.
    app = FastAPIOffline(
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

    names = LOOPBACK_HOSTS if allowed_hosts is None else allowed_hosts
    # Host headers carry IPv6 literals in brackets, and Starlette matches them so.
    hosts = [f"[{h}]" if ":" in h and not h.startswith("[") else h.lower() for h in names]
    app.state.allowed_hosts = hosts
    app.add_middleware(
        Guard, max_bytes=app.state.limits.max_upload_bytes + 2**20, allowed_hosts=hosts
    )
    log.info("serving %d model(s): %s", len(models), ", ".join(models))
    return app
