"""A task's prints to its own files, without disturbing other threads.

``contextlib.redirect_stdout`` swaps ``sys.stdout`` for the whole process, so
with a thread pool one task's prints land in another task's file, and the
caller is left with a closed file as ``sys.stdout``.  Instead, while any task
runs, ``sys.stdout``/``sys.stderr`` are routers that send each thread's writes
to that thread's current target, or to the original stream; the originals are
put back when the last task in the process finishes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import CacheAccessError
from .idtable import access_error

_local = threading.local()
_install_lock = threading.Lock()
_installed = 0
_saved: dict[str, Any] = {}


class _Router:
    """Stands in for ``sys.stdout`` or ``sys.stderr``; routes by thread."""

    def __init__(self, which: str, fallback: Any) -> None:
        self._which = which
        self._fallback = fallback

    def _target(self) -> Any:
        return getattr(_local, self._which, None) or self._fallback

    def write(self, text: str) -> int:
        written: int = self._target().write(text)
        return written

    def writelines(self, lines: Any) -> None:
        self._target().writelines(lines)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


class _Tee:
    """Writes to a task's file and to the terminal (pytest's ``-s``)."""

    def __init__(self, primary: Any, echo: Any) -> None:
        self._primary = primary
        self._echo = echo

    def write(self, text: str) -> int:
        self._echo.write(text)
        written: int = self._primary.write(text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._primary.flush()
        self._echo.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._primary, name)


def _install() -> None:
    global _installed
    with _install_lock:
        if _installed == 0:
            for which in ("stdout", "stderr"):
                original = getattr(sys, which)
                router = _Router(which, original)
                _saved[which] = (original, router)
                setattr(sys, which, router)
        _installed += 1


def _uninstall() -> None:
    global _installed
    with _install_lock:
        _installed -= 1
        if _installed == 0:
            for which, (original, router) in _saved.items():
                if getattr(sys, which) is router:
                    setattr(sys, which, original)
            _saved.clear()


class _LazyFile:
    """A task's output file, created at the first write and written line by line.

    Most tasks print nothing; not creating two empty files for each of them
    halves the file-system work of a trivial task.  The file is written in
    place, not published at the end: when the task's process is killed (a
    timeout, the out-of-memory killer, ``scancel``), what it printed until
    then is what its failure report shows, and stays beside the absent
    result until the task runs again.
    """

    def __init__(self, path: str | Path, new_folder: bool = False) -> None:
        self.path = path
        self.new_folder = new_folder
        self._handle: IO[str] | None = None

    def start(self) -> None:
        """Remove the previous run's output: it must not pass for this run's."""
        if not self.new_folder:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _open(self) -> IO[str]:
        if self._handle is None:
            try:
                self._handle = open(  # noqa: SIM115 - closed in finish()
                    self.path, "w", encoding="utf-8", errors="backslashreplace", buffering=1
                )
            except OSError as exc:
                raise access_error("write the output of the task to", self.path, exc) from None
        return self._handle

    def write(self, text: str) -> int:
        if not text:
            return 0
        handle = self._open()
        try:
            return handle.write(text)
        except OSError as exc:
            self._drop()
            raise access_error("write the output of the task to", self.path, exc) from None

    def _drop(self) -> None:
        """Give up the output (a full disk): it must not keep the disk full for the next task."""
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()  # flushing what is buffered fails again on a full disk
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._handle is not None:
            try:
                self._handle.flush()
            except OSError as exc:
                self._drop()
                raise access_error("write the output of the task to", self.path, exc) from None

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"

    def finish(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as exc:
                self._handle = handle
                self._drop()
                raise access_error("write the output of the task to", self.path, exc) from None


@contextmanager
def captured_output(
    stdout_path: str | Path,
    stderr_path: str | Path,
    echo: bool = False,
    new_folder: bool = False,
) -> Iterator[None]:
    """Send this thread's prints to the two files (see :class:`_LazyFile`).

    With ``echo`` the prints also reach the streams that were current before.
    """
    out, err = _LazyFile(stdout_path, new_folder), _LazyFile(stderr_path, new_folder)
    out.start()
    err.start()
    _install()
    previous = (getattr(_local, "stdout", None), getattr(_local, "stderr", None))
    if echo:
        _local.stdout = _Tee(out, previous[0] or _saved["stdout"][0])
        _local.stderr = _Tee(err, previous[1] or _saved["stderr"][0])
    else:
        _local.stdout, _local.stderr = out, err
    try:
        yield
    except BaseException:
        _local.stdout, _local.stderr = previous
        _uninstall()
        _finish_both(out, err)  # the task's own error is the one to report
        raise
    _local.stdout, _local.stderr = previous
    _uninstall()
    problem = _finish_both(out, err)
    if problem is not None:
        raise problem


def _finish_both(out: _LazyFile, err: _LazyFile) -> CacheAccessError | None:
    """Close both files (a full disk removes them); the first problem, if any."""
    problem = None
    for output in (out, err):
        try:
            output.finish()
        except CacheAccessError as exc:
            problem = problem or exc
    return problem
