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
(pytest-timeout's ``thread`` method ends pytest with ``os._exit``), so no
orphan finishes a task for a run that no longer exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import threading
import time
from collections.abc import Collection, Iterator

from .errors import TaskCancelled
from .ledger import RUNNING_SUFFIX

#: The signal a pool process takes as "stop the task you run, if it was cancelled".
STOP_SIGNAL = getattr(signal, "SIGUSR1", None)
#: How often a pool process looks whether the process that started it is still there.
PARENT_POLL_SECONDS = 0.5

_HOST = socket.gethostname()
#: thread ident -> failure marker of the job that thread computes now
_running: dict[int, str] = {}
_lock = threading.Lock()
_installed = False

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
    """Whether the run recorded a failure for the job while it ran: it gave up on it."""
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
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    if STOP_SIGNAL is not None:
        signal.signal(STOP_SIGNAL, _on_stop_signal)
    parent = os.getppid()
    watcher = threading.Thread(
        target=_watch_parent, args=(parent,), name="taskproc-parent-watch", daemon=True
    )
    watcher.start()


def _on_stop_signal(signum: int, frame: object) -> None:
    with _lock:
        marker = _running.get(threading.main_thread().ident or 0)
    if cancelled(marker):
        raise TaskCancelled("the run gave up on this task while it ran; nothing was cached")


def _watch_parent(parent: int) -> None:
    """End this pool process once the process that started it is gone (reparented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # nothing of the task under way is kept: values are written atomically
