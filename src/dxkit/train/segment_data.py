"""SIIM data for training a segmenter: load, split by patient, and a training set whose size
can change per epoch (progressive resizing).

Patients: images are grouped by the DICOM PatientID, read from the header and turned at once
into a one-way hash (``patient_groups``), so no raw identifier is kept, logged or saved; an
image without a PatientID is its own group. The split is ``dxkit.data.splits.split_indices``
(patients never straddle splits, stratified on "has pneumothorax", seeded).

Progressive resizing here resizes in the dataset, not the batch: image and mask are both
resampled from the original 1024² pair (``resize_pair``: antialiased image, thresholded mask)
at the epoch's size, so a small epoch sees the same lesion outline a 1024 → size resize gives,
not a blurred downscale of a downscale.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dxkit.data.sources.siim import SegmentationDataset, SiimData, load_siim
from dxkit.data.splits import split_indices
from dxkit.errors import ConfigError, DataSourceError, DxkitError
from dxkit.io.dicom import open_dataset
from dxkit.io.headers import read_header
from dxkit.io.radiograph import Scaling
from dxkit.preprocess.input_profile import profile_inputs
from dxkit.train.config import RunConfig

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def load_siim_data(cfg: RunConfig) -> SiimData:
    """The SIIM images and masks named by ``cfg.data`` (path = DICOM folder, csv = RLE CSV)."""
    d = cfg.data
    if d.source != "siim":
        raise ConfigError(
            f"data.source {d.source!r}: task: segment trains on data.source: siim "
            "(a DICOM folder and an ImageId,EncodedPixels CSV)"
        )
    if d.path is None or d.csv is None:
        raise ConfigError(
            "task: segment needs data.path (the folder of SIIM .dcm files) and data.csv "
            "(the RLE CSV, e.g. train-rle-sample.csv)"
        )
    data = load_siim(d.path, d.csv, strict=cfg.segment.strict)
    if data.skipped:
        log.warning("SIIM: %d ImageId(s) skipped (segment.strict is false)", len(data.skipped))
    if len(data) == 0:
        raise DataSourceError(f"{d.csv}: no usable image/mask pair under {d.path}")
    return data


def patient_groups(paths: Sequence[Path]) -> np.ndarray:
    """One opaque group key per image: a hash of its PatientID (header only, never kept)."""
    keys = []
    for path in paths:
        try:
            pid = str(open_dataset(path, stop_before_pixels=True).get("PatientID") or "")
        except DxkitError:
            pid = ""
        # An image without PatientID cannot be grouped; it counts as its own patient.
        text = f"patient:{pid}" if pid else f"image:{Path(path).name}"
        keys.append(hashlib.sha256(text.encode()).hexdigest()[:16])
    return np.asarray(keys)


def split_siim(cfg: RunConfig, data: SiimData) -> dict[str, list[str]]:
    """ImageIds of train/val/test: by patient, stratified on has_pneumothorax, seeded."""
    if len(data) < 3:
        raise DataSourceError(f"{len(data)} images are too few for train and validation splits")
    index = split_indices(
        len(data),
        labels=data.has_pneumothorax,
        groups=patient_groups(data.image_paths),
        fractions=(cfg.data.val_fraction, cfg.data.test_fraction),
        seed=cfg.seed,
    )
    return {name: [data.ids[i] for i in index[name]] for name in SPLITS}


def indices_of(data: SiimData, ids: Sequence[str], where: str) -> list[int]:
    """Positions of ``ids`` in ``data`` (an error naming the first missing ImageIds)."""
    position = {image_id: i for i, image_id in enumerate(data.ids)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise DataSourceError(
            f"{where}: {len(missing)} ImageId(s) of the split are not in the data "
            f"(e.g. {missing[:3]}); evaluate with the DICOM folder and CSV it was trained on"
        )
    return [position[i] for i in ids]


def training_radiograph_profile(
    data: SiimData, train_ids: Sequence[str], scaling: Scaling, seed: int = 0, max_scans: int = 64
) -> dict[str, object]:
    """The input guard's profile of up to ``max_scans`` training radiographs (seeded), *as
    read* the way ``dxkit predict`` reads a radiograph: ``read_radiograph`` with the run's
    scaling — ``(H, W)`` float32 in [0, 1] at the original size, before the resize to the
    model size — with the most common DICOM Modality of the sample (CR/DX for SIIM)."""
    idx = indices_of(data, train_ids, "train split")
    rng = np.random.default_rng(seed)
    picks = sorted(int(i) for i in rng.choice(len(idx), min(len(idx), max_scans), replace=False))
    paths = [data.image_paths[idx[i]] for i in picks]
    found = Counter(m for m in (read_header(p).modality for p in paths) if m)
    modality = found.most_common(1)[0][0] if found else None
    images = (data.image(idx[i], scaling) for i in picks)  # one radiograph in memory at a time
    return profile_inputs(images, modality, seed)


class ResizableSegmentationSet(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A ``SegmentationDataset`` per training size, switched with ``set_size`` (each caches
    its own resized pairs), with ``set_epoch`` passed on for new augmentation draws."""

    def __init__(
        self, data: SiimData, indices: Sequence[int], size: int, **options: object
    ) -> None:
        self.data, self.indices, self.options = data, list(indices), options
        self.size, self.epoch = int(size), 0
        self._sets: dict[int, SegmentationDataset] = {}

    def _current(self) -> SegmentationDataset:
        if self.size not in self._sets:
            self._sets[self.size] = SegmentationDataset(
                self.data,
                self.indices,
                size=self.size,
                **self.options,  # type: ignore[arg-type]
            )
        current = self._sets[self.size]
        current.set_epoch(self.epoch)
        return current

    def set_size(self, size: int) -> None:
        self.size = int(size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._current()[item]
