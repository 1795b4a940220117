"""Exams as first-class objects: several series (planes) of different lengths, one label set.

An MRNet-style knee exam is three series (axial, coronal, sagittal), each a ``(D, H, W)``
stack with its own slice count, and one binary label per finding. This module holds the
``Series``/``Exam`` objects, the checks every volume passes where it enters, the plane of a
DICOM series from ImageOrientationPatient, a collate function for variable-length series
(in the form ``dxkit.models.slicestack`` takes), and the torch ``ExamDataset`` whose
augmentation is identical for every slice of a series (one random affine per series,
applied to the whole stack at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from dxkit.errors import DataSourceError, InvalidScanError

log = logging.getLogger(__name__)

PLANES: tuple[str, str, str] = ("axial", "coronal", "sagittal")
MRNET_FINDINGS: tuple[str, str, str] = ("abnormal", "acl", "meniscus")
UINT8_RANGE: tuple[float, float] = (0.0, 255.0)
VolumeLoader = Callable[[Path], np.ndarray]
# Any augmentation called as aug(volume (C, D, H, W), generator), e.g. SeriesAugmentation or
# dxkit.data.augment.Augment(spatial_dims=3); it must transform all slices alike.
SeriesAugment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def validate_volume(
    volume: Any,
    *,
    exam_id: str,
    source: str,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Check a series volume where it enters: 3-D (or 4-D channel-first), numeric, non-empty,
    finite and inside ``value_range``. Returns it unchanged; raises ``InvalidScanError``.
    """
    where = f"exam {exam_id}: {source}"
    if not isinstance(volume, np.ndarray):
        raise InvalidScanError(f"{where}: expected a NumPy array, got {type(volume).__name__}")
    if volume.dtype.kind not in "uif":
        raise InvalidScanError(
            f"{where}: dtype {volume.dtype} is not a numeric image type; store uint8 or float32"
        )
    if volume.ndim not in (3, 4):
        raise InvalidScanError(
            f"{where}: volume has {volume.ndim} dimensions (shape {volume.shape}); a series must "
            "be (slices, H, W) or channel-first (C, slices, H, W)"
        )
    if 0 in volume.shape:
        raise InvalidScanError(
            f"{where}: empty series (shape {volume.shape}); re-export it or drop the exam"
        )
    if volume.dtype.kind == "f" and not np.isfinite(volume).all():
        raise InvalidScanError(f"{where}: holds NaN or infinite values; clean or re-export it")
    # uint8 data cannot leave 0..255, so memory-mapped uint8 series are never scanned.
    trivially_in_range = volume.dtype == np.uint8 and (
        value_range is not None and value_range[0] <= 0 and value_range[1] >= 255
    )
    if value_range is not None and not trivially_in_range:
        lo, hi = float(volume.min()), float(volume.max())
        if lo < value_range[0] or hi > value_range[1]:
            raise InvalidScanError(
                f"{where}: values {lo:g}..{hi:g} fall outside the expected range "
                f"{value_range[0]:g}..{value_range[1]:g} (uint8 intensities); rescale to 0-255"
            )
    return volume


def plane_from_orientation(image_orientation_patient: Sequence[float]) -> str:
    """``"axial"``, ``"coronal"`` or ``"sagittal"`` from DICOM ImageOrientationPatient.

    The slice normal (row × column direction cosines) points along patient x (left-right)
    for sagittal, y (anterior-posterior) for coronal and z (head-feet) for axial slices;
    oblique acquisitions get the plane of the normal's dominant component.
    """
    iop = np.asarray(list(image_orientation_patient), dtype=float)
    if iop.shape != (6,) or not np.isfinite(iop).all():
        raise InvalidScanError(
            f"ImageOrientationPatient {list(image_orientation_patient)!r} must be 6 finite "
            "direction cosines (row x,y,z then column x,y,z)"
        )
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 0.05 or abs(np.linalg.norm(col) - 1) > 0.05:
        raise InvalidScanError(
            f"ImageOrientationPatient {iop.tolist()}: direction cosines are not unit vectors"
        )
    if abs(float(row @ col)) > 0.05:
        raise InvalidScanError(
            f"ImageOrientationPatient {iop.tolist()}: row and column directions not orthogonal"
        )
    normal = np.abs(np.cross(row, col))
    first, second = np.sort(normal)[::-1][:2]
    if first - second < 1e-3:
        raise InvalidScanError(
            f"ImageOrientationPatient {iop.tolist()}: slice normal {normal.round(3).tolist()} is "
            "equally oblique to two axes, so the plane is ambiguous; name the plane explicitly"
        )
    return ("sagittal", "coronal", "axial")[int(np.argmax(normal))]


