"""Write benchmark tables into ``benchmarks/RESULTS.md``, one replaceable section per bench.

Each benchmark owns a section delimited by HTML comments, so re-running one benchmark
replaces its own table and leaves the others as they were.
"""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path

import torch

DEFAULT_RESULTS = Path("benchmarks") / "RESULTS.md"
_HEADER = (
    "# Benchmark results\n\n"
    "Every table below was written by the command shown above it, on the machine described\n"
    "in its section. Peers run side by side in the same process run, so ratios are meaningful\n"
    "even where absolute times drift between machines.\n"
)


def machine_line() -> str:
    """A one-line description of where the numbers were measured."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{device}, torch {torch.__version__}, measured {_dt.date.today().isoformat()}"
    )


def write_section(key: str, title: str, command: str, body: str, path: Path | None = None) -> Path:
    """Insert or replace the section ``key`` in the results file and return its path."""
    path = Path(path or DEFAULT_RESULTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else _HEADER
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    section = (
        f"{start}\n## {title}\n\nCommand: `{command}`  \nMachine: {machine_line()}\n\n"
        f"{body.strip()}\n{end}"
    )
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
