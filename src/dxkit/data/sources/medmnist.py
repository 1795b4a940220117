"""MedMNIST benchmark sets: the official ``.npz`` files, read, checked and optionally downloaded.

Each file holds ``{train,val,test}_{images,labels}``: uint8 images ``(N, H, W)`` (grey),
``(N, H, W, 3)`` (colour) or ``(N, D, H, W)`` (3-D) and integer labels ``(N, 1)`` (class id)
or ``(N, L)`` (multi-label). The fixed official splits are kept as they are, because the
published tables are measured on them.

URLs and md5 sums are those of the official MedMNIST v3 package (``medmnist/info.py``,
Zenodo record 10519652); the 28-px file has no suffix, the MedMNIST+ sizes end in ``_{size}``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dxkit.data.source import LabelledSet, SourceData, Task
from dxkit.errors import ConfigError, DataSourceError, MissingFileError

log = logging.getLogger(__name__)

ZENODO_RECORD = "https://zenodo.org/records/10519652/files"
MIRROR_ENV = "DXKIT_MEDMNIST_MIRROR"  # a base URL serving the same file names
ROOT_ENV = "DXKIT_MEDMNIST_ROOT"
SPLITS = ("train", "val", "test")
SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)


@dataclass(frozen=True)
class MedMNISTInfo:
    """What one MedMNIST set is: task, classes, layout and the md5 of each file size."""

    task: Task
    classes: tuple[str, ...]
    channels: int
    spatial_dims: int
    md5: dict[int, str | None]
    n_samples: tuple[int, int, int]  # official train/val/test counts

    @property
    def label_names(self) -> list[str]:
        """One name per model output: the positive class for binary sets."""
        return [self.classes[1]] if self.task == "binary" else list(self.classes)


def _info(
    task: Task,
    classes: tuple[str, ...],
    md5: tuple[str | None, ...],
    n_samples: tuple[int, int, int],
    channels: int = 1,
    spatial_dims: int = 2,
) -> MedMNISTInfo:
    sizes = SIZES_2D if spatial_dims == 2 else SIZES_3D
    return MedMNISTInfo(
        task, classes, channels, spatial_dims, dict(zip(sizes, md5, strict=True)), n_samples
    )


_ORGANS = (
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
    "liver", "lung-left", "lung-right", "pancreas", "spleen",
)  # fmt: skip

# md5 per size (28, 64, 128, 224 for 2-D; 28, 64 for 3-D) from the official package.
INFO: dict[str, MedMNISTInfo] = {
    "pathmnist": _info(
        "multiclass",
        ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
         "normal colon mucosa", "cancer-associated stroma",
         "colorectal adenocarcinoma epithelium"),
        ("a8b06965200029087d5bd730944a56c1", "55aa9c1e0525abe5a6b9d8343a507616",
         "ac42d08fb904d92c244187169d1fd1d9", "2c51a510bcdc9cf8ddb2af93af1eadec"),
        (89996, 10004, 7180), channels=3,
    ),
    "chestmnist": _info(
        "multilabel",
        ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
         "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
         "pleural", "hernia"),
        ("02c8a6516a18b556561a56cbdd36c4a8", "9de6cd0b934ebb5b7426cfba5efbae16",
         "db107e5590b27930b62dbaf558aebee3", "45bd33e6f06c3e8cdb481c74a89152aa"),
        (78468, 11219, 22433),
    ),
    "dermamnist": _info(
        "multiclass",
        ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
         "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
         "vascular lesions"),
        ("0744692d530f8e62ec473284d019b0c7", "b70a2f5635c6199aeaa28c31d7202e1f",
         "2defd784463fa5243564e855ed717de1", "8974907d8e169bef5f5b96bc506ae45d"),
        (7007, 1003, 2005), channels=3,
    ),
    "octmnist": _info(
        "multiclass",
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        ("c68d92d5b585d8d81f7112f81e2d0842", "e229e9440236b774d9f0dfef9d07bdaf",
         "0a97e76651ace45c5d943ee3f65b63ae", "abc493b6d529d5de7569faaef2773ba3"),
        (97477, 10832, 1000),
    ),
    "pneumoniamnist": _info(
        "binary",
        ("normal", "pneumonia"),
        ("28209eda62fecd6e6a2d98b1501bb15f", "8f4eceb4ccffa70c672198ea285246c6",
         "05b46931834c231683c68f40c47b2971", "d6a3c71de1b945ea11211b03746c1fe1"),
        (4708, 524, 624),
    ),
    # Officially ordinal regression (5 grades); trained and scored as multi-class here,
    # as the MedMNIST tables do.
    "retinamnist": _info(
        "multiclass",
        ("0", "1", "2", "3", "4"),
        ("bd4c0672f1bba3e3a89f0e4e876791e4", "afda852cc34dcda56f86ad2b2457dbcc",
         "e48e916a24454daf90583d4e6efb1a18", "eae7e3b6f3fcbda4ae613ebdcbe35348"),
        (1080, 120, 400), channels=3,
    ),
    "breastmnist": _info(
        "binary",
        ("malignant", "normal, benign"),
        ("750601b1f35ba3300ea97c75c52ff8f6", "742edef2a1fd1524b2efff4bd7ba9364",
         "363e4b3f8d712e9b5de15470a2aaadf1", "b56378a6eefa9fed602bb16d192d4c8b"),
        (546, 78, 156),
    ),
    "bloodmnist": _info(
        "multiclass",
        ("basophil", "eosinophil", "erythroblast",
         "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
         "lymphocyte", "monocyte", "neutrophil", "platelet"),
        ("7053d0359d879ad8a5505303e11de1dc", "2b94928a2ae4916078ca51e05b6b800b",
         "adace1e0ed228fccda1f39692059dd4c", "b718ff6835fcbdb22ba9eacccd7b2601"),
        (11959, 1712, 3421), channels=3,
    ),
    "tissuemnist": _info(
        "multiclass",
        ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
         "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
         "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"),
        ("ebe78ee8b05294063de985d821c1c34b", "123ece2eba09d0aa5d698fda57103344",
         "61b955355d7425a89687b06cca3ce0c2", "b077128c4a949f0a4eb01517f9037b9c"),
        (165466, 23640, 47280),
    ),
    "organamnist": _info(
        "multiclass", _ORGANS,
        ("68e3f8846a6bd62f0c9bf841c0d9eacc", "2dcccc29b88e6da5a01161ef20cda288",
         "eeae80d0a227a8d099027e1b3cfd3b60", "50747347e05c87dd3aaf92c49f9f3170"),
        (34561, 6491, 17778),
    ),
    "organcmnist": _info(
        "multiclass", _ORGANS,
        ("b9ceb9546e10131b32923c5bbeaea2b1", "3ce34a8724ea6f548e6db4744d03b6a9",
         "773c1f009daa3fe5d9a2a201b2a7ed94", "050f5e875dc056f6768abf94ec9995d1"),
        (12975, 2392, 8216),
    ),
    "organsmnist": _info(
        "multiclass", _ORGANS,
        ("9ab87b696fb54e2a387ebe992d6ed5f1", "53a6d115339d874c25e309a994ff46d3",
         "ded0c5fa01a95dc4978b956f613e9b8e", "b354719e553fbbb2513d5533f52a4cb1"),
        (13932, 2452, 8827),
    ),
    "organmnist3d": _info(
        "multiclass",
        ("liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder",
         "heart", "lung-right", "lung-left", "spleen", "pancreas"),
        ("a0c5a1ff56af4f155c46d46fbb45a2fe", "58a2205adf14a9d0a189cb06dc78bf10"),
        (971, 161, 610), spatial_dims=3,
    ),
    "nodulemnist3d": _info(
        "binary",
        ("benign", "malignant"),
        ("8755a7e9e05a4d9ce80a24c3e7a256f3", "c47c5b7d457bf6332200d2ea6d64ecd8"),
        (1158, 165, 310), spatial_dims=3,
    ),
    "adrenalmnist3d": _info(
        "binary",
        ("normal", "hyperplasia"),
        ("bbd3c5a5576322bc4cdfea780653b1ce", "17721accfe9fb005146a47d33bc54b2f"),
        (1188, 98, 298), spatial_dims=3,
    ),
    "fracturemnist3d": _info(
        "multiclass",
        ("buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"),
        ("6aa7b0143a6b42da40027a9dda61302f", "f01d7e6316aedf4210da0da5b7437b42"),
        (1027, 103, 240), spatial_dims=3,
    ),
    "vesselmnist3d": _info(
        "binary",
        ("vessel", "aneurysm"),
        ("b41fd4f7e7e2feedddb201585ecafa1b", "6bb274a8846e1097066dcd64e2c4520f"),
        (1335, 191, 382), spatial_dims=3,
    ),
    "synapsemnist3d": _info(
        "binary",
        ("inhibitory synapse", "excitatory synapse"),
        ("1235b78a3cd6280881dd7850a78eadb6", "43bd14ebf3af9d3dd072446fedc14d5e"),
        (1230, 177, 352), spatial_dims=3,
    ),
}  # fmt: skip


def file_name(name: str, size: int = 28) -> str:
    """Official file name: ``{name}.npz`` at 28 px, ``{name}_{size}.npz`` otherwise."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def medmnist_url(name: str, size: int = 28) -> str:
    """Download URL of one file (the official Zenodo record, or ``$DXKIT_MEDMNIST_MIRROR``)."""
    base = os.environ.get(MIRROR_ENV, ZENODO_RECORD).rstrip("/")
    return f"{base}/{file_name(name, size)}?download=1"


