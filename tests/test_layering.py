"""Imports flow one way (docs/DESIGN.md, "Layout"): no folder of ``src/dxkit`` imports a folder
above it, and no two folders import each other. Every import counts, including the ones
inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dxkit"
# Bottom to top. ``dxkit`` is the package's own __init__ (the version) and ``errors`` the one
# error hierarchy: everything may import them.
LAYERS = [
    "dxkit",
    "errors",
    "preprocess",
    "io",
    "data",
    "models",
    "infer",
    "train",
    "evaluate",
    "explain",
    "dicom_results",
    "serve",
    "pacs",
    "bench",
    "cli",
    "__main__",
]
RANK = {name: i for i, name in enumerate(LAYERS)}


def folder_of(relative: Path) -> str:
    """``infer/predictor.py`` → ``infer``; ``errors.py`` → ``errors``; ``__init__.py`` → dxkit."""
    if len(relative.parts) > 1:
        return relative.parts[0]
    return "dxkit" if relative.stem == "__init__" else relative.stem


def imported_modules(path: Path, root: Path = SRC.parent) -> list[tuple[str, int]]:
    """Absolute dxkit module names imported by ``path`` (under ``root``/dxkit), with their
    line numbers."""
    relative = path.relative_to(root)
    package = list(relative.with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "dxkit":  # ``from dxkit import x``: x may be a folder or a module
                out += [(f"dxkit.{alias.name}", node.lineno) for alias in node.names]
            else:
                out.append((name, node.lineno))
    return [(name, line) for name, line in out if name == "dxkit" or name.startswith("dxkit.")]


def target_folder(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "dxkit"
    return parts[1] if parts[1] in RANK else "dxkit"  # ``dxkit.__version__`` and the like


def folder_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        source = folder_of(path.relative_to(SRC))
        for module, line in imported_modules(path):
            target = target_folder(module)
            if target != source:
                edges[(source, target)].append(f"{path.relative_to(SRC)}:{line} imports {module}")
    return edges


def test_every_folder_has_a_layer() -> None:
    folders = {folder_of(p.relative_to(SRC)) for p in SRC.rglob("*.py")}
    assert folders <= set(RANK), f"place {sorted(folders - set(RANK))} in LAYERS"


def test_no_folder_imports_a_folder_above_it() -> None:
    upward = [
        where
        for (source, target), found in folder_edges().items()
        if RANK[target] > RANK[source]
        for where in found
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_cycle_between_folders() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in folder_edges():
        graph[source].add(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_walker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checks can fail: a lazy relative import inside a function is found."""
    module = SRC / "infer" / "probabilities.py"
    found = dict(imported_modules(module))
    assert "dxkit.data.augment" in found
    fake = tmp_path / "dxkit" / "infer" / "probe.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..serve import app\n    from dxkit import cli\n")
    names = [n for n, _ in imported_modules(fake, root=tmp_path)]
    assert names == ["dxkit.serve", "dxkit.cli"]
    assert [target_folder(n) for n in names] == ["serve", "cli"]
