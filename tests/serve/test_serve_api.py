"""The REST API through FastAPI's TestClient: every route, and every bad input answered
with a 4xx JSON error while the server keeps serving.

Numbers are checked against the library's own paths (``Predictor`` on the same file,
``read_series`` ordering, ``CamExplainer``), which the API must reproduce exactly.
"""

from __future__ import annotations

import base64
import io
import logging
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from deploy_fixtures import (
    ct_checkpoint,
    ct_onnx,
    ct_series,
    dicom_with_identity,
    first_rsna,
    png_bytes,
    zip_bytes,
)
from fastapi.testclient import TestClient

from dxkit.infer.predictor import Predictor
from dxkit.serve.app import create_app


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = create_app([ct_checkpoint(), ct_onnx()])
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def names(client: TestClient) -> dict[str, str]:
    models = client.get("/v1/models").json()["models"]
    return {m["backend"]: m["name"] for m in models}


@pytest.fixture(scope="module")
def strict_client() -> TestClient:
    """Tiny limits, so bombs and oversize uploads are cheap to build."""
    app = create_app([ct_checkpoint()], max_upload_mb=1, max_pixels=300_000, max_unzipped_mb=1)
    return TestClient(app, base_url="http://127.0.0.1")


def dicom_part(path: Path, name: str | None = None) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (name or path.name, path.read_bytes(), "application/dicom"))


def assert_refused(client: TestClient, response, status: int, words: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["status"] == status
    assert words.lower() in body["error"]["message"].lower(), body["error"]["message"]
    assert "Traceback" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]
    assert client.get("/healthz").status_code == 200  # still serving
    return body


# --- routes ----------------------------------------------------------------------------


def test_health_models_and_openapi(client: TestClient, names: dict[str, str]) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "models": 2}
    body = client.get("/v1/models").json()
    eager = next(m for m in body["models"] if m["backend"] == "pytorch")
    assert eager["findings"] == ["lesion"]
    assert eager["thresholds"] == {"lesion": pytest.approx(0.5)}
    assert "Hounsfield" in eager["expected_input"]
    assert eager["preprocessing"]["window_names"] == ["brain", "subdural", "bone"]
    assert eager["explain"] and "png" not in eager["accepts"]
    onnx = next(m for m in body["models"] if m["backend"] == "onnx")
    assert onnx["findings"] == ["lesion"] and not onnx["explain"]
    assert body["window_presets"]["brain"] == {"center": 40.0, "width": 80.0}
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/v1/models", "/v1/predict", "/v1/explain"} <= set(schema["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


def test_predict_real_dicom_matches_predictor(
    client: TestClient, names: dict[str, str], rsna_dir: Path
) -> None:
    path = first_rsna(rsna_dir)[0]
    r = client.post("/v1/predict", data={"model": names["pytorch"]}, files=[dicom_part(path)])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scan"]["kind"] == "dicom" and body["scan"]["hounsfield"] is True
    assert body["scan"]["planes"]["scan"] == {"slices": 1, "height": 512, "width": 512,
                                              "channels": 1}  # fmt: skip
    reference = Predictor.from_checkpoint(ct_checkpoint(), device="cpu").predict_files([path])[0]
    (finding,) = body["findings"]
    assert finding["probability"] == pytest.approx(reference.probabilities["lesion"], abs=1e-6)
    assert finding["positive"] == (finding["probability"] >= finding["threshold"])
    onnx = client.post("/v1/predict", data={"model": names["onnx"]}, files=[dicom_part(path)])
    assert onnx.json()["findings"][0]["probability"] == pytest.approx(
        finding["probability"], abs=1e-4
    )


