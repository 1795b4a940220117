"""A real browser (Debian's chromium, driven by Playwright) uses the web page end to end:
upload a real head-CT DICOM, see the finding's probability and the heatmap, see a plain
error for a wrong file. Saves a screenshot to ``$DXKIT_SCREENSHOTS`` (if set) and /tmp."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from deploy_fixtures import ct_checkpoint, ct_series, first_rsna, png_bytes

from dxkit.infer.predictor import Predictor

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    import uvicorn

    from dxkit.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app([ct_checkpoint()]), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the dxkit server did not start on loopback")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_upload_dicom_see_findings_and_heatmap(
    server_url: str, rsna_dir: Path, tmp_path: Path
) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    dicom = first_rsna(rsna_dir)[0]
    expected = Predictor.from_checkpoint(ct_checkpoint()).predict_files([dicom])[0]
    wrong = tmp_path / "photo.png"
    wrong.write_bytes(png_bytes(np.full((32, 32), 128, np.uint8)))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page_errors: list[str] = []
            page.on("pageerror", lambda err: page_errors.append(str(err)))
            page.goto(server_url + "/")
            page.wait_for_selector("#model option", state="attached", timeout=15_000)
            page.set_input_files("#files", str(dicom))
            page.click("#analyse")
            row = page.wait_for_selector("#findings tr[data-finding=lesion]", timeout=45_000)
            canvas = page.wait_for_selector("canvas[data-heatmap=shown]", timeout=45_000)
            shown = row.inner_text()
            assert f"{expected.probabilities['lesion']:.3f}" in shown
            assert "threshold 0.500" in shown
            assert ("positive" if expected.positive["lesion"] else "negative") in shown
            assert "gradcam" in page.inner_text("#heatmap-note")
            box = canvas.bounding_box()
            assert box is not None and box["width"] > 200
            shot = Path("/tmp/serve_screenshot.png")
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("DXKIT_SCREENSHOTS"):
                folder = Path(os.environ["DXKIT_SCREENSHOTS"])
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, folder / "serve_dicom_heatmap.png")
            assert shot.stat().st_size > 20_000
            page.uncheck("#heatmap-toggle")
            assert canvas.get_attribute("data-heatmap") == "hidden"
            page.select_option("#window", "preset:bone")  # window presets redraw the slice
            assert canvas.get_attribute("data-heatmap") == "hidden"

            page.set_input_files("#files", str(wrong))
            page.click("#analyse")
            error = page.wait_for_selector("#error:not([hidden])", timeout=30_000)
            assert "Hounsfield" in error.inner_text()
            assert "Traceback" not in error.inner_text()
            assert page_errors == []
        finally:
            browser.close()


def _launch(p):  # type: ignore[no-untyped-def]
    return p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)


def _off_machine(urls: list[str]) -> list[str]:
    """Requested URLs that leave loopback (data:/blob: URLs never leave the page)."""
    return [u for u in urls if not u.startswith(("data:", "blob:"))
            and urlsplit(u).hostname not in ("127.0.0.1", "localhost", "::1")]  # fmt: skip


def test_good_bad_good_each_result_labelled_and_nothing_off_machine(
    server_url: str, tmp_path: Path
) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    first, second = ct_series()[0], ct_series()[3]
    good1, good2 = tmp_path / "first-slice.dcm", tmp_path / "second-slice.dcm"
    good1.write_bytes(first.read_bytes())
    good2.write_bytes(second.read_bytes())
    data = first.read_bytes()
    bad = tmp_path / "cut-short.dcm"
    bad.write_bytes(data[: len(data) // 2])
    with playwright.sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requested: list[str] = []  # every request that reached the network
            page.on("requestfinished", lambda r: requested.append(r.url))
            # ReDoc's sidebar asks its CDN for a logo; the docs' CSP blocks it in the browser.
            page.on("requestfailed", lambda r: requested.append(r.url)
                    if "csp" not in (r.failure or "").lower() else None)  # fmt: skip
            page_errors: list[str] = []
            page.on("pageerror", lambda err: page_errors.append(str(err)))
            page.goto(server_url + "/")
            page.wait_for_selector("#model option", state="attached", timeout=15_000)
            # A CT model is offered DICOM, never PNG/JPEG.
            accept = page.get_attribute("#files", "accept") or ""
            assert ".dcm" in accept and ".png" not in accept and "image/" not in accept
            assert "PNG" not in page.inner_text("#files-label")

            page.set_input_files("#files", str(good1))
            page.click("#analyse")
            page.wait_for_selector("#viewer:not([hidden]) canvas[data-heatmap=shown]",
                                   timeout=45_000)  # fmt: skip
            assert page.is_visible("#result")
            label = page.inner_text("#result-label")
            assert "first-slice.dcm" in label and "1 slice" in label and "computed" in label
            assert page.is_visible("#heat-legend") and "relative" in page.inner_text("#heat-scale")
            first_row = page.inner_text("#findings tr[data-finding=lesion]")

            # The next analysis clears the screen at once, before any answer comes back.
            held: list = []
            page.route("**/v1/explain", lambda route: held.append(route))
            page.set_input_files("#files", str(bad))
            page.click("#analyse")
            page.wait_for_function("document.getElementById('status').textContent.length > 0")
            assert page.is_hidden("#result") and page.is_hidden("#viewer")
            while not held:
                page.wait_for_timeout(50)
            held[0].continue_()
            page.unroute("**/v1/explain")
            error = page.wait_for_selector("#error:not([hidden])", timeout=30_000)
            assert "cut-short.dcm" in error.inner_text()
            assert page.is_hidden("#result") and page.is_hidden("#viewer")
            assert page.query_selector_all("#planes canvas") == []
            assert first_row not in page.inner_text("body")

            page.set_input_files("#files", str(good2))
            page.click("#analyse")
            page.wait_for_selector("#viewer:not([hidden]) canvas[data-heatmap=shown]",
                                   timeout=45_000)  # fmt: skip
            assert page.is_visible("#result")
            assert page.is_hidden("#error")
            label = page.inner_text("#result-label")
            assert "second-slice.dcm" in label and "first-slice" not in label
            page.screenshot(path=str(tmp_path / "good-bad-good.png"), full_page=True)
            if os.environ.get("DXKIT_SCREENSHOTS"):
                folder = Path(os.environ["DXKIT_SCREENSHOTS"])
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp_path / "good-bad-good.png", folder / "serve_good_bad_good.png")

            # The API docs render from this server's own files.
            page.goto(server_url + "/docs")
            page.wait_for_selector(".swagger-ui .info", timeout=30_000)
            assert "dxkit" in page.inner_text(".swagger-ui .info")
            page.goto(server_url + "/redoc")
            page.wait_for_selector("redoc [role=navigation], .api-content", timeout=30_000)
            assert "/v1/predict" in page.content() or "predict" in page.inner_text("body")
            assert page_errors == []
            assert requested and _off_machine(requested) == [], _off_machine(requested)
        finally:
            browser.close()
