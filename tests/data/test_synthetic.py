"""Generated head-CT DICOMs: real files pydicom reads back to the HU we planted."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dxkit.data.synthetic import (
    AIR_HU,
    BLOOD_HU,
    BRAIN_HU,
    generate_ct_dataset,
    head_phantom,
    write_ct_slice,
)


def test_phantom_tissues_and_lesion_mask() -> None:
    hu, mask = head_phantom(64, np.random.default_rng(1), lesion=True, noise_hu=0.0)
    assert hu.dtype == np.float32 and hu.shape == (64, 64)
    assert hu[0, 0] == AIR_HU
    assert (hu == 1000.0).sum() > 100  # a skull ring
    assert mask.any() and np.all(hu[mask] == BLOOD_HU)
    assert (hu == BRAIN_HU).sum() > (hu == BLOOD_HU).sum()
    _, empty = head_phantom(64, np.random.default_rng(1), lesion=False)
    assert not empty.any()


def test_written_slice_round_trips_through_pydicom(tmp_path) -> None:
    hu, _ = head_phantom(48, np.random.default_rng(2), lesion=True)
    path = write_ct_slice(
        tmp_path / "a.dcm",
        hu,
        patient_id="P1",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        instance_number=7,
        position_z=12.5,
    )
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
    assert float(ds.RescaleIntercept) == -1024.0 and ds.PixelRepresentation == 1
    assert float(ds.ImagePositionPatient[2]) == 12.5 and int(ds.InstanceNumber) == 7
    np.testing.assert_array_equal(apply_modality_lut(ds.pixel_array, ds), np.rint(hu))


def test_dataset_csv_counts(tmp_path) -> None:
    labels = generate_ct_dataset(tmp_path, 100, size=64, positive_fraction=0.3, seed=3)
    table = pd.read_csv(labels)
    assert list(table.columns) == ["path", "lesion", "patient_id"]
    assert len(table) == 100 and table["lesion"].sum() == 30
    assert all((tmp_path / p).is_file() for p in table["path"])


@pytest.mark.slow  # a speed bound: machine-dependent, so outside the default suite
def test_dataset_generation_speed(tmp_path) -> None:
    start = time.process_time()  # CPU time: robust to other jobs on a shared machine
    generate_ct_dataset(tmp_path, 100, size=64, positive_fraction=0.3, seed=3)
    elapsed = time.process_time() - start
    assert elapsed < 3.0, f"100 slices took {elapsed:.1f}s of CPU"


def test_series_are_shuffled_but_positions_ordered(tmp_path) -> None:
    labels = generate_ct_dataset(tmp_path, 2, slices_per_patient=6, seed=4)
    table = pd.read_csv(labels)
    first = table[table["patient_id"] == table["patient_id"].iloc[0]]
    z = [float(pydicom.dcmread(tmp_path / p).ImagePositionPatient[2]) for p in first["path"]]
    inst = [int(pydicom.dcmread(tmp_path / p).InstanceNumber) for p in first["path"]]
    assert z == sorted(z)  # the CSV lists slices in true order
    assert inst != sorted(inst) and sorted(inst) == list(range(1, 7))
    assert list(first["path"]) != sorted(first["path"])
    assert table["lesion"].sum() >= 1


@pytest.mark.parametrize("seed", [0, 5])
def test_same_seed_same_files(tmp_path, seed) -> None:
    a = pd.read_csv(generate_ct_dataset(tmp_path / "a", 4, seed=seed))
    b = pd.read_csv(generate_ct_dataset(tmp_path / "b", 4, seed=seed))
    pd.testing.assert_frame_equal(a, b)
    for p in a["path"]:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
