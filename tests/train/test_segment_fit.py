"""SIIM segmentation end to end on generated radiographs: `dxkit train` → evaluate → predict.

One small run (64 px, 2 epochs, progressive 32 → 64, both decision paths) is shared by the
tests; they check the checkpoint, the patient-grouped split, the outputs of predict against
the original images and the CSV, and the report's numbers against an independent
computation with dxkit.infer.segment_decision and scikit-learn.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score

from dxkit.cli import main
from dxkit.data.synthetic_siim import write_siim_fixture
from dxkit.infer.checkpoint import checkpoint_kind, read_checkpoint
from dxkit.infer.segment_decision import mean_dice, positive_dice
from dxkit.preprocess.rle import decode_rle, decode_rows, read_rle_csv


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def siim_recipe(path: Path, dicom: Path, rle_csv: Path, out: Path, **segment: object) -> Path:
    raw = {
        "name": "siim-test",
        "task": "segment",
        "output_dir": str(out),
        "data": {
            "source": "siim",
            "path": str(dicom),
            "csv": str(rle_csv),
            "batch_size": 4,
            "val_fraction": 0.25,
            "test_fraction": 0.25,
        },
        "preprocess": {"size": 64},
        "segment": {"decision": "both", **segment},
        "train": {"epochs": 2, "lr": 0.003, "progressive_resize": [[0, 32], [1, 64]]},
        "evaluate": {"bootstrap": 200},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("siim")
    dicom, rle_csv, _ = write_siim_fixture(root / "data", n_images=24, shape=(96, 80))
    recipe = siim_recipe(root / "siim.yaml", dicom, rle_csv, root / "runs")
    assert run_cli(["train", str(recipe), "--no-evaluate"]) == 0
    run_dir = root / "runs" / "siim-test"
    assert run_cli(["evaluate", str(run_dir), "--out", str(root / "report")]) == 0
    assert run_cli(["predict", str(run_dir), str(dicom), "--out", str(root / "pred")]) == 0
    return {"root": root, "dicom": dicom, "csv": rle_csv, "run": run_dir}


def _meta(run: dict[str, Path]) -> dict:
    return read_checkpoint(run["run"] / "checkpoints" / "best.ckpt")["dxkit"]


def test_checkpoint_carries_preprocessing_and_validation_thresholds(run: dict[str, Path]) -> None:
    ckpt = run["run"] / "checkpoints" / "best.ckpt"
    assert checkpoint_kind(ckpt) == "segment"
    meta = _meta(run)
    assert meta["preprocessing"] == {"size": 64, "scaling": "bits", "in_chans": 1}
    assert meta["label_names"] == ["pneumothorax"] and meta["model"]["classifier"] is True
    th = meta["thresholds"]
    assert 0 < th["threshold"] < 1 and th["min_area"] >= 0 and 0 <= th["classifier"] <= 1
    assert th["preferred"] in ("segmenter", "classifier")
    assert meta["config"]["train"]["monitor"] == "val_dice"  # defaulted for segmentation
    rows = list(csv.DictReader((run["run"] / "metrics.csv").open()))
    assert {"val_dice", "val_dice_pos", "val_auc", "val_auc_classifier"} <= set(rows[0])


def test_split_keeps_each_patient_in_one_split(run: dict[str, Path]) -> None:
    splits = _meta(run)["splits"]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [12, 6, 6]
    patient = {
        p.stem: pydicom.dcmread(p, stop_before_pixels=True).PatientID
        for p in run["dicom"].rglob("*.dcm")
    }
    owners: dict[str, set[str]] = {}
    for name, ids in splits.items():
        for image_id in ids:
            owners.setdefault(patient[image_id], set()).add(name)
    assert all(len(s) == 1 for s in owners.values())
    # No raw patient identity in what the run wrote.
    texts = [p.read_text(errors="ignore") for p in run["root"].rglob("*.csv")]
    texts += [p.read_text() for p in run["root"].rglob("report.*")]
    assert not any("SYNTH0" in t for t in texts)


def test_predict_masks_match_images_and_submission_csv(run: dict[str, Path]) -> None:
    pred = run["root"] / "pred"
    submission = read_rle_csv(pred / "submission.csv")
    assert len(submission) == 24
    for path in run["dicom"].rglob("*.dcm"):
        shape = pydicom.dcmread(path).pixel_array.shape
        mask = np.asarray(Image.open(pred / "masks" / f"{path.stem}.png"))
        assert mask.shape == shape == (96, 80) and set(np.unique(mask)) <= {0, 255}
        overlay = np.asarray(Image.open(pred / "overlays" / f"{path.stem}.png"))
        assert overlay.shape == (*shape, 3)
        (rle,) = submission[path.stem]
        assert np.array_equal(decode_rle(rle, shape), mask // 255)
        assert (rle == "-1") == (not mask.any())


def test_report_agrees_with_independent_scores(run: dict[str, Path]) -> None:
    doc = json.loads((run["root"] / "report" / "report.json").read_text())
    test_ids = _meta(run)["splits"]["test"]
    truth_rows = read_rle_csv(run["csv"])
    pred = run["root"] / "pred"
    preds = np.stack([np.asarray(Image.open(pred / "masks" / f"{i}.png")) > 0 for i in test_ids])
    truths = np.stack([decode_rows(truth_rows[i], (96, 80)) for i in test_ids])
    dice = doc["extra"]["SIIM Dice (per image, empty rule, at the original resolution)"]
    assert dice["images"] == 6 and dice["positive images"] == int(truths.any((1, 2)).sum())
    assert dice["mean Dice"] == pytest.approx(mean_dice(preds, truths), abs=1e-12)
    assert dice["Dice on positive images"] == pytest.approx(positive_dice(preds, truths))

    table = {r["ImageId"]: r for r in csv.DictReader((pred / "predictions.csv").open())}
    y = truths.any((1, 2)).astype(int)
    decision = doc["extra"]["Image-level decision: mask vs classifier"]
    paths = {"mask_score": "mask (segmenter)", "classifier": "classifier (classifier)"}
    for column, key in paths.items():
        scores = np.array([float(table[i][column]) for i in test_ids])
        assert decision[key]["AUC"] == pytest.approx(roc_auc_score(y, scores), abs=1e-6)
    # Sensitivity/specificity of the mask path = the masks predict wrote (non-empty = called).
    called = np.asarray(preds.any(axis=(1, 2)), dtype=bool)
    mask_path = decision["mask (segmenter)"]
    assert mask_path["sensitivity"] == pytest.approx(called[y == 1].mean())
    assert mask_path["specificity"] == pytest.approx((~called[y == 0]).mean())
    aucs = {"mask": mask_path["AUC"], "classifier": decision["classifier (classifier)"]["AUC"]}
    assert decision["wins on this split (higher AUC)"] == max(aucs, key=aucs.get)  # type: ignore[arg-type]
    html = (run["root"] / "report" / "report.html").read_text()
    assert "SIIM Dice" in html and "<script" not in html.lower()


def test_predict_bad_input_names_the_file(
    run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    assert run_cli(["predict", str(run["run"]), str(bad)]) == 2
    captured = capsys.readouterr()
    assert "notes.txt" in captured.out + captured.err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert run_cli(["predict", str(run["run"]), str(broken), "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert "broken.png" in captured.out + captured.err
    # Nothing but the list of bad files is written when no radiograph could be read.
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["errors.csv"]
    assert "broken.png" in (tmp_path / "o" / "errors.csv").read_text()


def test_predict_png_gives_mask_at_its_size(run: dict[str, Path], tmp_path: Path) -> None:
    from dxkit.infer.segment_model import load_segmenter
    from dxkit.infer.segment_predict import predict_files

    path = next(run["dicom"].rglob("*.dcm"))
    Image.fromarray(pydicom.dcmread(path).pixel_array).save(tmp_path / "x.png")
    model = load_segmenter(run["run"] / "checkpoints" / "best.ckpt")
    (from_png,) = predict_files(model, [tmp_path / "x.png"])
    (from_dcm,) = predict_files(model, [path])
    assert from_png.mask.shape == (96, 80)
    assert np.array_equal(from_png.mask, from_dcm.mask)  # same pixels, same 8-bit scaling


def test_explain_writes_the_probability_map_and_its_overlay(run: dict[str, Path]) -> None:
    from dxkit.infer.segment_model import load_segmenter, mask_scores
    from dxkit.infer.segment_predict import read_image

    scans = sorted(run["dicom"].rglob("*.dcm"))[:2]
    out = run["root"] / "explain"
    args = ["explain", str(run["run"]), *map(str, scans), "--out", str(out), "--check"]
    assert run_cli(args) == 0
    summary = json.loads((out / "explain.json").read_text())
    assert summary["kind"] == "segment" and summary["method"] == "probability"
    model = load_segmenter(run["run"] / "checkpoints" / "best.ckpt")
    for scan, row in zip(scans, summary["scans"], strict=True):
        saved = np.load(out / row["files"]["map"])
        maps, cls = model.predict([read_image(scan, model)])
        # The map is the model's own output, unscaled (an independent forward pass).
        np.testing.assert_allclose(saved, maps[0], atol=1e-6)
        expected = (
            cls[0]
            if summary["decision"].startswith("classifier")
            else mask_scores(maps, int(model.thresholds["min_area"]))[0]
        )
        assert row["probability"] == pytest.approx(float(expected), abs=1e-6)
        h, w = pydicom.dcmread(scan).pixel_array.shape
        assert 0 <= row["peak"]["row"] < h and 0 <= row["peak"]["column"] < w
        assert Image.open(out / row["files"]["overlay"]).width >= w
        assert {"drop_top", "drop_random"} <= set(row["faithfulness"])


def test_explain_refuses_a_layer_for_a_segmenter(run: dict[str, Path]) -> None:
    scan = next(run["dicom"].rglob("*.dcm"))
    args = ["explain", str(run["run"]), str(scan), "--out", str(run["root"] / "x"), "--layer", "x"]
    assert run_cli(args) == 2


def test_input_guard_flags_a_ct_file_given_to_the_radiograph_segmenter(
    run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15, finding 5, for segmenters: the checkpoint profiles its training radiographs
    as read ([0, 1] after read_radiograph), and predict (CSV column, --strict-inputs), its
    ONNX export and the server flag a CT file; a held-out radiograph is not flagged."""
    import torch
    from fastapi.testclient import TestClient

    from dxkit.infer.segment_model import load_segmenter
    from dxkit.infer.segment_onnx import load_segment_model
    from dxkit.infer.segment_predict import predict_files
    from dxkit.serve.app import create_app

    ckpt = run["run"] / "checkpoints" / "best.ckpt"
    meta = _meta(run)
    profile = meta["input_profile"]
    files = {p.stem: p for p in run["dicom"].rglob("*.dcm")}
    # Independent reference: 8-bit stored values / 255 ("bits" scaling) of the train split.
    values = [pydicom.dcmread(files[i]).pixel_array / 255.0 for i in meta["splits"]["train"]]
    assert profile["modality"] == "CR" and profile["channels"] == [1] and profile["scans"] == 12
    assert profile["min"] == pytest.approx(min(float(v.min()) for v in values), abs=1e-6)
    assert profile["max"] == pytest.approx(max(float(v.max()) for v in values), abs=1e-6)

    held_out = files[meta["splits"]["test"][0]]
    ct = tmp_path / "ct.dcm"
    ds = pydicom.dcmread(held_out)
    ds.Modality = "CT"
    ds.save_as(ct)
    out = tmp_path / "pred"
    assert run_cli(["predict", str(run["run"]), str(held_out), str(ct), "--out", str(out)]) == 0
    rows = {r["ImageId"]: r for r in csv.DictReader((out / "predictions.csv").open())}
    assert rows[held_out.stem]["input_warning"] == ""
    assert "modality CT, trained on CR" in rows["ct"]["input_warning"]
    fixture_rows = list(csv.DictReader((run["root"] / "pred" / "predictions.csv").open()))
    assert len(fixture_rows) == 24 and all(r["input_warning"] == "" for r in fixture_rows)
    capsys.readouterr()
    assert run_cli(["predict", str(run["run"]), str(ct), "--strict-inputs"]) == 2
    err = capsys.readouterr().err
    assert "ct.dcm" in err and "modality CT" in err and "Traceback" not in err

    eager = predict_files(load_segmenter(ckpt), [held_out, ct])
    graph = tmp_path / "seg.onnx"
    assert run_cli(["export", str(ckpt), "--out", str(graph)]) == 0
    exported = predict_files(load_segment_model(graph), [held_out, ct])
    assert [p.input_warning for p in exported] == [p.input_warning for p in eager]
    assert eager[1].input_warning == rows["ct"]["input_warning"]

    client = TestClient(create_app([ckpt]), base_url="http://127.0.0.1")
    answers = {}
    for path in (held_out, ct):
        files_field = [("files", (path.name, path.read_bytes(), "application/dicom"))]
        r = client.post("/v1/predict", files=files_field)
        assert r.status_code == 200, r.text
        answers[path.name] = r.json()["input_warning"]
    assert answers[held_out.name] is None and answers["ct.dcm"] == eager[1].input_warning

    # A checkpoint written before the guard (no input_profile) still loads; nothing flagged.
    old = read_checkpoint(ckpt)
    del old["dxkit"]["input_profile"]
    torch.save(old, tmp_path / "old.ckpt")
    (unchecked,) = predict_files(load_segmenter(tmp_path / "old.ckpt"), [ct])
    assert unchecked.input_warning is None
