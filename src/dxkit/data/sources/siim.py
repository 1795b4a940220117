"""SIIM-ACR pneumothorax: radiographs paired with run-length masks, and a segmentation dataset.

``load_siim`` pairs every ImageId of the RLE CSV with ``<ImageId>.dcm`` found anywhere under
the DICOM folder (the full SIIM download nests files in study/series folders). Problems are
either collected in a skip list (``strict=False``, batch use) or raised (``strict=True``).
Masks are decoded on demand: 10 000 masks of 1024² would be 10 GB as bytes.

``SegmentationDataset`` yields ``(image, mask)`` pairs, both ``(1, S, S)`` float32, with one
random geometric augmentation applied to both. It uses torchvision.transforms.v2: a
``tv_tensors.Mask`` is resampled with nearest neighbour (stays binary) while the image is
interpolated, from a single draw of the parameters. We chose it over MONAI's dictionary
transforms because the parameters come from torch's RNG, which we seed per (seed, epoch,
index): every sample's augmentation is reproducible whatever the number of DataLoader workers
or the order of access, with no per-worker random-state plumbing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from dxkit.errors import DataSourceError, DxkitError, MissingFileError
from dxkit.io.dicom import open_dataset
from dxkit.io.radiograph import Scaling, read_radiograph
from dxkit.preprocess.rle import RleRow, decode_rows, foreground_pixels, read_rle_rows, row_where

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """One CSV ImageId left out, and why."""

    image_id: str
    reason: str


@dataclass
class SiimData:
    """Paired radiographs and masks; index ``i`` refers to the same image everywhere.

    ``has_pneumothorax`` is float32 ``(N,)``: 1 when the image's mask is not empty.
    ``skipped`` lists CSV ImageIds left out; ``unlabelled`` the DICOM files with no CSV row.
    """

    ids: list[str]
    image_paths: list[Path]
    shapes: list[tuple[int, int]]
    rles: list[list[str]]
    sources: list[str]
    has_pneumothorax: np.ndarray
    skipped: list[Skipped] = field(default_factory=list)
    unlabelled: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, index: int) -> np.ndarray:
        """The ``uint8`` 0/1 mask ``(H, W)`` of image ``index`` (all its rows OR-ed)."""
        return decode_rows(self.rles[index], self.shapes[index], where=self.sources[index])

    def image(self, index: int, scaling: Scaling = "bits") -> np.ndarray:
        """The radiograph ``(H, W)`` float32 in [0, 1] (see ``dxkit.io.radiograph``)."""
        return read_radiograph(self.image_paths[index], scaling=scaling).pixels

    def subset(self, indices: Sequence[int]) -> SiimData:
        """The images at ``indices`` (for splits); skip lists are kept as they were."""
        idx = [int(i) for i in indices]
        return replace(
            self,
            ids=[self.ids[i] for i in idx],
            image_paths=[self.image_paths[i] for i in idx],
            shapes=[self.shapes[i] for i in idx],
            rles=[self.rles[i] for i in idx],
            sources=[self.sources[i] for i in idx],
            has_pneumothorax=self.has_pneumothorax[idx],
        )

    def skip_report(self) -> str:
        """A human-readable list of what was left out (empty string when nothing was)."""
        lines = [f"skipped {s.image_id}: {s.reason}" for s in self.skipped]
        if self.unlabelled:
            lines.append(f"{len(self.unlabelled)} DICOM file(s) have no row in the RLE CSV")
        return "\n".join(lines)


def _index_dicoms(dicom_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(dicom_dir.rglob("*.dcm")):
        if path.stem in found:
            logger.warning("%s: duplicate of %s; using the first", path, found[path.stem])
            continue
        found[path.stem] = path
    return found


def _image_shape(path: Path) -> tuple[int, int]:
    ds = open_dataset(path, stop_before_pixels=True)
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise DataSourceError(f"{path}: no Rows/Columns in the DICOM header; is it an image?")
    return int(rows), int(cols)


def load_siim(dicom_dir: Path | str, rle_csv: Path | str, *, strict: bool = False) -> SiimData:
    """Pair the DICOM files under ``dicom_dir`` with the masks of ``rle_csv``.

    Left out (and listed in ``SiimData.skipped``), or with ``strict=True`` raised as one
    ``DataSourceError``: an ImageId without ``<ImageId>.dcm``, an unreadable image, an RLE
    that is malformed or runs past its image (a mask whose size differs from the image).
    """
    dicom_dir, rle_csv = Path(dicom_dir), Path(rle_csv)
    if not dicom_dir.is_dir():
        raise MissingFileError(f"{dicom_dir}: no such folder of DICOM files; check the path")
    rows = read_rle_rows(rle_csv)  # raises MissingFileError / DataSourceError on structure
    grouped: dict[str, list[RleRow]] = {}
    for row in rows:
        grouped.setdefault(row.image_id, []).append(row)
    files = _index_dicoms(dicom_dir)

    ids: list[str] = []
    paths: list[Path] = []
    shapes: list[tuple[int, int]] = []
    rles: list[list[str]] = []
    sources: list[str] = []
    labels: list[float] = []
    skipped: list[Skipped] = []
    for image_id, group in grouped.items():
        lines = ", ".join(str(r.line) for r in group)
        where = f"{rle_csv} row{'s' if len(group) > 1 else ''} {lines} (ImageId {image_id})"
        path = files.get(image_id)
        if path is None:
            skipped.append(Skipped(image_id, f"{where}: no file {image_id}.dcm under {dicom_dir}"))
            continue
        try:
            shape = _image_shape(path)
            area = sum(
                foreground_pixels([r.encoded], shape, where=row_where(rle_csv, r)) for r in group
            )
        except DxkitError as exc:
            skipped.append(Skipped(image_id, str(exc)))
            continue
        ids.append(image_id)
        paths.append(path)
        shapes.append(shape)
        rles.append([r.encoded for r in group])
        sources.append(where)
        labels.append(1.0 if area > 0 else 0.0)

    if skipped and strict:
        listed = "\n  ".join(s.reason for s in skipped[:10])
        more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        raise DataSourceError(
            f"{rle_csv}: {len(skipped)} ImageId(s) cannot be used (strict mode):\n  "
            f"{listed}{more}\nfix them, or load without strict to skip them"
        )
    for s in skipped:
        logger.warning("skipping %s: %s", s.image_id, s.reason)
    unlabelled = [p for stem, p in files.items() if stem not in grouped]
    return SiimData(
        ids=ids,
        image_paths=paths,
        shapes=shapes,
        rles=rles,
        sources=sources,
        has_pneumothorax=np.asarray(labels, dtype=np.float32),
        skipped=skipped,
        unlabelled=unlabelled,
    )


def resize_pair(
    image: np.ndarray, mask: np.ndarray, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and mask ``(H, W)`` → ``(1, size, size)`` tensors: antialiased bilinear for the
    image; for the mask the same, thresholded at 0.5, so thin regions are not lost by
    nearest-neighbour sampling of a 4× downscale."""
    pair = torch.from_numpy(np.stack([image.astype(np.float32), mask.astype(np.float32)]))
    pair = F.interpolate(pair[None], size=(size, size), mode="bilinear", antialias=True)[0]
    return pair[:1].clamp_(0.0, 1.0), (pair[1:] >= 0.5).to(torch.float32)


