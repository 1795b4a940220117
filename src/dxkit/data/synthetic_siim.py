"""A generated SIIM-layout fixture: CR DICOM files and an RLE CSV whose masks are the bright
regions planted in the images (so a segmenter can learn them in a few epochs on CPU).

Every second image is positive: an elliptical blob (random place and size) brighter than
the textured background; negatives are background only. Images of one patient share a
PatientID (a made-up pseudonym) so patient-grouped splits can be checked. The CSV uses the
SIIM relative run-length code, with a header, and splits one positive mask over two rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from dxkit.preprocess.rle import encode_rle


def planted_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An ellipse covering roughly 2–8 % of the image, ``uint8`` 0/1."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0.25, 0.75) * shape[0], rng.uniform(0.2, 0.8) * shape[1]
    ry, rx = rng.uniform(0.12, 0.2) * shape[0], rng.uniform(0.06, 0.12) * shape[1]
    return (((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1).astype(np.uint8)


def write_cr(path: Path, pixels: np.ndarray, image_id: str, patient_id: str) -> Path:
    """An uncompressed 8-bit MONOCHROME2 CR file; ``image_id`` is the SOPInstanceUID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID(image_id)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, image_id
    ds.PatientID, ds.PatientName = patient_id, patient_id
    ds.Modality, ds.ViewPosition = "CR", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_siim_fixture(
    root: Path | str,
    n_images: int = 24,
    shape: tuple[int, int] = (96, 80),
    images_per_patient: int = 2,
    seed: int = 0,
) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Write ``root/dicom/<study>/<ImageId>.dcm`` and ``root/masks.csv``; return the DICOM
    folder, the CSV and ``{ImageId: mask}``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    dicom_dir, masks = root / "dicom", {}
    lines = ["ImageId,EncodedPixels"]
    for i in range(n_images):
        image_id = f"1.2.826.0.1.3680043.8.498.{seed}.{i + 1}"
        mask = planted_mask(shape, rng) if i % 2 else np.zeros(shape, np.uint8)
        texture = rng.normal(60, 12, shape) + np.linspace(0, 30, shape[1])[None, :]
        pixels = np.clip(texture + 110 * mask, 0, 255).astype(np.uint8)
        patient = f"SYNTH{i // images_per_patient:04d}"
        write_cr(dicom_dir / f"study{i:03d}" / f"{image_id}.dcm", pixels, image_id, patient)
        masks[image_id] = mask
        if i == 1:  # one positive mask given as two rows (two regions), as SIIM does
            top, bottom = mask.copy(), mask.copy()
            top[shape[0] // 2 :], bottom[: shape[0] // 2] = 0, 0
            lines += [f"{image_id},{encode_rle(top)}", f"{image_id},{encode_rle(bottom)}"]
        else:
            lines.append(f"{image_id},{encode_rle(mask)}")
    csv = root / "masks.csv"
    csv.write_text("\n".join(lines) + "\n")
    return dicom_dir, csv, masks
