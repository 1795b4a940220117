"""Issue 15, findings 6–8: undefined metrics named with their reason in the console line
and the report summary, metric labels per dataset, three decimals, empty patient ids
reported as missing (bootstrap unit 'scan'), ``explore --csv`` honoured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dxkit.evaluate.explore import explore_source
from dxkit.evaluate.explore_catalog import Catalog
from dxkit.evaluate.explore_summary import patient_summary
from dxkit.evaluate.metrics import evaluate_predictions
from dxkit.evaluate.report import write_report
from dxkit.evaluate.verdicts import score_line, undefined_reasons


def _all_negative() -> dict:
    y = np.zeros((12, 1), np.float32)
    p = np.linspace(0.1, 0.9, 12, dtype=np.float32)[:, None]
    return evaluate_predictions(y, p, ["hemorrhage"], "binary", n_boot=10)


def test_console_line_names_the_undefined_auc_and_rounds() -> None:
    payload = _all_negative()
    assert undefined_reasons(payload) == {"hemorrhage": "only negatives in this split"}
    line = score_line("valid", {"auc": float("nan"), "acc": 0.7200000286102295}, payload)
    assert line == "valid: AUC undefined: only negatives in this split, ACC 0.720"
    assert score_line("test", {"auc": 0.91234, "acc": 0.5}) == "test: AUC 0.912, ACC 0.500"


def test_report_summary_gives_the_reason_and_the_right_metric_name(tmp_path: Path) -> None:
    payload = _all_negative() | {"source": "folder"}
    _, html_path = write_report(tmp_path, payload, title="t")
    page = html_path.read_text()
    assert "AUC of hemorrhage undefined: only negatives in this split" in page
    assert "MedMNIST AUC" not in page and "AUC (one-vs-rest" in page
    _, html_path = write_report(tmp_path / "m", _all_negative() | {"source": "medmnist"}, "t")
    assert "MedMNIST AUC" in html_path.read_text()


def test_empty_patient_ids_are_missing_not_one_patient() -> None:
    y = (np.arange(20) % 2).astype(np.float32)[:, None]
    p = np.linspace(0, 1, 20, dtype=np.float32)[:, None]
    out = evaluate_predictions(y, p, ["x"], "binary", groups=np.array([""] * 20), n_boot=10)
    assert out["bootstrap"]["unit"] == "scan (no patient ids)"
    assert out["bootstrap"]["n_units"] == 20
    cat = Catalog(
        kind="siim",
        name="x",
        path=Path("."),
        item="file",
        task=None,
        label_names=[],
        class_names=[],
        splits=np.array(["all"] * 5),
        labels=np.zeros((5, 0), np.float32),
        read=lambda i: None,  # type: ignore[arg-type,return-value]
        groups=np.array([""] * 5),
    )
    summary = patient_summary(cat, show_ids=False, salt="s")
    assert summary["missing"] == 5 and not summary["checked"]
    assert "identity missing" in summary["note"] and "total" not in summary


def test_explore_csv_option_is_honoured_when_detecting_the_kind(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    rows = []
    for i in range(6):
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(scans / f"{i}.png")
        rows.append(f"{i}.png,{i % 2}")
    labels = tmp_path / "elsewhere.csv"  # not in the folder: only --csv names it
    labels.write_text("path,finding\n" + "\n".join(rows) + "\n")
    exploration = explore_source(scans, csv=labels, max_images=6)
    assert exploration.summary["source"]["kind"] == "folder"
    assert exploration.summary["counts"]["total"] == 6
