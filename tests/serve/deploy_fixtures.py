"""Models and scans shared by the serving tests (test_api, test_export, test_browser).

Models are trained once per test session (cached in a private temporary folder): a small
head-CT classifier on three windows, trained like ``dxkit demo`` on generated DICOMs, and a
MedMNIST classifier trained on the real BreastMNIST file when it is present.
"""

from __future__ import annotations

import atexit
import functools
import io
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pydicom

TMP = Path(tempfile.mkdtemp(prefix="dxkit-serve-tests-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
TINY_NET = {"widths": [8, 16], "depths": [1, 1], "strides": [2, 2]}


def _fit(raw: dict) -> Path:
    from dxkit.train.config import config_from_dict
    from dxkit.train.fit import fit

    return fit(config_from_dict(raw), progress=False).best_checkpoint


@functools.cache
def ct_checkpoint() -> Path:
    """A 64 px CT classifier (brain/subdural/bone windows) trained briefly on generated
    head-CT DICOMs with ``dxkit demo``'s recipe (the tests check serving, not accuracy)."""
    from dxkit.cli.demo import demo_config
    from dxkit.data.synthetic import generate_ct_dataset

    data = TMP / "ct-scans"
    generate_ct_dataset(data, n_patients=32, size=64, seed=0)
    raw = demo_config(data, TMP / "runs", epochs=1, seed=0)
    raw["model"]["options"] = TINY_NET
    raw["train"]["schedule"] = "cosine"  # onecycle needs more steps than one short epoch
    raw["evaluate"]["bootstrap"] = 20
    return _fit(raw)


@functools.cache
def ct_onnx() -> Path:
    from dxkit.infer.export import export_onnx

    return export_onnx(ct_checkpoint(), TMP / "onnx" / "ct.onnx")


@functools.cache
def medmnist_checkpoint(npz: Path) -> Path:
    """A 64 px classifier trained a few steps on the real BreastMNIST (28 px, so the model
    input is an upsampled image)."""
    raw = {
        "name": "breast",
        "seed": 0,
        "output_dir": str(TMP / "runs"),
        "data": {"source": "medmnist", "name": "breastmnist", "path": str(npz), "batch_size": 64},
        "preprocess": {"size": 64},
        "model": {"name": "smallresnet", "options": TINY_NET},
        "train": {
            "epochs": 1,
            "lr": 0.01,
            "schedule": "cosine",
            "limit_train_batches": 3,
            "augment": {"strength": "none"},
        },
        "evaluate": {"bootstrap": 20},
    }
    return _fit(raw)


@functools.cache
def ct_series() -> list[Path]:
    """Eight DICOM slices of one generated head-CT series (shuffled file names)."""
    from dxkit.data.synthetic import generate_ct_dataset

    out = TMP / "series"
    generate_ct_dataset(out, n_patients=1, slices_per_patient=8, size=64, positive_fraction=1.0,
                        seed=5)  # fmt: skip
    return sorted(out.rglob("*.dcm"))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def dicom_with_identity(source: Path, out: Path) -> Path:
    """A copy of a real DICOM carrying made-up patient identity (to prove it is not logged)."""
    ds = pydicom.dcmread(source)
    ds.PatientName = "Doe^Janet"
    ds.PatientID = "PHI-987654"
    ds.PatientBirthDate = "19500101"
    ds.save_as(out)
    return out


def first_rsna(rsna_dir: Path, n: int = 1) -> list[Path]:
    return sorted(rsna_dir.glob("*.dcm"))[:n]


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()
