"""Issue 15, the newcomer test: a folder of labelled scans in each common layout goes
``dxkit init`` → ``train`` → ``evaluate`` / ``predict`` / ``explore`` (/ ``explain``)
without a hand-written file, and no command prints a traceback.

``init`` runs on every layout in the default suite; the whole chain runs there for two
2-D layouts (tiny images, one epoch) and for the rest under ``-m slow``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dxkit.cli import main
from dxkit.train.config import load_config


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out + captured.err


def _png(path: Path, side: int, positive: bool, seed: int, mode: str = "L") -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 90, (side, side + seed % 5, 4), dtype=np.uint8)
    if positive:
        a[side // 4 : side // 2, side // 4 : side // 2] += 150
    path.parent.mkdir(parents=True, exist_ok=True)
    img = a[..., 0] if mode == "L" else a[..., :3] if mode == "RGB" else a
    Image.fromarray(img, mode).save(path)


def class_folders_with_splits(root: Path) -> Path:
    for s, (split, n) in enumerate([("train", 8), ("valid", 4), ("test", 4)]):
        for y, cls in enumerate(["0_normal", "1_abnormal"]):
            for i in range(n):
                mode = "RGB" if i % 3 == 0 else "L"
                _png(root / split / cls / f"{i}.png", 20 + i, bool(y), 100 * s + 10 * y + i, mode)
    return root


def class_folders(root: Path) -> Path:
    for y, cls in enumerate(["normal", "pneumonia"]):
        for i in range(12):
            _png(root / cls / f"{cls}_{i}.png", 18 + i, bool(y), 10 * y + i)
    return root


def id_csv(root: Path) -> Path:
    lines = ["id, hemorrhage"]
    for i in range(24):
        _png(
            root / "head_ct" / f"{i:03d}.png", 20 + 3 * i, bool(i % 2), i, "RGBA" if i % 4 else "L"
        )
        lines.append(f"{i},{i % 2}")
    (root / "hemorrhage.csv").write_text("\n".join(lines) + "\n")
    return root


def path_csv(root: Path) -> Path:
    rng = np.random.default_rng(1)
    lines = ["path,effusion,patient_id"]
    (root / "arrays").mkdir(parents=True)
    for i in range(24):
        a = rng.normal(100, 20, (24, 24)).astype(np.float32)
        a[6:12, 6:12] += 120 * (i % 2)
        np.save(root / "arrays" / f"s{i}.npy", a)
        lines.append(f"arrays/s{i}.npy,{i % 2},P{i // 2}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def dicom_ct_tree(root: Path) -> Path:
    from dxkit.data.synthetic import write_ct_slice

    rng = np.random.default_rng(2)
    for y, cls in enumerate(["no_bleed", "bleed"]):
        for i in range(10):
            hu = rng.normal(30, 8, (24, 24)).astype(np.float32)
            hu[8:14, 8:14] += 45 * y
            write_ct_slice(
                root / cls / f"p{i}" / "slice.dcm",
                hu,
                patient_id=f"P{y}{i}",
                study_uid=f"1.2.3.{y}.{i}",
                series_uid=f"1.2.3.{y}.{i}.1",
                instance_number=1,
                position_z=0.0,
            )
    return root


def medmnist_npz(root: Path) -> Path:
    rng = np.random.default_rng(3)
    arrays = {}
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        y = (np.arange(n) % 2).astype(np.uint8)[:, None]
        x = rng.integers(0, 90, (n, 28, 28), dtype=np.uint8)
        x[y[:, 0] == 1, 8:16, 8:16] += 150
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    root.mkdir(parents=True)
    np.savez(root / "breastmnist.npz", **arrays)
    return root / "breastmnist.npz"


def mrnet(root: Path) -> Path:
    from dxkit.data.synthetic_mrnet import write_mrnet_fixture

    return write_mrnet_fixture(root, 8, 4, size=32, slices=(3, 5))


def siim(root: Path) -> Path:
    from dxkit.data.synthetic_siim import write_siim_fixture

    write_siim_fixture(root, n_images=16, shape=(64, 64))
    return root


LAYOUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "class folders + splits": (class_folders_with_splits, "class_folders"),
    "class folders": (class_folders, "class_folders"),
    "id column CSV": (id_csv, "csv_ids"),
    "path CSV + patients": (path_csv, "csv"),
    "DICOM CT tree": (dicom_ct_tree, "class_folders"),
    "MedMNIST npz": (medmnist_npz, "medmnist"),
    "MRNet": (mrnet, "mrnet"),
    "SIIM": (siim, "siim"),
}
FAST = {"class folders + splits", "id column CSV"}
TINY = {
    "classify": ["preprocess.size=16", "model.options.widths=[4,8,8]", "data.batch_size=8"],
    "exam": ["preprocess.size=16", "exam.fusion_folds=2", "model.options.widths=[4,8]"],
    "segment": ["preprocess.size=32", "data.batch_size=4"],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_init_recognises_the_layout_and_writes_a_config_that_loads(
    layout: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer, expected = LAYOUTS[layout]
    data = writer(tmp_path / "data")
    out = tmp_path / "cfg.yaml"
    code, text = run(["init", str(data), "--out", str(out)], capsys)
    assert code == 0, text
    assert "Traceback" not in text
    header = out.read_text()
    assert f": {expected} layout." in header.splitlines()[0]
    cfg = load_config(out)
    if expected in ("class_folders", "csv", "csv_ids"):
        assert cfg.data.source == "folder" and "leakage risk" in text
    if layout == "id column CSV":
        assert (cfg.data.id_column, cfg.data.path_pattern) == ("id", "head_ct/{id:03d}.png")
        assert re.search(r"largest side 20–92 px", text)
    if layout == "DICOM CT tree":
        assert cfg.preprocess.windows and "CT ×20" in text
        # split by patient from the DICOM PatientIDs, which appear nowhere as they are
        assert "patients: 20 (DICOM PatientID, hashed)" in text and "leakage risk: none" in text
        assert "P01" not in text and "P01" not in header
    if layout == "path CSV + patients":
        assert "patients: 12" in text and "leakage risk: none" in text
    # init never overwrites silently
    code, text = run(["init", str(data), "--out", str(out)], capsys)
    assert code == 2 and "--force" in text


def test_init_on_unlabelled_scans_says_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(3):
        _png(tmp_path / "scans" / f"{i}.png", 16, False, i)
    code, text = run(["init", str(tmp_path / "scans"), "--out", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and "no labels found" in text and "Traceback" not in text
    assert not (tmp_path / "c.yaml").exists()


def _first_scan(data: Path) -> Path:
    return next(p for p in sorted(data.rglob("*")) if p.suffix in (".png", ".npy", ".dcm"))


@pytest.mark.parametrize(
    "layout",
    [pytest.param(name, marks=[] if name in FAST else [pytest.mark.slow]) for name in LAYOUTS],
)
def test_newcomer_goes_from_init_to_report_without_a_traceback(
    layout: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer, _ = LAYOUTS[layout]
    data = writer(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    outputs = []

    def ok(argv: list[str]) -> str:
        code, text = run(argv, capsys)
        outputs.append(text)
        assert code == 0, f"dxkit {' '.join(argv)} exited {code}:\n{text}"
        return text

    ok(["init", str(data), "--out", "cfg.yaml"])
    recipe = yaml.safe_load(Path("cfg.yaml").read_text())
    task = recipe["task"]
    sets = [*TINY[task], "train.epochs=1", "evaluate.bootstrap=20", "output_dir=runs"]
    ok(["train", "cfg.yaml", *[a for s in sets for a in ("--set", s)]])
    run_dir = tmp_path / "runs" / recipe["name"]
    assert run_dir.is_dir()
    ok(["evaluate", str(run_dir)])
    if task == "exam":
        ok(["predict", str(run_dir), str(data / "valid"), "--out", "pred.csv"])
    else:
        if data.is_file():  # MedMNIST: a scan of its own kind, as a PNG
            scan = tmp_path / "one.png"
            Image.fromarray(np.load(data)["test_images"][0]).save(scan)
        else:
            scan = _first_scan(data)
        ok(["predict", str(run_dir), str(scan), "--out", "pred.csv"])
        if task == "classify":
            ok(["explain", str(run_dir), str(scan), "--out", "heatmaps"])
    ok(["explore", str(data), "--out", "explore"])
    assert all("Traceback" not in text for text in outputs)
    assert Path("pred.csv").is_file()
