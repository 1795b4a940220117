"""pyproject.toml declares what the code imports, and imports what it declares.

Every third-party top-level package imported anywhere in ``src/dxkit`` must come from a
declared distribution (the core dependencies, or an optional group the importing folder may
rely on), and every core dependency must be imported somewhere or be listed below as needed
at run time without an import, with the reason.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dxkit"

# Needed without an import statement of ours: name -> why.
RUNTIME_ONLY = {
    "pylibjpeg": "pydicom's decoder plugin for JPEG-compressed pixel data",
    "pylibjpeg-libjpeg": "pylibjpeg's JPEG / JPEG-LS backend (compressed DICOM)",
    "pylibjpeg-openjpeg": "pylibjpeg's JPEG 2000 backend (compressed DICOM)",
    "pyarrow": "pandas' Parquet engine (metadata tables, manifests)",
    "python-multipart": "FastAPI's parser for the server's file uploads",
}
# Optional groups a folder (first part of the path under src/dxkit) may import from.
PACS_USERS = {"dicom_results", "pacs", "serve", "cli", "bench"}
GROUP_USERS = {"bench": {"bench"}, "dicom-out": PACS_USERS, "pacs": PACS_USERS}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    assert match, spec
    return canonical(match.group(0))


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {requirement_name(s) for s in project["dependencies"]}
    groups = {
        g: {requirement_name(s) for s in specs}
        for g, specs in project.get("optional-dependencies", {}).items()
    }
    return core, groups


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> folders of src/dxkit that import it."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        folder = path.relative_to(SRC).parts[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "dxkit":
                    found.setdefault(top, set()).add(folder)
    return found


@cache
def _packages() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def distribution_of(module: str) -> str:
    dists = _packages().get(module)
    # A package not installed here (a benchmark-only peer) is matched by its own name.
    return canonical(dists[0]) if dists else canonical(module)


def test_every_imported_package_is_declared() -> None:
    core, groups = declared()
    missing = []
    for module, folders in sorted(third_party_imports().items()):
        dist = distribution_of(module)
        if dist in core:
            continue
        allowed = {g for g, users in GROUP_USERS.items() if folders <= users}
        if not any(dist in groups.get(g, set()) for g in allowed):
            missing.append(f"{module} ({dist}) imported in {sorted(folders)}")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_core_dependency_is_used() -> None:
    core, _ = declared()
    imported = {distribution_of(m) for m in third_party_imports()}
    unused = sorted(core - imported - set(RUNTIME_ONLY))
    assert not unused, f"declared in pyproject.toml but never imported: {unused}"


def test_runtime_only_entries_are_still_declared() -> None:
    core, _ = declared()
    assert set(RUNTIME_ONLY) <= core, sorted(set(RUNTIME_ONLY) - core)