def test_explain_real_dicom_heatmap(
    client: TestClient, names: dict[str, str], rsna_dir: Path
) -> None:
    from dxkit.explain.cam import CamExplainer
    from dxkit.io import read_scan

    path = first_rsna(rsna_dir)[0]
    r = client.post(
        "/v1/explain", data={"model": names["pytorch"], "view": "true"}, files=[dicom_part(path)]
    )
    assert r.status_code == 200, r.text
    body = r.json()
    heat = body["heatmap"]
    assert heat["finding"] == "lesion" and heat["method"] == "gradcam"
    view = heat["view"]["scan"]
    pixels = np.frombuffer(base64.b64decode(view["data"]), dtype=np.uint8)
    assert pixels.size == view["height"] * view["width"] and pixels.max() > 200
    scan_view = body["view"]["planes"]["scan"]
    assert (scan_view["height"], scan_view["width"]) == (view["height"], view["width"])
    hu = np.frombuffer(base64.b64decode(scan_view["data"]), dtype="<i2")
    assert hu.min() < -900 and hu.max() > 500  # air and skull, in Hounsfield units
    reference = CamExplainer.from_predictor(Predictor.from_checkpoint(ct_checkpoint()))
    expected = reference.explain(read_scan(path), "lesion")
    assert heat["raw_max"] == pytest.approx(float(expected.raw.max()), rel=1e-4)
    assert (heat["peak"]["row"], heat["peak"]["column"]) == expected.peak
    onnx = client.post("/v1/explain", data={"model": names["onnx"]}, files=[dicom_part(path)])
    assert_refused(client, onnx, 409, "ONNX")


def test_series_zip_and_files_agree_and_pick_the_deciding_slice(
    client: TestClient, names: dict[str, str]
) -> None:
    from dxkit.io.dicom import read_series

    files = ct_series()
    archive = zip_bytes({f"study/{p.name}": p.read_bytes() for p in files})
    as_zip = client.post(
        "/v1/explain",
        data={"model": names["pytorch"]},
        files=[("files", ("study.zip", archive, "application/zip"))],
    )
    assert as_zip.status_code == 200, as_zip.text
    as_files = client.post(
        "/v1/predict", data={"model": names["pytorch"]}, files=[dicom_part(p) for p in files]
    )
    z, f = as_zip.json(), as_files.json()
    assert z["scan"]["kind"] == "series" and z["scan"]["planes"]["scan"]["slices"] == len(files)
    per_slice = np.array(z["per_slice"]["probabilities"])[:, 0]
    assert per_slice == pytest.approx(np.array(f["per_slice"]["probabilities"])[:, 0], abs=1e-6)
    finding = z["findings"][0]
    assert finding["probability"] == pytest.approx(per_slice.max(), abs=1e-6)
    assert finding["deciding_slices"] == {"scan": int(per_slice.argmax())}
    # Slices in patient order (read_series), each scored as the Predictor scores it alone.
    (series,) = read_series(files)
    predictor = Predictor.from_checkpoint(ct_checkpoint(), device="cpu")
    expected = [p.probabilities["lesion"] for p in predictor.predict_files(series.paths)]
    assert per_slice == pytest.approx(np.array(expected), abs=1e-5)
    assert z["heatmap"]["slices"] == {"scan": list(range(len(files)))}


