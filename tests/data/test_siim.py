"""SIIM pairing (real sample and generated folders with defects) and the segmentation dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dxkit.data.sources.siim import SegmentationDataset, load_siim, resize_pair
from dxkit.errors import DataSourceError, MissingFileError
from dxkit.preprocess.rle import encode_rle

SIIM_CSV = "train-rle-sample.csv"


def write_cr(path: Path, pixels: np.ndarray) -> Path:
    """An uncompressed 8-bit MONOCHROME2 CR file holding ``pixels`` (uint8)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID  # ImageId is the file name
    ds.Modality, ds.ViewPosition = "CR", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def blob_mask(shape: tuple[int, int], seed: int) -> np.ndarray:
    """An asymmetric blob (ellipse plus a tail), so flips and rotations are visible."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0.3, 0.6) * shape[0], rng.uniform(0.25, 0.5) * shape[1]
    mask = ((rows - cy) / (0.18 * shape[0])) ** 2 + ((cols - cx) / (0.1 * shape[1])) ** 2 < 1
    mask |= (np.abs(rows - cy) < 3) & (cols > cx) & (cols < cx + 0.3 * shape[1])
    return mask.astype(np.uint8)


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Nested folder of 64×64 images whose brightness equals their mask, plus a CSV."""
    root = tmp_path / "dicom"
    masks = {
        f"img{i}": blob_mask((64, 64), i) if i % 2 else np.zeros((64, 64), np.uint8)
        for i in range(4)
    }
    for i, (image_id, mask) in enumerate(masks.items()):
        write_cr(root / f"study{i}" / "series" / f"{image_id}.dcm", 30 + 200 * mask)
    lines = ["ImageId, EncodedPixels"]
    for image_id, mask in masks.items():
        lines.append(f"{image_id}, {encode_rle(mask)}")
    csv = tmp_path / "masks.csv"
    csv.write_text("\n".join(lines) + "\n")
    return root, csv, masks


# --- pairing ----------------------------------------------------------------------------------


def test_real_sample_pairs(siim_dir: Path) -> None:
    data = load_siim(siim_dir, siim_dir / SIIM_CSV, strict=True)
    assert len(data) == 10 and not data.skipped and not data.unlabelled
    assert data.skip_report() == ""
    assert [p.stem for p in data.image_paths] == data.ids
    assert all(shape == (1024, 1024) for shape in data.shapes)
    assert data.has_pneumothorax.dtype == np.float32 and data.has_pneumothorax.sum() == 5
    for i in range(len(data)):
        mask = data.mask(i)
        assert bool(mask.any()) == bool(data.has_pneumothorax[i])
        lengths = [int(v) for v in data.rles[i][0].split()[1::2]] if data.rles[i][0] != "-1" else []
        assert int(mask.sum()) == sum(lengths)


def test_generated_folder_pairs_nested_files(generated: tuple[Path, Path, dict]) -> None:
    root, csv, masks = generated
    data = load_siim(root, csv)
    assert data.ids == list(masks)
    np.testing.assert_array_equal(data.has_pneumothorax, [0, 1, 0, 1])
    for i, image_id in enumerate(data.ids):
        np.testing.assert_array_equal(data.mask(i), masks[image_id])
        np.testing.assert_allclose(data.image(i), (30 + 200 * masks[image_id]) / 255.0, atol=1e-6)
    sub = data.subset([3, 1])
    assert sub.ids == ["img3", "img1"] and sub.has_pneumothorax.tolist() == [1.0, 1.0]


def test_several_rows_form_one_mask(tmp_path: Path) -> None:
    a, b = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    a[2:6, 2:6], b[20:30, 10:12] = 1, 1
    write_cr(tmp_path / "d" / "x.dcm", np.zeros((32, 32)))
    (tmp_path / "m.csv").write_text(f"x,{encode_rle(a)}\nx,{encode_rle(b)}\n")
    data = load_siim(tmp_path / "d", tmp_path / "m.csv")
    assert data.sources[0].endswith("rows 1, 2 (ImageId x)")
    np.testing.assert_array_equal(data.mask(0), a | b)