@dataclass
class Series:
    """One plane of an exam: an in-memory volume or a file read on access.

    ``data`` is ``(D, H, W)`` or ``(C, D, H, W)`` (uint8 or float32). When ``data`` is None
    the volume is read from ``path`` on each access (``np.load(mmap_mode="r")`` unless a
    ``loader`` is given) and validated once. ``spacing`` is (slice, row, column) in mm and
    ``orientation`` the ImageOrientationPatient, when known.
    """

    plane: str
    data: np.ndarray | None = None
    path: Path | None = None
    loader: VolumeLoader | None = None
    spacing: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    value_range: tuple[float, float] | None = None
    exam_id: str = "?"
    validated: bool = False
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.plane not in PLANES:
            raise DataSourceError(
                f"exam {self.exam_id}: unknown plane {self.plane!r}; use one of {PLANES}"
            )
        if self.data is None and self.path is None:
            raise DataSourceError(f"exam {self.exam_id}: series {self.plane} has no data or path")
        if self.data is not None and not self.validated:
            validate_volume(
                self.data, exam_id=self.exam_id, source=self.source, value_range=self.value_range
            )
            self.validated = True
            self.shape = tuple(self.data.shape)

    @property
    def source(self) -> str:
        """The file the series comes from, or a description for in-memory data."""
        return str(self.path) if self.path is not None else f"in-memory {self.plane} series"

    @property
    def volume(self) -> np.ndarray:
        """The series volume (memory-mapped for ``.npy`` files), validated on first access."""
        if self.data is not None:
            return self.data
        path = self.path
        if path is None:  # unreachable: __post_init__ requires data or path
            raise DataSourceError(f"exam {self.exam_id}: series {self.plane} has no data or path")
        try:
            if self.loader is not None:
                vol = self.loader(path)
            else:
                vol = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise InvalidScanError(
                f"exam {self.exam_id}: {path}: file disappeared since the exam was listed"
            ) from exc
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidScanError(
                f"exam {self.exam_id}: {path}: unreadable volume ({exc}); re-export it"
            ) from exc
        if not self.validated:
            validate_volume(
                vol, exam_id=self.exam_id, source=self.source, value_range=self.value_range
            )
            self.validated = True
        self.shape = tuple(vol.shape)
        return vol

    @property
    def num_slices(self) -> int:
        """Number of slices ``D`` (reads the file header only once)."""
        if self.shape is None:
            self.shape = tuple(self.volume.shape)
        return int(self.shape[-3])


@dataclass
class Exam:
    """One examination: series keyed by plane (lengths may differ), labels keyed by finding."""

    exam_id: str
    series: dict[str, Series]
    labels: dict[str, float] = field(default_factory=dict)
    patient_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.series:
            raise DataSourceError(f"exam {self.exam_id}: has no series")
        for plane, s in self.series.items():
            if plane != s.plane:
                raise DataSourceError(
                    f"exam {self.exam_id}: series filed under {plane!r} says plane {s.plane!r}"
                )
        for finding, value in self.labels.items():
            if not (np.isfinite(value) and 0.0 <= float(value) <= 1.0):
                raise DataSourceError(
                    f"exam {self.exam_id}: label {finding}={value!r} must be 0 or 1"
                )

    @property
    def planes(self) -> tuple[str, ...]:
        return tuple(self.series)

    def volume(self, plane: str) -> np.ndarray:
        """The volume of ``plane``; a clear error when the exam lacks it."""
        if plane not in self.series:
            raise DataSourceError(
                f"exam {self.exam_id}: has no {plane} series (it has {list(self.series)})"
            )
        return self.series[plane].volume

    def label_vector(self, findings: Sequence[str]) -> np.ndarray:
        """Labels of ``findings`` in that order as float32 ``(L,)``."""
        missing = [f for f in findings if f not in self.labels]
        if missing:
            raise DataSourceError(
                f"exam {self.exam_id}: no label for {missing} (it has {list(self.labels)})"
            )
        return np.array([self.labels[f] for f in findings], dtype=np.float32)


@dataclass(frozen=True)
class SkippedExam:
    """An exam left out of a batch load, with the file at fault and why."""

    exam_id: str
    path: str
    reason: str


