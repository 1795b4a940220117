"""Generated knee-MRI exams written in exactly the MRNet-v1.0 (and kneeMRI) layouts.

No MRNet data may be redistributed, so tests, demos and benchmarks run on fixtures built
here: each series is a smooth "anatomy" (two bone-like ellipses and soft tissue, varying
along the stack) with noise, and each finding plants a bright structure a model can learn
in a band of slices of every plane:

- ``acl``: the brightest, an oblique bar near the centre (the ligament's place);
- ``meniscus``: a bright flat band low in the image;
- another abnormality: a fainter (still above any anatomy) blob in the upper-left quadrant.

``abnormal`` is true whenever any of them is present, so ``acl`` and ``meniscus`` positives
are always abnormal, as in MRNet.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np

from dxkit.data.exam import PLANES

SLICE_RANGE: tuple[int, int] = (17, 60)
PREVALENCE: dict[str, float] = {"acl": 0.3, "meniscus": 0.35, "other": 0.3}
KNEEMRI_COLUMNS: tuple[str, ...] = (
    "examId",
    "seriesNo",
    "aclDiagnosis",
    "kneeLR",
    "roiX",
    "roiY",
    "roiZ",
    "roiHeight",
    "roiWidth",
    "roiDepth",
    "volumeFilename",
)


def knee_volume(
    depth: int,
    size: int,
    rng: np.random.Generator,
    findings: dict[str, bool],
    *,
    peak: float = 255.0,
) -> np.ndarray:
    """One float32 ``(depth, size, size)`` series in ``0..peak`` with planted ``findings``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    z = np.linspace(-1.0, 1.0, depth, dtype=np.float32)[:, None, None]
    width = np.sqrt(np.clip(1.0 - z**2, 0.05, 1.0))  # anatomy shrinks toward the stack's ends
    cx = 0.5 + rng.uniform(-0.03, 0.03)
    femur = ((xx - cx) / (0.28 * width)) ** 2 + ((yy - 0.25) / 0.2) ** 2 < 1
    tibia = ((xx - cx) / (0.25 * width)) ** 2 + ((yy - 0.78) / 0.18) ** 2 < 1
    tissue = ((xx - cx) / (0.42 * width)) ** 2 + ((yy - 0.5) / 0.5) ** 2 < 1
    vol = 20.0 + 60.0 * tissue + 50.0 * femur + 40.0 * tibia
    vol = vol + rng.normal(0.0, 8.0, size=vol.shape)
    band = np.abs(z[:, 0, 0]) < 0.35  # findings sit in the central slices
    # Each finding has its own place, shape and brightness (above any anatomy), so a small
    # network learns all three quickly; they never overlap, so their contrasts never add up.
    lesions = np.zeros((size, size), dtype=np.float32)
    jx, jy = rng.uniform(-0.04, 0.04, size=2)
    if findings.get("acl"):
        along, across = (xx - 0.5 - jx) + (yy - 0.5 - jy), (xx - 0.5 - jx) - (yy - 0.5 - jy)
        lesions += 170.0 * ((np.abs(along) < 0.16) & (np.abs(across) < 0.05))
    if findings.get("meniscus"):
        lesions += 120.0 * ((np.abs(yy - 0.62 - jy) < 0.05) & (np.abs(xx - 0.28 - jx) < 0.12))
    if findings.get("other"):
        lesions += 80.0 * ((xx - 0.22 - jx) ** 2 + (yy - 0.2 - jy) ** 2 < 0.07**2)
    vol[band] += lesions
    return (np.clip(vol, 0.0, 255.0) * (peak / 255.0)).astype(np.float32)


def sample_findings(rng: np.random.Generator, index: int) -> dict[str, bool]:
    """Findings of one exam; exam 0 is always normal and exam 1 has both tears (so every
    split of two or more exams has positives and negatives for every label)."""
    if index == 0:
        return {"acl": False, "meniscus": False, "other": False}
    if index == 1:
        return {"acl": True, "meniscus": True, "other": False}
    return {k: bool(rng.random() < p) for k, p in PREVALENCE.items()}


def write_mrnet_fixture(
    root: Path | str,
    n_train: int,
    n_valid: int,
    size: int = 64,
    seed: int = 0,
    slices: tuple[int, int] = SLICE_RANGE,
) -> Path:
    """Write ``n_train`` + ``n_valid`` generated exams in the MRNet-v1.0 layout under ``root``.

    Volumes are uint8 ``(D, size, size)`` with ``D`` drawn per plane from ``slices``
    (inclusive); IDs run 0000.. through train and continue in valid, like MRNet's.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    next_id = 0
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows: dict[str, list[tuple[str, int]]] = {"abnormal": [], "acl": [], "meniscus": []}
        for plane in PLANES:
            (root / split / plane).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            exam_id = f"{next_id:04d}"
            next_id += 1
            found = sample_findings(rng, i)
            for plane in PLANES:
                depth = int(rng.integers(slices[0], slices[1] + 1))
                vol = np.rint(knee_volume(depth, size, rng, found)).astype(np.uint8)
                np.save(root / split / plane / f"{exam_id}.npy", vol)
            rows["abnormal"].append((exam_id, int(any(found.values()))))
            rows["acl"].append((exam_id, int(found["acl"])))
            rows["meniscus"].append((exam_id, int(found["meniscus"])))
        for finding, finding_rows in rows.items():
            with (root / f"{split}-{finding}.csv").open("w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(finding_rows)
    return root


def write_kneemri_fixture(
    root: Path | str,
    n: int,
    size: int = 64,
    seed: int = 0,
    slices: tuple[int, int] = (20, 32),
    protocol: int = 2,
) -> Path:
    """Write ``n`` generated volumes in the kneeMRI layout: ``metadata.csv`` plus pickled
    uint16 12-bit ``(D, size, size)`` arrays in ``vol01``/``vol02``. ACL grade 0/1/2 cycles
    (grade ≥ 1 plants the ACL bar); the ROI columns frame the central region.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        grade = i % 3
        depth = int(rng.integers(slices[0], slices[1] + 1))
        found = {"acl": grade >= 1, "meniscus": False, "other": False}
        vol = np.rint(knee_volume(depth, size, rng, found, peak=4095.0)).astype(np.uint16)
        folder = root / f"vol{1 + i % 2:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{100000 + i}-{5 + i % 3}.pck"
        (folder / name).write_bytes(pickle.dumps(vol, protocol=protocol))
        q = size // 4
        rows.append(
            (100000 + i, 5 + i % 3, grade, i % 2, q, q, depth // 4, 2 * q, 2 * q, depth // 2, name)
        )
    with (root / "metadata.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(KNEEMRI_COLUMNS)
        writer.writerows(rows)
    return root
