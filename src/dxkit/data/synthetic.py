"""Generated head-CT scans written as real DICOM files, for tests, demos and benchmarks.

A head phantom in Hounsfield units (air, skull ring, brain, a little noise) with an optional
hyperdense lesion (fresh blood, ~+70 HU) is encoded exactly the way scanners do it (stored
integers + RescaleSlope/Intercept) and written with pydicom. Options reproduce the known
defects of real collections (RSNA's bad-intercept 12-bit files, missing rescale tags,
MONOCHROME1, compressed pixel data, truncated/non-DICOM files) so readers can be tested on
files built here rather than on data we cannot ship.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

Encoding = Literal["signed16", "unsigned12", "bad_intercept"]
Defect = Literal["truncated", "not_dicom", "no_pixel_data", "unsupported_syntax"]

AIR_HU = -1000.0
BONE_HU = 1000.0
BRAIN_HU = 35.0
BLOOD_HU = 70.0
# A transfer syntax (MPEG2 video) no installed pydicom pixel handler can decode.
UNSUPPORTED_SYNTAX = UID("1.2.840.10008.1.2.4.100")


def head_phantom(
    size: int = 64,
    rng: np.random.Generator | None = None,
    lesion: bool = False,
    *,
    scale: float = 1.0,
    lesion_center: tuple[float, float] | None = None,
    lesion_radius: float | None = None,
    noise_hu: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One axial head slice in HU and the boolean mask of its lesion (empty when none).

    ``scale`` shrinks the head (slices near the vertex are smaller); ``lesion_center`` (row,
    col in pixels) and ``lesion_radius`` (pixels) pin the lesion, otherwise both are random.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy = size / 2 + rng.uniform(-0.04, 0.04) * size
    cx = size / 2 + rng.uniform(-0.04, 0.04) * size
    ay, ax = 0.42 * size * scale, 0.35 * size * scale
    skull = max(1.5, 0.06 * size * scale)
    outer = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1.0
    brain = ((yy - cy) / (ay - skull)) ** 2 + ((xx - cx) / (ax - skull)) ** 2 <= 1.0
    hu = np.full((size, size), AIR_HU, dtype=np.float32)
    hu[outer] = BONE_HU
    hu[brain] = BRAIN_HU
    # Two lateral ventricles (CSF, ~5 HU) so the brain is not a flat disc.
    for side in (-1.0, 1.0):
        vent = ((yy - cy) / (0.12 * ay)) ** 2 + ((xx - cx - side * 0.12 * ax) / (0.05 * ax)) ** 2
        hu[(vent <= 1.0) & brain] = 5.0
    mask = np.zeros((size, size), dtype=bool)
    if lesion:
        radius = lesion_radius if lesion_radius is not None else rng.uniform(0.05, 0.12) * size
        if lesion_center is None:
            # Rejection-sample a centre far enough inside the brain for the whole disc.
            inner = ((yy - cy) / max(ay - skull - radius, 1.0)) ** 2 + (
                (xx - cx) / max(ax - skull - radius, 1.0)
            ) ** 2 <= 1.0
            candidates = np.argwhere(inner)
            if len(candidates) == 0:
                candidates = np.argwhere(brain)
            ly, lx = candidates[rng.integers(len(candidates))]
        else:
            ly, lx = lesion_center
        mask = ((yy - ly) ** 2 + (xx - lx) ** 2 <= radius**2) & brain
        hu[mask] = BLOOD_HU
    if noise_hu > 0:
        hu[outer] += rng.normal(0.0, noise_hu, size=int(outer.sum())).astype(np.float32)
    return hu, mask


def head_volume(
    depth: int, size: int = 64, rng: np.random.Generator | None = None, lesion: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A stack of ``depth`` axial slices ``(D, H, W)`` in HU and a spherical lesion mask.

    The head narrows towards both ends; a lesion spans a few neighbouring slices.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    hus, masks = [], []
    centre_z = int(rng.integers(depth)) if lesion else -1
    radius = rng.uniform(0.07, 0.12) * size
    lesion_yx = (
        size / 2 + rng.uniform(-0.12, 0.12) * size,
        size / 2 + rng.uniform(-0.1, 0.1) * size,
    )
    for z in range(depth):
        scale = 1.0 - 0.3 * abs((z - (depth - 1) / 2) / max(depth / 2, 1.0))
        dz = abs(z - centre_z)
        r = radius * np.sqrt(max(0.0, 1.0 - (dz / 1.5) ** 2)) if lesion else 0.0
        hu, mask = head_phantom(
            size, rng, lesion=r > 1.0, scale=scale, lesion_center=lesion_yx, lesion_radius=float(r)
        )
        hus.append(hu)
        masks.append(mask)
    return np.stack(hus), np.stack(masks)


def _encode_pixels(
    hu: np.ndarray, encoding: Encoding, slope: float, intercept: float
) -> tuple[np.ndarray, int, int]:
    """Stored integers, BitsStored and PixelRepresentation for HU under ``encoding``."""
    if encoding == "signed16":
        stored = np.clip(np.rint((hu - intercept) / slope), -32768, 32767).astype(np.int16)
        return stored, 16, 1
    if encoding == "unsigned12":
        stored = np.clip(np.rint((hu - intercept) / slope), 0, 4095).astype(np.uint16)
        return stored, 12, 0
    # RSNA's bad-intercept defect: HU stored directly, negatives wrapped modulo 4096
    # (air -1000 becomes 3096), while the header claims an intercept above -100.
    stored = np.mod(np.rint(np.clip(hu, -1000, 3095)).astype(np.int32), 4096).astype(np.uint16)
    return stored, 12, 0


@contextmanager
def _trusted_values() -> Iterator[None]:
    """Skip pydicom's per-element value validation while we write values we built ourselves.

    Validation is a third of the writing time and cannot fail on our own well-formed values.
    """
    saved = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        pydicom_config.settings.writing_validation_mode = saved


def _uid(*parts: object) -> UID:
    """A deterministic UID from the given parts (same seed, same files)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_ct_slice(
    path: Path | str,
    hu: np.ndarray,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    instance_number: int,
    position_z: float,
    sop_uid: str | None = None,
    pixel_spacing: tuple[float, float] = (0.5, 0.5),
    slice_thickness: float = 5.0,
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    encoding: Encoding = "signed16",
    slope: float = 1.0,
    intercept: float = -1024.0,
    rescale_tags: bool = True,
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2",
    window: tuple[float, float] | Sequence[tuple[float, float]] | None = (40.0, 80.0),
    padding_mask: np.ndarray | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    patient_name: str = "Phantom^Test",
) -> Path:
    """Encode ``hu`` (H, W) as a CT Image Storage DICOM file and return its path.

    ``encoding='bad_intercept'`` writes the RSNA defect (intercept forced to 1 unless given
    above -100); ``rescale_tags=False`` omits slope/intercept (raw stored values then are
    ``hu - intercept``); ``MONOCHROME1`` stores inverted values; ``padding_mask`` marks
    pixels outside the field of view, stored as the lowest value (far below air, like RSNA).
    A compressed ``transfer_syntax`` is encoded with pydicom's installed encoders.
    """
    path = Path(path)
    hu = np.asarray(hu, dtype=np.float32)
    if encoding == "bad_intercept" and intercept <= -100:
        intercept = 1.0
    stored, bits_stored, pixel_repr = _encode_pixels(hu, encoding, slope, intercept)
    if padding_mask is not None:
        stored = stored.copy()
        stored[padding_mask] = -2000 if pixel_repr == 1 else 0
    if photometric == "MONOCHROME1":
        # Inversion within the stored range: the reader undoes it before the modality LUT.
        stored = (~stored) if pixel_repr == 1 else ((1 << bits_stored) - 1 - stored)
        stored = stored.astype(np.int16 if pixel_repr == 1 else np.uint16)

    sop_uid = UID(sop_uid or _uid(study_uid, series_uid, instance_number, position_z))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid("dxkit-synthetic")
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.PatientName = patient_name  # present on purpose: exporters must leave it out
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = int(instance_number)
    ds.KVP = 120
    ds.ImagePositionPatient = [
        -0.5 * hu.shape[1] * pixel_spacing[1],
        -0.5 * hu.shape[0] * pixel_spacing[0],
        float(position_z),
    ]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = float(slice_thickness)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(hu.shape[0]), int(hu.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = pixel_repr
    if rescale_tags:
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleType = "HU"
    if window is not None:
        if isinstance(window[0], Sequence):
            ds.WindowCenter = [f"{c:g}" for c, _ in window]  # type: ignore[misc]
            ds.WindowWidth = [f"{w:g}" for _, w in window]  # type: ignore[misc]
        else:
            ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    ds.PixelData = stored.tobytes()
    if UID(transfer_syntax) != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, stored)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path | str,
    hu_volume: np.ndarray,
    *,
    patient_id: str,
    seed: int = 0,
    slice_thickness: float = 5.0,
    shuffle: bool = True,
    **slice_kwargs: object,
) -> list[Path]:
    """Write a ``(D, H, W)`` HU volume as one series; returns paths in true slice order.

    With ``shuffle`` the file names are random and the InstanceNumbers a random permutation,
    so only ImagePositionPatient tells the true order (as in real exports).
    """
    rng = np.random.default_rng(seed)
    depth = hu_volume.shape[0]
    study_uid = _uid("study", patient_id, seed)
    series_uid = _uid("series", patient_id, seed)
    instances = rng.permutation(depth) + 1 if shuffle else np.arange(depth) + 1
    paths = []
    for z in range(depth):
        name = f"CT_{rng.integers(16**10):010x}.dcm" if shuffle else f"CT_{z + 1:04d}.dcm"
        paths.append(
            write_ct_slice(
                Path(folder) / name,
                hu_volume[z],
                patient_id=patient_id,
                study_uid=study_uid,
                series_uid=series_uid,
                instance_number=int(instances[z]),
                position_z=z * slice_thickness,
                slice_thickness=slice_thickness,
                **slice_kwargs,  # type: ignore[arg-type]
            )
        )
    return paths