def test_no_patient_identity_in_logs_and_no_upload_left_behind(
    client: TestClient, names: dict[str, str], rsna_dir: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    marked = dicom_with_identity(first_rsna(rsna_dir)[0], tmp_path / "Janet_Doe.dcm")
    before = set(Path(tempfile.gettempdir()).glob("dxkit-upload-*"))
    with caplog.at_level(logging.DEBUG):
        ok = client.post("/v1/explain", data={"model": names["pytorch"]},
                         files=[dicom_part(marked)])  # fmt: skip
        bad = client.post("/v1/predict", data={"model": names["pytorch"]},
                          files=[("files", ("Janet_Doe.dcm", b"\x00" * 300, "x"))])  # fmt: skip
    assert ok.status_code == 200 and bad.status_code == 415
    assert "Janet_Doe.dcm" in bad.json()["error"]["message"]  # the client is told which file
    logged = caplog.text
    assert ok.json()["request_id"] in logged and bad.json()["request_id"] in logged
    for secret in ("Doe", "Janet", "PHI-987654", "19500101", "ID_"):
        assert secret not in logged
    assert set(Path(tempfile.gettempdir()).glob("dxkit-upload-*")) == before


# --- bad inputs: each a 4xx with a clear message -------------------------------------------


def test_wrong_or_missing_token() -> None:
    client = TestClient(
        create_app([ct_checkpoint()], token="s3cret-token"), base_url="http://127.0.0.1"
    )
    assert client.get("/healthz").status_code == 200  # liveness stays open
    body = assert_refused(client, client.get("/v1/models"), 401, "bearer token")
    assert body["error"]["type"] == "HTTPError"
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer guess"})
    assert_refused(client, wrong, 401, "bearer token")
    assert wrong.headers["www-authenticate"] == "Bearer"
    ok = client.get("/v1/models", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200
    denied = client.post("/v1/predict", files=[("files", ("a.png", b"x", "image/png"))])
    assert denied.status_code == 401


def test_oversize_request_declared_and_chunked(strict_client: TestClient) -> None:
    big = b"\x00" * (3 * 2**20)
    r = strict_client.post("/v1/predict", files=[("files", ("big.dcm", big, "x"))])
    assert_refused(strict_client, r, 413, "larger than this server's limit")

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(6):
            yield b"\x00" * 2**20

    r = strict_client.post(
        "/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert_refused(strict_client, r, 413, "larger than")


def _png_claiming(width: int, height: int) -> bytes:
    """A real 8×8 PNG whose header is rewritten to claim ``width``×``height`` pixels."""
    data = bytearray(png_bytes(np.zeros((8, 8), dtype=np.uint8)))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


def test_decompression_bombs_refused_from_headers(strict_client: TestClient) -> None:
    r = strict_client.post("/v1/predict", files=[("files", ("b.png", _png_claiming(60000, 60000),
                                                            "image/png"))])  # fmt: skip
    assert_refused(strict_client, r, 413, "")
    ds = pydicom.dcmread(ct_series()[0])
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4096, 4096, 64  # 1 G pixels promised, 8 KB sent
    buf = io.BytesIO()
    ds.save_as(buf)
    r = strict_client.post("/v1/predict", files=[("files", ("bomb.dcm", buf.getvalue(), "x"))])
    assert_refused(strict_client, r, 413, "pixel values, over this server's limit")


def test_zip_bomb_and_traversal(strict_client: TestClient) -> None:
    bomb = zip_bytes({"zeros.dcm": b"\x00" * (8 * 2**20)})  # 8 MB → ~8 KB compressed
    assert len(bomb) < 100_000
    r = strict_client.post("/v1/predict", files=[("files", ("b.zip", bomb, "application/zip"))])
    assert_refused(strict_client, r, 413, "expands to")
    dicom = ct_series()[0].read_bytes()
    for evil in ("../../etc/cron.d/x.dcm", "/tmp/abs.dcm", "ok/../../x.dcm", "C:\\win\\x.dcm"):
        archive = zip_bytes({evil: dicom})
        r = strict_client.post("/v1/predict", files=[("files", ("e.zip", archive, "x"))])
        assert_refused(strict_client, r, 400, "absolute path or '..'")


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (b"just some text, not a scan", 415, "not a file type"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 422, "not a readable image"),
        (b"\x93NUMPY garbage", 422, ".npy"),
        (b"PK\x03\x04 broken zip", 422, "zip"),
    ],
)
def test_unreadable_files(
    client: TestClient, names: dict[str, str], payload: bytes, status: int, words: str
) -> None:
    r = client.post(
        "/v1/predict", data={"model": names["pytorch"]}, files=[("files", ("u.bin", payload, "x"))]
    )
    assert_refused(client, r, status, words)


def test_truncated_dicom_and_pickled_npy(client: TestClient, names: dict[str, str]) -> None:
    model = {"model": names["pytorch"]}
    data = ct_series()[0].read_bytes()
    cut = ("files", ("cut.dcm", data[: len(data) // 2], "x"))
    assert_refused(client, client.post("/v1/predict", data=model, files=[cut]), 422, "cut.dcm")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = client.post("/v1/predict", data=model, files=[("files", ("obj.npy", buf.getvalue(), "x"))])
    assert_refused(client, r, 422, "pickle")


def test_requests_the_model_cannot_answer(client: TestClient, names: dict[str, str]) -> None:
    model = {"model": names["pytorch"]}
    dcm = dicom_part(ct_series()[0])
    r = client.post("/v1/explain", data={**model, "finding": "fracture"}, files=[dcm])
    assert_refused(client, r, 400, "'lesion'")
    r = client.post("/v1/explain", data={**model, "method": "magic"}, files=[dcm])
    assert_refused(client, r, 400, "gradcam")
    r = client.post("/v1/predict", data={"model": "nope"}, files=[dcm])
    assert_refused(client, r, 404, "no model named 'nope'")
    r = client.post("/v1/predict", data=model)
    assert_refused(client, r, 400, "no file")
    png = ("files", ("x.png", png_bytes(np.zeros((32, 32), np.uint8)), "image/png"))
    r = client.post("/v1/predict", data=model, files=[png])
    assert_refused(client, r, 422, "Hounsfield")
    r = client.post("/v1/predict", data=model, files=[png, dcm])
    assert_refused(client, r, 400, "mixes file types")
    other = pydicom.dcmread(ct_series()[1])
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    buf = io.BytesIO()
    other.save_as(buf)
    r = client.post("/v1/predict", data=model, files=[dcm, ("files", ("o.dcm", buf.getvalue(),
                                                                       "x"))])  # fmt: skip
    assert_refused(client, r, 400, "2 different series")
    r = client.post("/v1/predict", data=model, files=[("files", ("x", b"", "x"))])
    assert r.status_code in (400, 415, 422) and client.get("/healthz").status_code == 200


def test_exam_bundle_predict_and_explain(tmp_path: Path) -> None:
    bundle = untrained_exam_bundle(tmp_path / "exam" / "checkpoints" / "bundle.ckpt")
    client = TestClient(create_app([bundle]), base_url="http://127.0.0.1")
    (info,) = client.get("/v1/models").json()["models"]
    assert info["kind"] == "exam" and info["findings"] == ["abnormal", "acl", "meniscus"]
    rng = np.random.default_rng(0)
    planes = {}
    for plane, depth in (("axial", 9), ("coronal", 7), ("sagittal", 11)):
        buf = io.BytesIO()
        np.save(buf, rng.integers(0, 255, (depth, 32, 32), dtype=np.uint8))
        planes[plane] = ("0001.npy", buf.getvalue(), "application/octet-stream")
    r = client.post("/v1/explain", data={"finding": "acl", "view": "true"}, files=planes)
    assert r.status_code == 200, r.text
    body = r.json()
    from dxkit.data.exam import Exam, Series
    from dxkit.infer.exam_predict import ExamPredictor

    arrays = {p: np.load(io.BytesIO(v[1])) for p, v in planes.items()}
    exam = Exam("x", {p: Series(p, data=a, exam_id="x") for p, a in arrays.items()})
    expected = ExamPredictor.from_bundle(bundle).predict_exam(exam)
    for f in body["findings"]:
        assert f["probability"] == pytest.approx(expected[f["name"]], abs=1e-6)
        assert set(f["deciding_slices"]) == {"axial", "coronal", "sagittal"}
    acl = next(f for f in body["findings"] if f["name"] == "acl")
    assert body["heatmap"]["slices"] == {p: [s] for p, s in acl["deciding_slices"].items()}
    assert set(body["view"]["planes"]) == {"axial", "coronal", "sagittal"}
    assert body["view"]["planes"]["coronal"]["slices"] == 7
    one = client.post("/v1/predict", files=[("files", ("a.npy", planes["axial"][1], "x"))])
    assert_refused(client, one, 422, "whole exam")
    two = client.post("/v1/predict", files={k: v for k, v in planes.items() if k != "sagittal"})
    assert_refused(client, two, 400, "sagittal is missing")


def untrained_exam_bundle(path: Path) -> Path:
    """An exam bundle with random networks and a fitted plane fusion, written with the
    exam module's own ``save_exam_bundle`` (training one takes minutes)."""
    from dxkit.data.exam import IntensityNormalization
    from dxkit.infer.exam_model import BUNDLE_FORMAT, build_networks
    from dxkit.models.fusion import PlaneFusion
    from dxkit.train.exam_module import save_exam_bundle

    planes, findings = ["axial", "coronal", "sagittal"], ["abnormal", "acl", "meniscus"]
    model = {"backbone": "smallresnet", "planes": planes, "findings": findings,
             "variant": "multitask", "in_chans": 1, "pooling": "max",
             "options": {"widths": [8, 16], "depths": [1, 1], "strides": [2, 2]}}  # fmt: skip
    torch.manual_seed(0)
    networks = build_networks(model)
    rng = np.random.default_rng(0)
    fusion = PlaneFusion(planes, findings).fit(rng.random((40, 3, 3)), rng.random((40, 3)) > 0.5)
    meta = {"kind": "exam", "format": BUNDLE_FORMAT, "model": model,
            "findings": findings, "planes": planes,
            "fusion": {"state": fusion.to_state()},
            "normalization": IntensityNormalization(mean=0.4, std=0.2).to_dict(),
            "size": 32, "thresholds": [0.5, 0.4, 0.6], "dxkit_version": "test"}  # fmt: skip
    return save_exam_bundle(path, meta, networks)
