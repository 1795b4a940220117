"""The CLI's progress bar: silent for quick work, drawn (on stderr) once work runs longer."""

from __future__ import annotations

from dxkit.cli.progress import progress_bar


def test_quick_work_draws_nothing(capsys) -> None:  # type: ignore[no-untyped-def]
    with progress_bar("quick", delay=60.0) as update:
        for i in range(5):
            update(i + 1, 5)
    assert capsys.readouterr().err == ""


def test_long_work_starts_and_closes_the_bar() -> None:
    with progress_bar("long", delay=0.0) as update:
        update(1, 4)
        update(4, 4)
    # exiting stopped the live display: a second bar can start in the same process
    with progress_bar("again", delay=0.0) as update:
        update(2, 2)
