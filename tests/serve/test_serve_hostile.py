"""The server under careless and hostile requests (issue 16): oversized chunked bodies in
bounded memory, foreign Host names, malformed multipart forms each with its own message,
decoder failures in plain words, and API docs that load nothing from a CDN.

A randomly initialised small classifier (``bench.serve.write_random_checkpoint``) is
enough: none of this depends on what the model has learned."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deploy_fixtures import ct_series, png_bytes
from fastapi.testclient import TestClient

from dxkit.bench.serve import write_random_checkpoint
from dxkit.serve.app import create_app

LOCAL = "http://127.0.0.1"
TMP = Path(tempfile.mkdtemp(prefix="dxkit-hostile-tests-"))


@functools.cache
def small_checkpoint() -> Path:
    options = {"widths": [8], "depths": [1], "strides": [2]}
    return write_random_checkpoint(TMP / "small.ckpt", "smallresnet", 32, options=options)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app([small_checkpoint()]), base_url=LOCAL)


def refused(response: Any, status: int, words: str) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    assert words.lower() in message.lower(), message
    assert "Traceback" not in message and "<class" not in message
    return message


# --- request bodies ----------------------------------------------------------------------


def _chunked_post(app: Any, chunks: int, block: int = 2**20) -> tuple[list[dict], int]:
    """POST ``chunks`` fresh blocks with no Content-Length straight into the ASGI app;
    returns the messages sent back and the peak of Python allocations meanwhile."""
    sent: list[dict] = []
    left = {"n": chunks}

    async def receive() -> dict:
        if left["n"] == 0:
            return {"type": "http.disconnect"}
        left["n"] -= 1
        return {"type": "http.request", "body": bytes(block), "more_body": left["n"] > 0}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1"), (b"transfer-encoding", b"chunked"),
                    (b"content-type", b"multipart/form-data; boundary=x")],
    }  # fmt: skip
    tracemalloc.start()
    try:
        asyncio.run(app(scope, receive, send))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return sent, peak


def test_oversized_chunked_upload_is_refused_in_bounded_memory() -> None:
    app = create_app([small_checkpoint()], max_upload_mb=48)  # refused past 49 MB
    sent, peak = _chunked_post(app, chunks=80)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"].endswith("body")))
    assert "larger than this server's limit" in body["error"]["message"]
    # Before: the body was held in memory up to the limit (≥ 49 MB); now one block at a time.
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MB while refusing an 80 MB body"


def test_chunked_upload_under_the_limit_is_served(client: TestClient) -> None:
    image = png_bytes(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    boundary = "dxkitboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + image + (
            f"\r\n--{boundary}--\r\n").encode()  # fmt: skip

    def chunks():  # no Content-Length: spooled to disk, then parsed
        for i in range(0, len(form), 100):
            yield form[i : i + 100]

    kind = {"content-type": f"multipart/form-data; boundary={boundary}"}
    r = client.post("/v1/predict", content=chunks(), headers=kind)
    assert r.status_code == 200, r.text
    same = client.post("/v1/predict", files=[("files", ("x.png", image, "image/png"))])
    assert r.json()["findings"] == same.json()["findings"]
    assert r.json()["computed_at"].endswith("+00:00")  # when, for the page's result label


# --- hosts -------------------------------------------------------------------------------


def test_foreign_host_names_are_refused(client: TestClient) -> None:
    evil = client.get("/v1/models", headers={"host": "attacker.example:8000"})
    refused(evil, 400, "--allowed-host")
    assert evil.headers["x-request-id"] == evil.json()["request_id"]
    for name in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
        assert client.get("/healthz", headers={"host": name}).status_code == 200, name
    named = TestClient(create_app([small_checkpoint()], allowed_hosts=["scanner.lan"]),
                       base_url="http://scanner.lan")  # fmt: skip
    assert named.get("/healthz").status_code == 200
    refused(named.get("/healthz", headers={"host": "localhost"}), 400, "host")


# --- malformed requests: one message each ------------------------------------------------


@pytest.mark.parametrize(
    ("request_kwargs", "status", "words"),
    [
        ({"json": {"scan": "x"}}, 400, "is application/json, not multipart/form-data"),
        ({}, 400, "has no Content-Type"),
        ({"files": [("model", (None, "m"))]}, 400, "the form has no file part"),
        ({"files": [("image", ("a.png", b"\x89PNG", "image/png"))]}, 400, "file in 'image'"),
        ({"data": {"files": "scan.dcm"}, "files": [("x", (None, "1"))]}, 422, "holds text"),
        ({"files": [("files", ("a.dcm", b"", "x"))]}, 400, "a.dcm: the file is empty"),
        ({"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400,
         "has no boundary"),
        ({"content": b"nonsense", "headers": {"content-type": "multipart/form-data; boundary=zz"}},
         400, "does not match its boundary"),
    ],
)  # fmt: skip
def test_each_malformed_request_gets_its_own_message(
    client: TestClient, request_kwargs: dict, status: int, words: str
) -> None:
    refused(client.post("/v1/predict", **request_kwargs), status, words)


def test_decoder_failures_in_plain_words(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dxkit.io.dicom

    def broken(*args: Any, **kwargs: Any) -> Any:  # what pydicom raises on odd archives
        raise AttributeError("'FileDataset' object has no attribute 'SOPClassUID'")

    monkeypatch.setattr(dxkit.io.dicom, "decode_dataset", broken)
    dicom = ct_series()[0].read_bytes()
    r = client.post("/v1/predict", files=[("files", ("odd.dcm", dicom, "application/dicom"))])
    message = refused(r, 422, "odd.dcm")
    assert "send an intact copy" in message
    assert "FileDataset" not in message and "attribute" not in message


def test_unexpected_failure_is_a_plain_json_500(monkeypatch: pytest.MonkeyPatch) -> None:
    from dxkit.serve.served import ServedModel

    def crash(self: Any, scan: Any) -> Any:
        raise KeyError("PatientName Doe^Janet")

    monkeypatch.setattr(ServedModel, "predict", crash)
    client = TestClient(create_app([small_checkpoint()]), base_url=LOCAL,
                        raise_server_exceptions=False)  # fmt: skip
    image = png_bytes(np.zeros((40, 40), np.uint8))
    r = client.post("/v1/predict", files=[("files", ("x.png", image, "image/png"))])
    refused(r, 500, "the server failed on this request")
    assert "Doe" not in r.text and "KeyError" not in r.text


# --- docs ----------------------------------------------------------------------------------


def test_docs_load_from_this_server_only(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", r.text)
        assert urls, r.text[:500]
        for url in urls:
            assert not re.match(r"(https?:)?//", url), f"{page} loads {url}"
            assert client.get(url).status_code == 200, url


def test_unsafe_checkpoint_refusal_is_whole_sentences() -> None:
    import os

    import torch

    from dxkit.errors import CheckpointError

    evil = TMP / "evil.ckpt"
    torch.save({"state_dict": {}, "dxkit": {"run": os.getcwd}}, evil)
    with pytest.raises(CheckpointError) as refused_load:
        create_app([evil])
    message = str(refused_load.value)
    assert "cannot be loaded safely" in message and "getcwd" in message
    assert message.endswith("use a checkpoint written by dxkit.")
    assert "weights_only` set to `False" not in message  # torch's unsafe advice is not passed on
    (TMP / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"damaged or not a PyTorch checkpoint"):
        create_app([TMP / "junk.ckpt"])