def joint_augmentation(
    *,
    flip: float = 0.5,
    degrees: float = 10.0,
    shift: float = 0.05,
    scale: tuple[float, float] = (0.9, 1.1),
) -> v2.Transform:
    """Flip + small rotation/shift/scale, applied identically to an Image and a Mask."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=flip),
            v2.RandomAffine(
                degrees=degrees,
                translate=(shift, shift),
                scale=scale,
                interpolation=v2.InterpolationMode.BILINEAR,  # masks always use nearest
                fill=0.0,
            ),
        ]
    )


class SegmentationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(image, mask)`` pairs, each ``(1, size, size)`` float32, jointly augmented.

    The augmentation of item ``i`` is drawn from a torch seed derived from
    ``(seed, epoch, i)``; call ``set_epoch`` once per epoch so each epoch sees new draws.
    ``cache=True`` keeps the resized, un-augmented pairs in memory (decoding a 1024² JPEG
    DICOM costs more than a training step at 256 px).
    """

    def __init__(
        self,
        data: SiimData,
        indices: Sequence[int] | None = None,
        *,
        size: int = 256,
        augment: bool | v2.Transform = True,
        seed: int = 0,
        cache: bool = False,
        scaling: Scaling = "bits",
    ) -> None:
        if size < 1:
            raise DataSourceError(f"SegmentationDataset: size must be positive, got {size}")
        self.data = data
        self.indices = list(range(len(data))) if indices is None else [int(i) for i in indices]
        self.size = size
        if isinstance(augment, v2.Transform):
            self.transform: v2.Transform | None = augment
        else:
            self.transform = joint_augmentation() if augment else None
        self.seed = seed
        self.epoch = 0
        self.scaling: Scaling = scaling
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draws of this epoch (like ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def pair(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Resized image and mask of dataset item ``item``, before augmentation."""
        if self._cache is not None and item in self._cache:
            image, mask = self._cache[item]
            return image, mask.to(torch.float32)
        index = self.indices[item]
        pixels = self.data.image(index, self.scaling)
        mask_array = self.data.mask(index)
        if pixels.shape != mask_array.shape:
            raise DataSourceError(
                f"{self.data.sources[index]}: mask is {mask_array.shape} but the image "
                f"{self.data.image_paths[index]} is {pixels.shape}; they must match"
            )
        image_t, mask_t = resize_pair(pixels, mask_array, self.size)
        if self._cache is not None:
            self._cache[item] = (image_t, mask_t.to(torch.uint8))
        return image_t, mask_t

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.pair(item)
        if self.transform is None:
            return image, mask
        seed = int(np.random.SeedSequence([self.seed, self.epoch, item]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image_aug, mask_aug = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image_aug.as_subclass(torch.Tensor), mask_aug.as_subclass(torch.Tensor)