def test_defects_are_listed_or_raised(tmp_path: Path, generated: tuple[Path, Path, dict]) -> None:
    root, csv, _ = generated
    write_cr(root / "extra" / "unlabelled.dcm", np.zeros((64, 64)))
    with csv.open("a") as handle:
        handle.write("ghost, -1\n")  # row 6: no image file
        handle.write("img0, 4090 10\n")  # row 7: runs past 64×64 = 4096 pixels
        handle.write("img2, 1 2 3\n")  # row 8: odd count
    data = load_siim(root, csv)
    assert data.ids == ["img1", "img3"]
    reasons = {s.image_id: s.reason for s in data.skipped}
    assert set(reasons) == {"ghost", "img0", "img2"}
    assert "no file ghost.dcm" in reasons["ghost"] and "row 6" in reasons["ghost"]
    assert "row 7 (ImageId img0)" in reasons["img0"]
    assert "past the end of the 64×64" in reasons["img0"]
    assert "row 8 (ImageId img2)" in reasons["img2"] and "odd number" in reasons["img2"]
    assert [p.stem for p in data.unlabelled] == ["unlabelled"]
    report = data.skip_report()
    assert "skipped ghost" in report and "1 DICOM file(s) have no row" in report
    with pytest.raises(DataSourceError, match=r"3 ImageId\(s\) cannot be used") as info:
        load_siim(root, csv, strict=True)
    assert "ImageId ghost" in str(info.value) and "row 7 (ImageId img0)" in str(info.value)


def test_missing_inputs(tmp_path: Path, generated: tuple[Path, Path, dict]) -> None:
    root, csv, _ = generated
    with pytest.raises(MissingFileError, match="no such folder"):
        load_siim(tmp_path / "nowhere", csv)
    with pytest.raises(MissingFileError, match="no such RLE CSV"):
        load_siim(root, tmp_path / "none.csv")


# --- segmentation dataset -------------------------------------------------------------------


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def test_dataset_shapes_and_plain_resize(generated: tuple[Path, Path, dict]) -> None:
    root, csv, masks = generated
    data = load_siim(root, csv)
    dataset = SegmentationDataset(data, size=32, augment=False)
    assert len(dataset) == 4
    image, mask = dataset[1]
    assert image.shape == mask.shape == (1, 32, 32)
    assert image.dtype == mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # Halving each side keeps about a quarter of the area (antialiased + threshold 0.5).
    assert abs(mask.sum().item() - masks["img1"].sum() / 4) <= 0.1 * masks["img1"].sum() / 4
    assert iou(image > 0.5, mask) > 0.9


def test_same_augmentation_on_image_and_mask(generated: tuple[Path, Path, dict]) -> None:
    # The image's bright region IS its mask: any mismatch in the geometric transform between
    # image and mask shows up as a low overlap between the thresholded image and the mask.
    root, csv, _ = generated
    data = load_siim(root, csv)
    dataset = SegmentationDataset(data, size=64, seed=3)
    plain = SegmentationDataset(data, size=64, augment=False)
    changed = 0
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for item in (1, 3):
            image, mask = dataset[item]
            assert mask.sum() > 0
            assert iou(image > 0.5, mask) > 0.9, f"epoch {epoch} item {item}"
            changed += int(iou(mask, plain[item][1]) < 0.95)
    assert changed >= 6  # the augmentation really moves things (flip/rotate/shift/scale)


def test_augmentation_is_seeded(generated: tuple[Path, Path, dict]) -> None:
    root, csv, _ = generated
    data = load_siim(root, csv)
    a = SegmentationDataset(data, size=64, seed=7)
    b = SegmentationDataset(data, size=64, seed=7, cache=True)
    torch.manual_seed(123)  # the global RNG must not matter
    first = a[1]
    torch.manual_seed(999)
    assert all(torch.equal(x, y) for x, y in zip(first, b[1], strict=True))
    assert all(torch.equal(x, y) for x, y in zip(first, b[1], strict=True))  # from cache
    a.set_epoch(1)
    assert not torch.equal(first[1], a[1][1])


def test_real_positive_downsized_area(siim_dir: Path) -> None:
    data = load_siim(siim_dir, siim_dir / SIIM_CSV)
    index = int(np.flatnonzero(data.has_pneumothorax)[0])
    full = data.mask(index)
    image, mask = resize_pair(data.image(index), full, 256)
    assert image.shape == (1, 256, 256) and image.min() >= 0 and image.max() <= 1
    assert mask.sum().item() == pytest.approx(full.sum() / 16, rel=0.05)
