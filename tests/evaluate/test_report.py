"""The clinical evaluation report: JSON holds every number on the page, the page is
self-contained and free of patient identity, and it renders in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy.special import softmax

from dxkit.errors import ConfigError
from dxkit.evaluate.html import fmt
from dxkit.evaluate.metrics import evaluate_predictions, rsna_weights, weighted_log_loss
from dxkit.evaluate.report import render_html, write_report

CHROMIUM = Path("/usr/bin/chromium")
LABELS = ["epidural", "subdural", "any"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One multi-label report with patient groups, a validation threshold, an RSNA extra
    section and identity-bearing inputs that must not come out."""
    rng = np.random.default_rng(0)
    n = 240
    y = (rng.random((n, 3)) < [0.15, 0.3, 0.45]).astype(np.float32)
    p = np.clip(0.35 * y + 0.65 * rng.random((n, 3)), 0, 1)
    groups = np.array([f"ID_PATIENT{i // 4:05d}" for i in range(n)])
    payload = evaluate_predictions(y, p, LABELS, "multilabel", [0.45, 0.5, 0.55], groups, 200)
    payload.update(model="resnet18", split="test", dataset="rsna-sample", checkpoint="best.ckpt")
    wll = weighted_log_loss(y, p, rsna_weights(LABELS))
    extra = {
        "RSNA weighted log loss": {
            "value": wll,
            "weights": dict(zip(LABELS, [1, 1, 2], strict=True)),
        }
    }
    out = tmp_path_factory.mktemp("report")
    json_path, html_path = write_report(
        out,
        payload,
        "ich-demo: resnet18 on rsna-sample (test)",
        extra,
        header={"run": "ich-demo", "PatientName": "DOE^JANE", "Patient ID": "ID_PATIENT00001"},
    )
    return {"json": json_path, "html": html_path, "payload": payload, "wll": wll}


_CURVES = {"roc", "reliability", "precision", "recall"}  # drawn in figures, not in tables


def _json_numbers(obj: Any) -> set[str]:
    """Every number of the JSON document outside the curve arrays, formatted as on the page
    (leaving the thousands of curve points out keeps the check from passing by chance)."""
    if isinstance(obj, dict):
        kept = [v for k, v in obj.items() if k not in _CURVES]
        return set().union(*(_json_numbers(v) for v in kept)) if kept else set()
    if isinstance(obj, list):
        return set().union(*(_json_numbers(v) for v in obj)) if obj else set()
    if isinstance(obj, int | float) and not isinstance(obj, bool):
        return {fmt(obj)}
    return set()


def test_both_files_written_and_json_round_trips(report: dict[str, Any]) -> None:
    doc = json.loads(report["json"].read_text())
    assert set(doc) == {"title", "header", "metrics", "extra"}
    assert doc["metrics"]["labels"][0]["auc"] == report["payload"]["labels"][0]["auc"]
    assert doc["extra"]["RSNA weighted log loss"]["value"] == pytest.approx(report["wll"])
    # the page is a pure function of report.json: re-rendering it gives the same bytes
    assert render_html(doc) == report["html"].read_text()


def test_every_number_on_the_page_is_in_the_json(report: dict[str, Any]) -> None:
    doc = json.loads(report["json"].read_text())
    page = report["html"].read_text()
    cells = re.findall(r'<td class="num">(.*?)</td>', page)
    assert len(cells) > 60
    shown = [num for cell in cells for num in re.findall(r"-?\d+(?:\.\d+)?", cell)]
    known = _json_numbers(doc)
    missing = [s for s in shown if s not in known]
    assert not missing, f"numbers on the page but not in report.json: {missing[:10]}"
    for entry in doc["metrics"]["labels"]:  # the headline numbers are really shown
        assert f'<td class="num">{fmt(entry["auc"])}</td>' in page
        assert fmt(entry["auc_ci"][0]) in page and fmt(entry["auc_ci"][1]) in page
        assert f'<td class="num">{fmt(entry["tables"]["validation"]["sensitivity"])}</td>' in page
    assert fmt(report["wll"]) in page


def test_page_is_self_contained_with_decodable_figures(report: dict[str, Any]) -> None:
    page = report["html"].read_text()
    assert "<script" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 1 + len(LABELS)  # ROC overview + one figure row per label
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert img.format == "PNG" and img.width > 300 and img.height > 200


def test_header_and_no_patient_identity(report: dict[str, Any]) -> None:
    import dxkit

    doc = json.loads(report["json"].read_text())
    header = doc["header"]
    assert header["run"] == "ich-demo" and header["model"] == "resnet18"
    assert header["split"] == "test" and header["dataset"] == "rsna-sample"
    assert header["dxkit_version"] == dxkit.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", header["generated"])
    for path in (report["json"], report["html"]):
        text = path.read_text()
        assert "DOE^JANE" not in text and "ID_PATIENT" not in text
        assert "PatientName" not in text
    assert "resnet18" in report["html"].read_text()


def test_multiclass_and_single_class_labels_render(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 90)
    probs = softmax(rng.normal(size=(90, 3)) + 2 * np.eye(3)[labels], axis=1)
    payload = evaluate_predictions(
        np.eye(3)[labels], probs, ["a", "b", "c"], "multiclass", n_boot=50
    )
    _, html_path = write_report(tmp_path / "mc", payload, "multi-class")
    page = html_path.read_text()
    assert "Multi-class confusion matrix" in page
    assert all(f"predicted {n}" in page for n in "abc")
    y = np.zeros((20, 1))
    p = np.linspace(0.05, 0.95, 20)[:, None]
    payload = evaluate_predictions(y, p, ["finding"], "binary", [0.3], n_boot=20)
    json_path, html_path = write_report(tmp_path / "one", payload, "no positives")
    assert json.loads(json_path.read_text())["metrics"]["labels"][0]["auc"] is None
    assert "undefined" in html_path.read_text()


def test_write_report_rejects_a_payload_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="evaluate_predictions"):
        write_report(tmp_path, {"auc": 0.9}, "bad")


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report: dict[str, Any], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian chromium not installed at /usr/bin/chromium (run scripts/ensure-chromium.sh)"
        )
    shot = tmp_path / "report.png"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        report["html"].resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    assert shot.stat().st_size > 30_000
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    assert rgb.shape[:2] == (2000, 1200)
    assert rgb.mean(axis=2).std() > 20  # not a blank page
    # the inline figures were decoded and drawn: matplotlib's curve blue (#1f77b4) is only
    # in the images, never in the page's CSS
    blue = (np.abs(rgb - [31, 119, 180]).max(axis=2) < 30).sum()
    assert blue > 500, f"only {blue} curve-blue pixels: inline figures did not render"
    if os.environ.get("DXKIT_SCREENSHOTS"):
        target = Path(os.environ["DXKIT_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / "report_screenshot.png")
