"""Stopping a task that runs in another thread or process of this machine.

A run that gives up on a task under way (a pytest-timeout timeout ended the
item waiting for it on an executor) first records the task's failure in the
run's marker, then asks whoever computes it to stop:

- the ``.running`` marker a job writes while it computes names the host,
  process and thread that run it;
- a thread of this process gets :class:`TaskCancelled` raised in it
  (``PyThreadState_SetAsyncExc``), a pool process a ``SIGUSR1`` whose handler
  raises it in the process's main thread;
- either raises only while the thread still runs *that* task (the table of
  running jobs below, kept under a lock), so a signal that arrives late never
  ends the next task;
- whatever cannot be interrupted (a long call into C) is stopped at the
  next bytecode, and a value finished anyway is not kept: the job looks for
  the failure marker once more before it writes anything.

A pool process also ends when the process that started the pool is gone
(pytest-timeout's ``thread`` method ends pytest with ``os._exit``): on Linux
the kernel ends it (``PR_SET_PDEATHSIG``), and anywhere a process whose
parent changed keeps nothing of the task it finishes.  No thread watches for
it, so a task that forks (``multiprocessing`` with ``fork``) is not warned
about forking a multi-threaded process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
from collections.abc import Collection, Iterator

from .errors import TaskCancelled
from .ledger import RUNNING_SUFFIX

#: The signal a pool process takes as "stop the task you run, if it was cancelled".
STOP_SIGNAL = getattr(signal, "SIGUSR1", None)
#: prctl(2) option: the signal the kernel sends when the parent (thread) ends
_PR_SET_PDEATHSIG = 1

_HOST = socket.gethostname()
#: thread ident -> failure marker of the job that thread computes now
_running: dict[int, str] = {}
_lock = threading.Lock()
_installed = False
#: a pool process's parent when it first ran a job: another one means it was orphaned
_parent: int | None = None

__all__ = [
    "TaskCancelled",
    "cancelled",
    "computing",
    "prepare_pool_process",
    "raise_if_cancelled",
    "request_stop",
    "running_note",
    "stop_here",
]


def running_note() -> str:
    """What a ``.running`` marker holds: who computes the task (host, process, thread)."""
    return f"{_HOST} {os.getpid()} {threading.get_ident()}"


def cancelled(marker: str | None) -> bool:
    """Whether the run gave up on the job while it ran (it recorded the job's failure),
    or this pool process was orphaned (the run is gone)."""
    if _parent is not None and os.getppid() != _parent:
        return True
    return marker is not None and os.path.exists(marker)


def raise_if_cancelled(marker: str | None) -> None:
    if cancelled(marker):
        raise TaskCancelled("the run gave up on this task while it ran; nothing was cached")


@contextlib.contextmanager
def computing(marker: str | None) -> Iterator[None]:
    """While the block runs, a stop request for the job with this marker interrupts it."""
    if marker is None:
        yield
        return
    ident = threading.get_ident()
    with _lock:
        _running[ident] = marker
    try:
        yield
    finally:
        with _lock:
            _running.pop(ident, None)


def request_stop(marker: str, processes: Collection[int], *, hard: bool = False) -> bool:
    """Ask whoever computes the job with this failure marker to stop; False: cannot.

    Only this process's threads and the pids in ``processes`` (the executor's
    own pool) are ever interrupted: a pid read from a file could meanwhile
    belong to anything else.  ``hard`` ends a pool process outright (at the
    end of a run, for a task that did not stop when asked).
    """
    try:
        with open(marker + RUNNING_SUFFIX, encoding="utf-8") as handle:
            host, pid_text, ident_text = handle.read().split()
        pid, ident = int(pid_text), int(ident_text)
    except (OSError, ValueError):
        return False  # not started yet (it will see the failure marker), or already done
    if host != _HOST:
        return False
    if pid == os.getpid():
        return _interrupt_thread(ident, marker)
    stop = getattr(signal, "SIGKILL", None) if hard else STOP_SIGNAL
    if pid in processes and stop is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, stop)
            return True
    return False


def stop_here(marker: str) -> bool:
    """Stop the job with this failure marker if a thread of this process computes it.

    For executors whose workers run jobs in threads of processes of their own
    (a Dask worker): the run asks each worker process to look.
    """
    with _lock:
        idents = [ident for ident, running in _running.items() if running == marker]
    return any(_interrupt_thread(ident, marker) for ident in idents)


def _interrupt_thread(ident: int, marker: str) -> bool:
    with _lock:  # the thread cannot leave the job while this looks
        if _running.get(ident) != marker:
            return False
        done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(ident), ctypes.py_object(TaskCancelled)
        )
    return bool(done == 1)


def prepare_pool_process() -> None:
    """In a pool process's main thread, once: the stop signal, and an end with the parent."""
    global _installed, _parent
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    if STOP_SIGNAL is not None:
        signal.signal(STOP_SIGNAL, _on_stop_signal)
    _parent = os.getppid()
    if sys.platform.startswith("linux"):
        # The parent is the process (a fork server's main thread, or the thread
        # that made a forking pool) that made this one; when it ends, so does this.
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != _parent:  # it ended before the kernel was told
            os._exit(1)


def _on_stop_signal(signum: int, frame: object) -> None:
    with _lock:
        marker = _running.get(threading.main_thread().ident or 0)
    if marker is not None and cancelled(marker):
        raise TaskCancelled("the run gave up on this task while it ran; nothing was cached")