def expected_md5(name: str, size: int = 28) -> str | None:
    """The official md5 of a file, None when unknown."""
    info = INFO.get(name)
    return None if info is None else info.md5.get(size)


def default_root() -> Path:
    """``$DXKIT_MEDMNIST_ROOT``, else ``~/.medmnist`` (where the medmnist package puts files)."""
    return Path(os.environ.get(ROOT_ENV, Path.home() / ".medmnist")).expanduser()


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str | None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` via a temporary file, checking ``md5`` when known.

    The file only appears at ``dest`` once complete and verified, so an interrupted or
    corrupt download never passes for the real file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    by_hand = f"download it by hand from {url} and save it as {dest}"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        log.info("downloading %s to %s", url, dest)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                while block := r.read(1 << 20):
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            reason = getattr(err, "reason", err)
            raise DataSourceError(f"could not download {url} ({reason}); {by_hand}") from None
        got = digest.hexdigest()
        if md5 is None:
            log.warning("%s: no known md5 for this file; saved without verification", dest.name)
        elif got != md5:
            raise DataSourceError(
                f"{url}: md5 {got} does not match the expected {md5} (corrupt or changed "
                f"file); retry, or {by_hand}"
            )
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    layout = "keys train_images, train_labels, val_images, val_labels, test_images, test_labels"
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")
                       if f"{s}_{k}" not in npz.files]  # fmt: skip
            if missing:
                raise DataSourceError(
                    f"{path}: no key '{missing[0]}' (has {', '.join(npz.files) or 'none'}); a "
                    f"MedMNIST file needs {layout} — re-download the official file"
                )
            return {f"{s}_{k}": npz[f"{s}_{k}"] for s in SPLITS for k in ("images", "labels")}
    except DataSourceError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise DataSourceError(
            f"{path}: not a readable .npz ({err}); re-download the official file"
        ) from None


def _image_layout(
    path: Path, key: str, images: np.ndarray, info: MedMNISTInfo | None
) -> tuple[int, int]:
    """Check one image array and return (spatial_dims, channels)."""
    if images.dtype != np.uint8:
        raise DataSourceError(
            f"{path}: '{key}' has dtype {images.dtype}; MedMNIST images are uint8 — "
            "re-download the official file"
        )
    shape = images.shape
    if info is not None:
        if info.spatial_dims == 3:
            ok, want = images.ndim == 4, "(N, D, H, W)"
        elif info.channels == 3:
            ok, want = images.ndim == 4 and shape[-1] == 3, "(N, H, W, 3)"
        else:
            ok, want = images.ndim == 3, "(N, H, W)"
        if not ok:
            raise DataSourceError(
                f"{path}: '{key}' has shape {shape}, expected {want}; check the set name "
                "or re-download the official file"
            )
        return info.spatial_dims, info.channels
    if images.ndim == 3:
        return 2, 1
    if images.ndim == 4 and shape[-1] == 3:
        return 2, 3
    if images.ndim == 4:
        return 3, 1
    raise DataSourceError(
        f"{path}: '{key}' has shape {shape}; expected (N, H, W), (N, H, W, 3) or (N, D, H, W)"
    )


def _labels(
    path: Path, split: str, raw: np.ndarray, n: int, task: Task, n_classes: int
) -> np.ndarray:
    key = f"{split}_labels"
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2 or raw.shape[0] != n:
        raise DataSourceError(
            f"{path}: '{key}' has shape {raw.shape}, expected ({n}, 1) or ({n}, L) to match "
            f"{n} images; re-download the official file"
        )
    if not np.issubdtype(raw.dtype, np.integer) and not np.issubdtype(raw.dtype, np.bool_):
        raise DataSourceError(
            f"{path}: '{key}' has dtype {raw.dtype}; labels must be integer class ids or 0/1"
        )
    if task == "multilabel":
        if raw.shape[1] != n_classes or not np.isin(raw, (0, 1)).all():
            raise DataSourceError(
                f"{path}: '{key}' must be ({n}, {n_classes}) of 0/1, got {raw.shape} with "
                f"values {np.unique(raw)[:5].tolist()}; re-download the official file"
            )
        return raw.astype(np.float32)
    if raw.shape[1] != 1 or raw.min(initial=0) < 0 or raw.max(initial=0) >= n_classes:
        raise DataSourceError(
            f"{path}: '{key}' must be ({n}, 1) class ids in 0..{n_classes - 1}, got shape "
            f"{raw.shape} with values {np.unique(raw)[:5].tolist()}; check the set name"
        )
    ids = raw[:, 0].astype(np.int64)
    if task == "binary":
        return ids[:, None].astype(np.float32)
    return np.eye(n_classes, dtype=np.float32)[ids]


def _infer_info(arrays: dict[str, np.ndarray]) -> MedMNISTInfo:
    """Task and classes of a set not in ``INFO`` (a custom file in the MedMNIST layout)."""
    labels = np.concatenate([arrays[f"{s}_labels"].reshape(len(arrays[f"{s}_labels"]), -1)
                             for s in SPLITS])  # fmt: skip
    if labels.shape[1] > 1:
        classes = tuple(f"label_{i}" for i in range(labels.shape[1]))
        return MedMNISTInfo("multilabel", classes, 1, 2, {}, (0, 0, 0))
    k = int(labels.max(initial=0)) + 1
    task: Task = "binary" if k <= 2 else "multiclass"
    return MedMNISTInfo(task, tuple(str(i) for i in range(max(k, 2))), 1, 2, {}, (0, 0, 0))


def resolve_medmnist_file(
    name: str, root: Path | None = None, size: int = 28, download: bool = False
) -> Path:
    """The local path of ``{name}[_{size}].npz`` under ``root``, downloading it if asked."""
    info = INFO.get(name)
    if info is None:
        raise ConfigError(
            f"unknown MedMNIST set {name!r}; known: {', '.join(sorted(INFO))} (or give "
            "path=... to an .npz in the MedMNIST layout)"
        )
    sizes = SIZES_2D if info.spatial_dims == 2 else SIZES_3D
    if size not in sizes:
        raise ConfigError(f"{name}: no size {size}; official sizes are {sizes}")
    path = (root if root is not None else default_root()) / file_name(name, size)
    if path.is_file():
        return path
    if not download:
        raise MissingFileError(
            f"{path}: MedMNIST file not found; pass download=True (data.download: true) or "
            f"save {medmnist_url(name, size)} there"
        )
    return download_file(medmnist_url(name, size), path, expected_md5(name, size))


def load_medmnist(
    name: str,
    root: Path | None = None,
    size: int = 28,
    path: Path | None = None,
    download: bool = False,
) -> SourceData:
    """One MedMNIST set with its official train/val/test splits.

    ``path`` names the ``.npz`` (or the folder holding it); otherwise the file is
    ``root/{name}[_{size}].npz`` (``root`` defaults to ``$DXKIT_MEDMNIST_ROOT`` or
    ``~/.medmnist``). A missing file of a known set is downloaded when ``download`` is
    set. Items stay one uint8 array per split, channel first: ``(N, C, H, W)`` or
    ``(N, C, D, H, W)`` (a view of the file's array, no copy).
    """
    name = name.lower()
    if path is not None and Path(path).is_dir():  # a folder of MedMNIST files
        root, path = Path(path), None
    if path is None:
        path = resolve_medmnist_file(name, root, size, download)
    path = Path(path)
    if not path.is_file():
        if download and name in INFO:
            download_file(medmnist_url(name, size), path, expected_md5(name, size))
        else:
            raise MissingFileError(f"{path}: no such .npz file; check data.path")
    arrays = _load_npz(path)
    info = INFO.get(name) or _infer_info(arrays)
    splits: dict[str, LabelledSet] = {}
    native: int | None = None
    for split in SPLITS:
        key = f"{split}_images"
        images = arrays[key]
        spatial_dims, channels = _image_layout(path, key, images, INFO.get(name))
        labels = _labels(
            path, split, arrays[f"{split}_labels"], len(images), info.task, len(info.classes)
        )
        # Grey: add a channel axis; colour: move it first. Both are views of the file's array.
        items = np.moveaxis(images, -1, 1) if channels == 3 else images[:, None]
        side = int(images.shape[1 + (spatial_dims == 3)])
        if native is not None and side != native:
            raise DataSourceError(
                f"{path}: '{key}' is {side} px but other splits are {native} px; "
                "re-download the official file"
            )
        native = side
        splits[split] = LabelledSet(items=items, labels=labels)
    if path.name == file_name(name, size) and native != size:
        log.warning("%s: images are %s px, not the %s px the name implies", path, native, size)
    counts = {s: len(v) for s, v in splits.items()}
    if name in INFO and tuple(counts.values()) != info.n_samples:
        log.info("%s: split sizes %s differ from the official %s", path, counts, info.n_samples)
    log.info("%s: %s %s, splits %s, %s px", path, name, info.task, counts, native)
    return SourceData(
        splits=splits,
        label_names=info.label_names,
        task=info.task,
        spatial_dims=2 if spatial_dims == 2 else 3,
        in_chans=channels,
        native_size=native,
        input_kind="uint8",
        name=name,
        extra={"source": "medmnist", "path": str(path), "class_names": list(info.classes)},
    )
