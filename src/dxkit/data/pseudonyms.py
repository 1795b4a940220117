"""Keyed pseudonyms of DICOM identifiers, one key per project.

PatientID and the study/series UIDs are replaced by HMAC-SHA256 under a secret key, so the
same patient keeps the same pseudonym across the tables and caches of one project
(patient-grouped splits still work) while nobody without the key can test a guessed
identifier against them. The key lives in a file (``dxkit-salt.key`` beside the output
unless another is named), created once with mode 0600. ``dxkit prepare dicom`` and
``dxkit prepare rsna`` both key their outputs here; ``--keep-phi`` is the only way out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from dxkit.errors import MissingFileError

SALT_FILE = "dxkit-salt.key"


def hash_id(value: str, salt: str) -> str:
    """A stable pseudonym for an identifier: HMAC-SHA256 keyed by ``salt`` (16 hex digits)."""
    return hmac.new(salt.encode(), str(value).encode(), hashlib.sha256).hexdigest()[:16]


def project_salt(path: Path) -> str:
    """The project's pseudonym key from ``path``, created there once (random, mode 0600)."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another run created it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    salt = path.read_text().strip()
    if not salt:
        raise MissingFileError(f"{path}: the pseudonym key file is empty; delete it or fill it")
    return salt


def output_salt(keep_phi: bool, salt_file: Path | str | None, beside: Path) -> str:
    """The key for one output: ``""`` with ``keep_phi`` (ids stay in clear), else the key in
    ``salt_file`` or in ``dxkit-salt.key`` in the folder ``beside`` (created on first use).

    Read once in the main process, before any worker starts, so every worker (pool or Dask)
    hashes with the same key."""
    if keep_phi:
        return ""
    return project_salt(Path(salt_file) if salt_file else Path(beside) / SALT_FILE)


def pseudonymise(value: object, salt: str) -> object:
    """``value`` keyed with ``salt`` (``None`` stays ``None``); unchanged when ``salt`` is
    empty (``--keep-phi``)."""
    if value is None or not salt:
        return value
    return hash_id(str(value), salt)
