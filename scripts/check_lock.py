"""Check that this environment holds exactly the locked set: every package of
requirements/lock.txt installed at its locked version. Packages installed beyond the lock
are listed as a warning (a user may add their own). Exit 1 on any mismatch."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            sys.exit(f"{path}: '{line}' is not a 'name==version' pin; rerun make lock")
        pins[canonical(name)] = version.split(";")[0].strip()
    return pins


def main() -> int:
    lock = Path(sys.argv[1] if len(sys.argv) > 1 else "requirements/lock.txt")
    pins = read_lock(lock)
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = [
        f"{name}: locked {want}, installed {installed.get(name, 'nothing')}"
        for name, want in sorted(pins.items())
        if installed.get(name) != want
    ]
    extra = sorted(set(installed) - set(pins) - {"dxkit"})
    if extra:
        print(f"note: installed beyond {lock}: {', '.join(extra)}", file=sys.stderr)
    if wrong:
        print(f"the environment differs from {lock}:", *wrong, sep="\n  ", file=sys.stderr)
        print(
            "fix: make clean && make test (or make lock to move the lock on purpose)",
            file=sys.stderr,
        )
        return 1
    print(f"environment matches {lock} ({len(pins)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
