"""Zip archives of scans, unpacked only after refusing path traversal and zip bombs.

Member names are checked (no absolute paths, drive letters or ``..``) although they are
never used as paths: files are written under neutral names. The total unpacked size is
checked from the directory before anything is unpacked, and counted again while
unpacking, since the sizes an archive declares can lie.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from dxkit.serve.intake import Limits, ReceivedFile, RequestError, classify, copy_capped


def check_member_name(name: str, archive: str) -> None:
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (
        posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or name.startswith(("/", "\\"))
        or ".." in posix.parts
        or ".." in windows.parts
    ):
        raise RequestError(
            f"{archive}: member {name!r} has an absolute path or '..'; such archives are "
            "refused (zip the files with relative names inside one folder)",
            400,
        )


def extract_zip(
    path: Path, client: str, workdir: Path, limits: Limits, start: int
) -> list[ReceivedFile]:
    """The archive's files (neutral names), after refusing traversal and zip bombs."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise RequestError(f"{client}: not a readable zip archive ({err})", 422) from None
    with archive:
        infos = archive.infolist()
        for info in infos:
            check_member_name(info.filename, client)
        members = [
            i
            for i in infos
            if not i.is_dir()
            and not i.filename.startswith("__MACOSX/")
            and not PurePosixPath(i.filename).name.startswith(".")
        ]
        if not members:
            raise RequestError(f"{client}: the zip archive holds no files", 400)
        if len(members) > limits.max_files:
            raise RequestError(
                f"{client}: holds {len(members)} files, over the limit of {limits.max_files}", 413
            )
        declared = sum(i.file_size for i in members)
        if declared > limits.max_unzipped_bytes:
            raise RequestError(
                f"{client}: expands to {declared / 2**20:.0f} MB, over this server's limit of "
                f"{limits.max_unzipped_bytes // 2**20} MB for unpacked archives",
                413,
            )
        files, left = [], limits.max_unzipped_bytes
        for n, info in enumerate(members, start=start):
            dest = workdir / f"file-{n}"
            label = f"{client}:{info.filename}"
            try:
                with archive.open(info) as src:
                    # Declared sizes can lie; count what actually comes out.
                    left -= copy_capped(src, dest, left, f"{client} (unpacked)")
            except RequestError:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as err:
                # RuntimeError: encrypted members; NotImplementedError: exotic compression.
                raise RequestError(f"{label}: cannot be unpacked ({err})", 422) from None
            except NotImplementedError as err:
                raise RequestError(f"{label}: unsupported zip compression ({err})", 415) from None
            files.append(classify(dest, label))
        return files