class ExamList(list[Exam]):
    """Loaded exams plus the ones skipped (non-strict loading) with their reasons."""

    def __init__(self, exams: Sequence[Exam] = (), skipped: Sequence[SkippedExam] = ()) -> None:
        super().__init__(exams)
        self.skipped: list[SkippedExam] = list(skipped)


# --- batching -----------------------------------------------------------------------------


def collate_exams(
    items: Sequence[dict[str, Any]], layout: Literal["list", "padded"] = "list"
) -> dict[str, Any]:
    """Batch ``ExamDataset`` items whose series have different slice counts.

    ``planes[plane]`` is what ``dxkit.models.slicestack`` takes: with ``layout="list"`` a
    list of ``(C, D_i, H, W)`` tensors (no padding; the model packs all slices into one
    backbone pass), with ``"padded"`` one zero-padded ``(B, C, D_max, H, W)`` tensor to use
    with ``lengths[plane]`` ``(B,)`` int64. Sizes must agree within a plane.
    """
    if not items:
        raise DataSourceError("collate_exams: empty batch")
    if layout not in ("list", "padded"):
        raise DataSourceError(f"collate_exams: layout {layout!r}; use 'list' or 'padded'")
    ids = [str(it["exam_id"]) for it in items]
    planes: dict[str, Any] = {}
    lengths: dict[str, torch.Tensor] = {}
    for plane in items[0]["planes"]:
        series = []
        for exam_id, it in zip(ids, items, strict=True):
            if plane not in it["planes"]:
                raise DataSourceError(
                    f"collate_exams: exam {exam_id} has no {plane} series but exam {ids[0]} does"
                )
            series.append(it["planes"][plane])  # (C, D, H, W)
        sizes = {(s.shape[0], *s.shape[2:]) for s in series}
        if len(sizes) > 1:
            raise InvalidScanError(
                f"collate_exams: {plane} series of exams {ids} differ in (C, H, W) "
                f"{sorted(sizes)}; give ExamDataset a size= so all slices share one grid"
            )
        lengths[plane] = torch.tensor([s.shape[1] for s in series], dtype=torch.int64)
        if layout == "padded":  # pad along D: (B, D_max, C, H, W) → (B, C, D_max, H, W)
            padded = pad_sequence([s.movedim(1, 0) for s in series], batch_first=True)
            planes[plane] = padded.movedim(2, 1)
        else:
            planes[plane] = series
    return {
        "exam_ids": ids,
        "planes": planes,
        "lengths": lengths,
        "labels": torch.stack([it["labels"] for it in items]),
    }


# --- augmentation and intensity normalisation --------------------------------------------


@dataclass(frozen=True)
class AffineParams:
    """One draw of the series augmentation: rotation (deg), shift (px, x then y), flip."""

    angle: float
    shift: tuple[float, float]
    flip: bool


