"""What a failed ``dxkit train`` leaves behind: nothing when it saved no checkpoint (so the
next run gets the name, not ``<name>-2``), else its folder marked ``FAILED`` with the error
(the checkpoints it did save stay, ``--resume`` can continue from ``last.ckpt``)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dxkit.train.config import RunConfig
from dxkit.train.fit import new_run_dir

log = logging.getLogger(__name__)
FAILED_MARKER = "FAILED"


@contextmanager
def cleaned_up_on_failure(cfg: RunConfig, resume: bool = False) -> Iterator[Path]:
    """Run a training body; on any exception tidy the run folder it started, then re-raise."""
    run_dir = new_run_dir(cfg)  # the folder fit() will create (a resumed run keeps its own)
    try:
        yield run_dir
    except BaseException as err:
        if not resume and run_dir.is_dir():
            _tidy(run_dir, err)
        raise


def _tidy(run_dir: Path, err: BaseException) -> None:
    if not any(run_dir.rglob("*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)
        log.info("%s: removed (the run failed before saving a checkpoint)", run_dir)
        return
    reason = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
    (run_dir / FAILED_MARKER).write_text(reason + "\n")
    log.info("%s: marked %s; its checkpoints are kept", run_dir, FAILED_MARKER)