def generate_ct_dataset(
    out_dir: Path | str,
    n_patients: int,
    slices_per_patient: int = 1,
    size: int = 64,
    positive_fraction: float = 0.5,
    seed: int = 0,
    *,
    encoding: Encoding = "signed16",
    shuffle: bool = True,
) -> Path:
    """Write a labelled folder of head-CT DICOMs plus ``labels.csv`` and return the CSV path.

    ``labels.csv`` has ``path,lesion,patient_id`` (paths relative to ``out_dir``), one row per
    slice; ``lesion`` is 1 when the slice shows blood. Exactly
    ``round(positive_fraction * n_patients)`` patients have a lesion. Several slices per
    patient go into one series folder per patient, with shuffled names and InstanceNumbers.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    positive = np.zeros(n_patients, dtype=bool)
    positive[rng.permutation(n_patients)[: round(positive_fraction * n_patients)]] = True
    rows: list[tuple[str, int, str]] = []
    with _trusted_values():
        for p in range(n_patients):
            patient_id = f"PAT{seed:03d}{p:05d}"
            if slices_per_patient == 1:
                hu, mask = head_phantom(size, rng, lesion=bool(positive[p]))
                hu_vol, mask_vol = hu[None], mask[None]
            else:
                hu_vol, mask_vol = head_volume(slices_per_patient, size, rng, bool(positive[p]))
            paths = write_series(
                out / patient_id if slices_per_patient > 1 else out,
                hu_vol,
                patient_id=patient_id,
                seed=seed * 100_003 + p,
                shuffle=shuffle,
                encoding=encoding,
            )
            for z, path in enumerate(paths):
                rel = path.relative_to(out).as_posix()
                rows.append((rel, int(mask_vol[z].any()), patient_id))
    labels = out / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "lesion", "patient_id"])
        writer.writerows(rows)
    return labels


def write_defect(path: Path | str, kind: Defect, size: int = 32) -> Path:
    """Write a broken file of the given ``kind`` (named like a DICOM) for error-path tests."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hu, _ = head_phantom(size, np.random.default_rng(0))

    def valid_file() -> None:
        write_ct_slice(
            path,
            hu,
            patient_id="DEFECT",
            study_uid=_uid("defect-study"),
            series_uid=_uid("defect"),
            instance_number=1,
            position_z=0.0,
        )

    if kind == "not_dicom":
        path.write_bytes(b"this is a text file, not a DICOM file\n" * 4)
    elif kind == "truncated":
        valid_file()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - size * size])  # cut half-way through PixelData
    elif kind == "no_pixel_data":
        valid_file()
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path, enforce_file_format=True)
    elif kind == "unsupported_syntax":
        valid_file()
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = UNSUPPORTED_SYNTAX
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    else:
        raise ValueError(f"unknown defect kind {kind!r}; use one of {Defect.__args__}")
    return path