@dataclass(frozen=True)
class SeriesAugmentation:
    """Random rotation, shift and horizontal flip, drawn once per series and applied to every
    slice alike (Bien et al. 2018: ±25°, ±25 px, p=0.5). Slices are never augmented one by one,
    which would make neighbouring slices disagree about the anatomy.
    """

    max_rotation: float = 25.0
    max_shift: float = 25.0
    flip_p: float = 0.5

    def sample(self, generator: torch.Generator) -> AffineParams:
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        return AffineParams(
            angle=(2 * u[0] - 1) * self.max_rotation,
            shift=((2 * u[1] - 1) * self.max_shift, (2 * u[2] - 1) * self.max_shift),
            flip=u[3] < self.flip_p,
        )

    @staticmethod
    def apply(volume: torch.Tensor, params: AffineParams) -> torch.Tensor:
        """Apply ``params`` to a ``(..., H, W)`` stack in one call (same transform per slice)."""
        out = TF.affine(
            volume,
            angle=params.angle,
            translate=[params.shift[0], params.shift[1]],
            scale=1.0,
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR,
            fill=0.0,
        )
        return TF.horizontal_flip(out) if params.flip else out

    def __call__(self, volume: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(volume, self.sample(generator))


@dataclass(frozen=True)
class IntensityNormalization:
    """``(x / scale - mean) / std`` on every voxel; written into the checkpoint via
    ``to_dict()``, whose keys match ``dxkit.preprocess.spec.Preprocessing`` fields.
    """

    scale: float = 255.0
    mean: float = 0.0
    std: float = 1.0

    def apply(self, volume: torch.Tensor) -> torch.Tensor:
        return (volume / self.scale - self.mean) / self.std

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "mean": [self.mean], "std": [self.std]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensityNormalization:
        mean, std = d.get("mean", [0.0]), d.get("std", [1.0])
        mean = mean[0] if isinstance(mean, list | tuple) else mean
        std = std[0] if isinstance(std, list | tuple) else std
        return cls(scale=float(d.get("scale", 255.0)), mean=float(mean), std=float(std))

    @classmethod
    def fit(
        cls,
        exams: Sequence[Exam],
        planes: Sequence[str] = PLANES,
        scale: float = 255.0,
        max_exams: int = 200,
        seed: int = 0,
    ) -> IntensityNormalization:
        """Mean and std of ``volume / scale`` over (a seeded sample of) training exams."""
        if not exams:
            raise DataSourceError("IntensityNormalization.fit: no exams to fit on")
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(exams), size=min(len(exams), max_exams), replace=False)
        total = total_sq = count = 0.0
        for i in sorted(int(p) for p in picks):
            for plane in planes:
                if plane in exams[i].series:
                    v = np.asarray(exams[i].volume(plane), dtype=np.float64) / scale
                    total, total_sq, count = (
                        total + v.sum(),
                        total_sq + (v * v).sum(),
                        count + v.size,
                    )
        if count == 0:
            raise DataSourceError(f"IntensityNormalization.fit: no {list(planes)} series found")
        mean = total / count
        std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
        return cls(scale=scale, mean=float(mean), std=std if std > 1e-8 else 1.0)


def resize_slices(volume: torch.Tensor, size: int) -> torch.Tensor:
    """Resize every slice of a ``(C, D, H, W)`` stack to ``size``×``size`` (bilinear)."""
    if volume.shape[-2:] == (size, size):
        return volume
    slices = volume.movedim(1, 0)  # (D, C, H, W): slices as a batch of 2-D images
    antialias = max(volume.shape[-2:]) > size
    out = F.interpolate(
        slices, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
    )
    return out.movedim(0, 1)


class ExamDataset(Dataset[dict[str, Any]]):
    """Exams → ``{"exam_id", "planes": {plane: float32 (C, D, H, W)}, "labels": (L,)}``.

    Each access reads the series (memory-mapped), resizes slices to ``size`` when given,
    augments (same random affine for all slices of a series, seeded from ``seed``, the epoch
    set with ``set_epoch`` and the item index, so runs repeat) and normalises intensities.
    """

    def __init__(
        self,
        exams: Sequence[Exam],
        findings: Sequence[str] = MRNET_FINDINGS,
        planes: Sequence[str] = PLANES,
        *,
        normalization: IntensityNormalization | None = None,
        augmentation: SeriesAugment | None = None,
        size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.exams = list(exams)
        self.findings = list(findings)
        self.planes = list(planes)
        self.normalization = normalization or IntensityNormalization()
        self.augmentation = augmentation
        self.size = size
        self.seed = seed
        self.epoch = 0
        for exam in self.exams:
            missing = [p for p in self.planes if p not in exam.series]
            if missing:
                raise DataSourceError(
                    f"exam {exam.exam_id}: lacks the {missing} series this dataset needs"
                )
            exam.label_vector(self.findings)  # raises naming the exam when a label is missing

    def __len__(self) -> int:
        return len(self.exams)

    def set_epoch(self, epoch: int) -> None:
        """Draw new (still reproducible) augmentations for a new epoch."""
        self.epoch = epoch

    def normalization_dict(self) -> dict[str, Any]:
        """The intensity normalisation to store in the checkpoint."""
        return self.normalization.to_dict()

    def generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(state))

    def __getitem__(self, index: int) -> dict[str, Any]:
        exam = self.exams[index]
        gen = self.generator(index)
        planes: dict[str, torch.Tensor] = {}
        for plane in self.planes:
            vol = torch.from_numpy(np.asarray(exam.volume(plane), dtype=np.float32))
            if vol.ndim == 3:
                vol = vol[None]
            if self.size is not None:
                vol = resize_slices(vol, self.size)
            if self.augmentation is not None:
                vol = self.augmentation(vol, gen)
            planes[plane] = self.normalization.apply(vol).contiguous()
        labels = torch.from_numpy(exam.label_vector(self.findings))
        return {"exam_id": exam.exam_id, "planes": planes, "labels": labels}
