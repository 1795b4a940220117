"""Who made a result: the model's name, version and checkpoint hash, and the UIDs that
follow from it.

Result UIDs are derived (``2.25.<hash>``, DICOM PS3.5 B.2) from the source study, the model
identity and the result kind, so the same study read by the same model version gets the
same SR/SEG/SC UIDs every time: a rerun finds its earlier results, and a store interrupted
half-way is completed, not duplicated, by the next run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydicom.uid import UID, generate_uid

MANUFACTURER = "dxkit"


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a checkpoint file (cached while the file is unchanged)."""
    stat = Path(path).stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime)


def derived_uid(*parts: str) -> UID:
    """A valid UID that depends only on ``parts`` (root 2.25, a hash of the parts)."""
    return generate_uid(prefix="2.25.", entropy_srcs=[str(p) for p in parts])


@dataclass(frozen=True)
class ModelIdentity:
    """A model as results name it; ``sha256`` (of the checkpoint file) is what makes two
    versions different even when their names agree."""

    name: str
    version: str
    sha256: str

    @classmethod
    def from_checkpoint(cls, path: Path | str, name: str, version: str) -> ModelIdentity:
        return cls(name=name, version=version, sha256=file_sha256(path))

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def device_uid(self) -> UID:
        """The SR's device observer UID: one per model version."""
        return derived_uid("dxkit-model", self.sha256)

    def label(self) -> str:
        return f"{self.name} {self.version} (sha256 {self.short_hash})"


def result_uid(identity: ModelIdentity, study_uid: str, kind: str, *more: str) -> UID:
    """UID of one result object or series: same study + model version + kind → same UID."""
    return derived_uid("dxkit-result", identity.sha256, study_uid, kind, *more)
