"""The scratch folders of runs (``taskproc/.runs/<run id>``): held while a run lives, swept after.

A run's folder holds its failure markers and counts, shared by its xdist
workers, and the run removes it when it ends.  A run that was killed
(SIGKILL, a lost node) cannot, so its folder stayed forever.  So every
process of a run that uses its folder holds a shared lock on ``alive.lock``
in it for as long as it lives (the kernel lets go when the process dies,
however it dies), and a run that ends removes, besides its own folder, each
other one whose lock nobody holds.  A folder without a lock file (left by an
older version) goes once it is a day old.  Where the platform has no
``fcntl`` (Windows), folders are neither held nor swept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

ALIVE = "alive.lock"
#: a folder without a lock file (an older version's) is left alone this long
UNLOCKED_GRACE_SECONDS = 24 * 3600

#: run folder -> the descriptor this process holds its shared lock through
_held: dict[Path, int] = {}

__all__ = ["hold", "sweep"]


def hold(run_dir: Path) -> None:
    """This process uses the run's folder: it is not swept while the process lives."""
    if fcntl is None or run_dir in _held:
        return
    with contextlib.suppress(OSError):  # a read-only cache says so elsewhere
        for _ in range(3):
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(run_dir / ALIVE, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.fstat(fd).st_nlink:
                _held[run_dir] = fd
                return
            os.close(fd)  # swept between its creation and the lock: make it again


def sweep(runs: Path, own: Path) -> list[Path]:
    """Remove the folders of runs no process holds any more; the folders removed."""
    if fcntl is None:
        return []
    try:
        entries = list(os.scandir(runs))
    except OSError:
        return []
    removed = []
    for entry in entries:
        folder = Path(entry.path)
        if folder != own and entry.is_dir(follow_symlinks=False) and _gone(folder):
            removed.append(folder)
    return removed


def _gone(folder: Path) -> bool:
    """Remove the folder if its run is gone (under its lock, so no late joiner is hurt)."""
    assert fcntl is not None
    try:
        fd = os.open(folder / ALIVE, os.O_RDWR)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            if time.time() - folder.stat().st_mtime > UNLOCKED_GRACE_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
                return True
        return False
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a process of that run still holds it
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)
