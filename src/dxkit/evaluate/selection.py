"""Which splits a run's choices have seen, so a report never passes one off as held out.

Every workload chooses things on data: the training split fits the weights, the selection
split (``val`` for classifiers and segmenters, ``tune`` for exam bundles) picks the best
checkpoint, the thresholds and any calibration. Numbers measured on those splits are
optimistic; only the held-out split (``test``, MRNet's ``valid``) estimates how the model
does on new patients. ``selection_warning`` is the one sentence the console and the report
print when a user scores a split that took part in a choice.
"""

from __future__ import annotations

from typing import Any

# split name → what it chose, per checkpoint kind (classify, segment, exam).
_CHOSE: dict[str, dict[str, str]] = {
    "classify": {
        "train": "trained the weights",
        "val": "chose the checkpoint (best epoch), the thresholds and any calibration",
    },
    "segment": {
        "train": "trained the weights",
        "val": "chose the checkpoint (best epoch), the mask threshold, minimum area and "
        "decision path",
    },
    "exam": {
        "train": "trained the plane networks (its fit part) and chose the fusion and "
        "thresholds (its tune part)",
        "tune": "chose the plane fusion and the thresholds",
    },
}


def selection_warning(kind: str, split: str) -> str | None:
    """The warning for scoring ``split`` of a ``kind`` run, ``None`` for a held-out split."""
    chose = _CHOSE.get(kind, {}).get(split)
    if chose is None:
        return None
    return (
        f"NOT A HELD-OUT RESULT: the {split!r} split {chose}, so these figures are "
        "optimistic; score the held-out split (the default of `dxkit evaluate`) to estimate "
        "performance on new patients."
    )


def mark_split(payload: dict[str, Any], kind: str, split: str) -> str | None:
    """Record in a report payload whether ``split`` is held out, with the warning if not."""
    warning = selection_warning(kind, split)
    payload["held_out"] = warning is None
    if warning is not None:
        payload["selection_warning"] = warning
    return warning
