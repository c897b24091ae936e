"""Fixtures shared by the core library tests: an isolated cache and generated task modules."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# The whole library is imported before any test runs: pytester restores
# sys.modules after each test, which would drop modules a test imported first
# and leave classes and functions that no longer pickle by reference.
import pytest_taskproc.app
import pytest_taskproc.executors
import pytest_taskproc.export
import pytest_taskproc.task  # noqa: F401
from pytest_taskproc import Context
from pytest_taskproc import cache as cache_module
from pytest_taskproc import context as context_module
from pytest_taskproc import locks as locks_module

#: Prepended to every generated task module: the public API and a ``log``
#: helper that appends one line to the run log, from any thread or process.
MODULE_HEADER = """\
from __future__ import annotations

import os
import sys
import time

from pytest_taskproc import (
    Const, Req, Requires, RequiresDict, RequiresList, TaskBase, infer_task_type,
)

LOG = {log!r}


def log(*parts: object) -> None:
    # One short write with O_APPEND: lines from concurrent processes never interleave.
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(" ".join(str(p) for p in parts) + "\\n")

"""


class TaskModules:
    """Writes task modules into a private directory, imports them and reads their run log.

    Tasks must live in importable modules so that process pools, Dask workers
    and ``job_prefix`` children can unpickle them by reference.
    """

    def __init__(self, directory: Path, log_path: Path) -> None:
        self.directory = directory
        self.log_path = log_path
        directory.mkdir(parents=True, exist_ok=True)
        log_path.touch()

    def source(self, body: str) -> str:
        return MODULE_HEADER.format(log=str(self.log_path)) + textwrap.dedent(body)

    def write(self, name: str, body: str) -> Path:
        path = self.directory / f"{name}.py"
        path.write_text(self.source(body), encoding="utf-8")
        return path

    def load(self, name: str, body: str) -> ModuleType:
        """Write ``name.py`` with ``body`` below the header and import it."""
        self.write(name, body)
        if str(self.directory) not in sys.path:
            sys.path.insert(0, str(self.directory))
        importlib.invalidate_caches()
        return importlib.import_module(name)

    def lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8").splitlines()

    def runs(self, prefix: str = "run") -> list[str]:
        """Log lines that start with ``prefix`` (tasks log ``run <what>`` from run_task)."""
        return [line for line in self.lines() if line.split(" ", 1)[0] == prefix]

    def clear_log(self) -> None:
        self.log_path.write_text("", encoding="utf-8")


def run_on_threads(task: Any) -> Any:
    """``task.run_graph()`` on two threads: task modules loaded by ``modules`` need no pickling."""
    with ThreadPoolExecutor(2) as pool:
        return task.run_graph(executor=pool)


def result_folder(cache_root: Path, task: Any) -> Path:
    """``results/{task_id}`` of ``task`` in the cache at ``cache_root``."""
    folder: Path = cache_root / "taskproc" / task.task_name / "results" / str(task.task_id)
    return folder


@pytest.fixture(autouse=True)
def isolated_process_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh cache root per test, and ``sys.modules``/``sys.path`` restored afterwards.

    Task modules in tests share names (``tasks``, ``chain``, ...) while defining
    different classes, so a module imported by one test must not be found by
    the next: every module loaded from this test's ``tmp_path`` is forgotten
    and ``sys.path`` is put back.  Modules imported from elsewhere (dask,
    numpy) stay loaded, since importing them twice is slow and some of them
    cannot be imported twice.  The per-process stores of the cache are closed
    and dropped too, so each test starts as a new process would, without
    sqlite handles piling up over the session.
    """
    root = tmp_path / "cache"
    monkeypatch.setattr(Context, "cache_dir", root)
    monkeypatch.setattr(Context, "detect_source_change", False)
    monkeypatch.setattr(Context, "executor_name", "process")
    monkeypatch.setattr(Context, "max_workers", 2)
    monkeypatch.delenv("CP_CACHE_DIR", raising=False)
    monkeypatch.delenv("CP_DETECT_SOURCE_CHANGE", raising=False)
    saved_path = list(sys.path)
    saved_modules = dict(sys.modules)
    try:
        yield root
    finally:
        sys.path[:] = saved_path
        prefix = str(tmp_path) + os.sep
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None) or ""
            if origin.startswith(prefix):
                if name in saved_modules:
                    sys.modules[name] = saved_modules[name]
                else:
                    del sys.modules[name]
        forget_stores()


def forget_stores() -> None:
    """Close every open id table and forget the stores, as a process exit would."""
    for store in list(cache_module._stores.values()):
        store.ids.close()
    cache_module._stores.clear()
    cache_module._prepared_roots.clear()
    context_module.forget_fixed_root()


@pytest.fixture
def cache_root(isolated_process_state: Path) -> Path:
    """The cache root of this test (``Context.cache_dir``)."""
    return isolated_process_state


@pytest.fixture
def modules(tmp_path: Path) -> TaskModules:
    """Generated, importable task modules with a shared run log."""
    return TaskModules(tmp_path / "modules", tmp_path / "run.log")


def open_tables(under: Path) -> list[str]:
    """This process's open file descriptors on id tables under ``under`` (Linux: /proc/self/fd).

    Only this test's cache: another test's table on a file system it unmounted shows as
    a path outside it, and is that test's to account for.
    """
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(os.sep + "cache.db") and target.startswith(str(under) + os.sep):
            found.append(target)
    return found


def release_locks(under: Path) -> None:
    """Close this process's lock files under ``under`` (they stay open for its life)."""
    for key, held in list(locks_module._class_locks.items()):
        if str(under) in key[1]:
            os.close(held.fd)
            del locks_module._class_locks[key]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts small tmpfs file systems under tmp_path; unmounts them afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                capture_output=True,
                text=True,
            )
            reason = done.stderr.strip()
        except OSError as exc:
            done, reason = None, str(exc)
        if done is None or done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root and CAP_SYS_ADMIN): {reason}")
        mounted.append(target)
        return target

    try:
        yield mount
    finally:
        unmount_all(mounted)


def unmount_all(mounted: list[Path]) -> None:
    """Let go of the caches on the mounts, then unmount them (lazily, if still busy)."""
    forget_stores()
    for target in mounted:
        release_locks(target)
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], check=True)
