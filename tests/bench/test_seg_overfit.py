"""Pieces of the SIIM overfit check (``dxkit bench seg`` part c) and the loop itself on a
tiny generated set whose image shows its mask."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dxkit.bench.seg import CSV_NAME, _precise_bn, overfit
from dxkit.models.segment import create_segmenter, init_foreground_prior
from dxkit.preprocess.rle import encode_rle


def _write_cr(path: Path, pixels: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition = "CR", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_head_starts_at_the_foreground_prior() -> None:
    torch.manual_seed(0)
    model = create_segmenter().eval()
    init_foreground_prior(model, 0.01)
    bias = model.segmentation_head[0].bias
    assert bias.item() == pytest.approx(math.log(0.01) - math.log(0.99))
    with torch.no_grad():
        probs = model(torch.rand(2, 1, 64, 64)).sigmoid()
    assert 0.001 < probs.median().item() < 0.1  # smp's zero bias would give ≈ 0.5


def test_precise_bn_uses_the_exact_statistics_of_the_images() -> None:
    torch.manual_seed(0)
    model = create_segmenter().train()
    images = torch.rand(3, 1, 64, 64)
    model(torch.rand(2, 1, 64, 64) * 5)  # running stats now far from these images'
    exact = _precise_bn(model, images)
    with torch.no_grad():
        conv1 = model.encoder.conv1(images)  # weights untouched: compute it independently
    expected = conv1.mean(dim=(0, 2, 3))
    assert torch.allclose(exact.encoder.bn1.running_mean, expected, atol=1e-5)
    assert not torch.allclose(model.encoder.bn1.running_mean, expected, atol=1e-3)
    assert model.training and not exact.training


def test_overfit_loop_reaches_the_target_on_generated_images(tmp_path: Path) -> None:
    # Ten 64² images; half carry a bright square that IS their mask, so the loop (dataset,
    # augmentation, loss, scoring) must reach the target quickly unless something is misaligned.
    rng = np.random.default_rng(0)
    lines = ["ImageId,EncodedPixels"]
    for i in range(10):
        mask = np.zeros((64, 64), np.uint8)
        if i % 2:
            r, c = rng.integers(12, 36, size=2)
            mask[r : r + 16, c : c + 16] = 1
        _write_cr(tmp_path / f"img{i}.dcm", 40 + 180 * mask + rng.integers(0, 20, (64, 64)))
        lines.append(f"img{i},{encode_rle(mask)}")
    (tmp_path / CSV_NAME).write_text("\n".join(lines) + "\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # stops at the target: a few seconds when idle; the budget covers a loaded machine
        result = overfit(tmp_path, size=64, max_seconds=60.0, eval_every=2)
    finally:
        torch.set_num_threads(threads)
    assert result["dice"] >= 0.9, result
    assert 0 < result["steps"] == 2 * result["epochs"]  # batch 5, no remainder batch
