"""What a task printed before its xdist worker died under it, on xdist's crash report.

Without an executor an xdist worker computes tasks itself, so whatever kills
a task (the out-of-memory killer, pytest-timeout's thread method) kills the
worker, and the item's report is xdist's own (``worker 'gw0' crashed while
running ...``), made in the controller.  The task's prints are in its
``stdout.txt`` and ``stderr.txt``, and the run's ledger still has the
``.running`` marker the dead worker left beside the task's failure marker.
A marker whose task lock nobody holds is a task whose process died computing
it (the kernel releases the locks of a dead process; a live one that is
still computing holds its lock), so its output goes on the crash report, as
for a task killed on a pool.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from ..cache import STDERR_NAME, STDOUT_NAME, get_store
from ..ledger import RUNNING_SUFFIX
from .options import Options

#: How much older than the run's start an output file may look and still be this
#: run's: file times come from a coarse kernel clock that lags ``time.time_ns``.
_CLOCK_SLACK_NS = 50_000_000


class CrashOutput:
    """Registered on the xdist controller only."""

    def __init__(self, options: Options) -> None:
        self.options = options
        #: markers already told of, so a later crash does not repeat them
        self.told: set[str] = set()

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        for marker in self._died_computing():
            self.told.add(marker)
            name, _, number = marker[: -len(RUNNING_SUFFIX)].rpartition(".")
            self._attach(report, name, int(number))

    def _died_computing(self) -> list[str]:
        """The ``.running`` markers of tasks whose process died computing them."""
        folder = self.options.failure_dir
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return []
        self.told &= set(names)  # a rerun removed its marker: a new death is news
        found = []
        for marker in names:
            if not marker.endswith(RUNNING_SUFFIX) or marker in self.told:
                continue
            failed = marker[: -len(RUNNING_SUFFIX)]
            if failed in names:
                continue  # another process found it dead and failed it: told there
            name, _, number = failed.rpartition(".")
            if not number.isdigit():
                continue
            lock_file = os.path.join(
                get_store(self.options.cache_root, name).locks_dir, "tasks.lock"
            )
            if not _locked(lock_file, int(number)):
                found.append(marker)
        return found

    def _attach(self, report: Any, name: str, task_id: int) -> None:
        store = get_store(self.options.cache_root, name)
        folder = store.folder(task_id)
        lines = [f"the process computing {name} (task id {task_id}) died"]
        try:
            with open(os.path.join(folder, "args.json"), encoding="utf-8") as handle:
                lines.append(f"  arguments: {handle.read()}")
        except OSError:
            pass
        for which, file_name in (("stdout", STDOUT_NAME), ("stderr", STDERR_NAME)):
            path = os.path.join(folder, file_name)
            try:
                if os.stat(path).st_mtime_ns < self.options.started_ns - _CLOCK_SLACK_NS:
                    continue  # a previous run's
                with open(path, encoding="utf-8", errors="replace") as handle:
                    text = handle.read()
            except OSError:
                continue
            lines.append(f"  {which}:    {path}")
            if text:
                report.sections.append((f"Captured {which} call", text))
        # In the failure's text, not a section of its own: JUnit XML keeps only
        # that of a report that is not a call's.
        report.longrepr = f"{report.longrepr}\n\n" + "\n".join(lines)


def _locked(path: str, task_id: int) -> bool:
    """Whether a process holds the lock of task ``task_id`` (see ``locks.py``)."""
    if sys.platform == "win32":  # pragma: no cover - one lock file per task there
        return True  # cannot tell without taking it: say nothing rather than guess
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, task_id, os.SEEK_SET)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, task_id, os.SEEK_SET)
        return False
    finally:
        # This process (the controller) holds no task locks, so closing the
        # descriptor drops none.
        os.close(fd)
