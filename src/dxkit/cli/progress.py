"""A rich progress bar for the library's ``progress(done, total)`` callbacks (CLI only).

The library never draws: evaluation, prediction and explanation take an optional callback
(``dxkit.infer.device.ProgressCallback``). This one shows a transient bar on stderr once the
work has run for ``delay`` seconds, so quick jobs print nothing extra.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from dxkit.infer.device import ProgressCallback


@contextmanager
def progress_bar(description: str, delay: float = 2.0) -> Iterator[ProgressCallback]:
    """A callback that drives a bar (started after ``delay`` s of work), closed on exit."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    start = time.monotonic()
    task: list[TaskID] = []

    def update(done: int, total: int) -> None:
        if not task:
            if time.monotonic() - start < delay:
                return
            bar.start()
            task.append(bar.add_task(description, total=total))
        bar.update(task[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task:
            bar.stop()
