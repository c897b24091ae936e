"""Cross-process locks that make every task computed exactly once.

Each task class has one lock file, ``locks/tasks.lock``; the lock of task
``id`` is byte ``id`` of that file, taken with a POSIX record lock
(``fcntl.lockf``).  This costs one system call per task instead of creating a
lock file per task, which measured 0.3-0.5 ms per task on an ext4 disk, and
record locks work over NFS.  The kernel releases them when the holder dies,
even by SIGKILL, so a killed run never blocks the next one.

Record locks belong to a process, not a thread, so threads of one process are
kept apart by an ordinary lock per task id first.  The file descriptor stays
open for the life of the process: closing any descriptor of the file would
drop every record lock the process holds on it.  Where ``fcntl`` is missing
(Windows), :mod:`filelock` locks one file per task instead.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections import defaultdict
from contextlib import AbstractContextManager
from types import TracebackType

from .cache import ClassStore
from .idtable import access_error

if sys.platform != "win32":
    import fcntl

_DEADLOCK_RETRY_SECONDS = 0.01


class _ClassLocks:
    """The lock file of one class in one process, and the per-id thread locks."""

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise access_error("open the lock file", path, exc) from None
        self.threads: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)
        self.guard = threading.Lock()

    def thread_lock(self, task_id: int) -> threading.Lock:
        with self.guard:
            return self.threads[task_id]


_class_locks: dict[tuple[int, str], _ClassLocks] = {}
_class_locks_guard = threading.Lock()


def _locks_for(store: ClassStore) -> _ClassLocks:
    key = (os.getpid(), store.name + "\0" + str(store.root))
    found = _class_locks.get(key)
    if found is None:
        with _class_locks_guard:
            found = _class_locks.get(key)
            if found is None:
                found = _ClassLocks(store.lock_path("tasks"))
                _class_locks[key] = found
    return found


class TaskLock:
    """Exclusive right to compute one task, across threads and processes."""

    __slots__ = ("_locks", "_thread_lock", "task_id")

    def __init__(self, store: ClassStore, task_id: int) -> None:
        self._locks = _locks_for(store)
        self._thread_lock = self._locks.thread_lock(task_id)
        self.task_id = task_id

    def __enter__(self) -> TaskLock:
        self._thread_lock.acquire()
        try:
            while True:
                try:
                    fcntl.lockf(self._locks.fd, fcntl.LOCK_EX, 1, self.task_id, os.SEEK_SET)
                    return self
                except OSError as exc:
                    # The kernel's deadlock detection sees processes, not
                    # threads, and can report a deadlock that is not one.
                    if exc.errno != errno.EDEADLK:
                        raise
                    time.sleep(_DEADLOCK_RETRY_SECONDS)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            fcntl.lockf(self._locks.fd, fcntl.LOCK_UN, 1, self.task_id, os.SEEK_SET)
        finally:
            self._thread_lock.release()


def task_lock(store: ClassStore, task_id: int) -> AbstractContextManager[object]:
    """The lock a process holds while it computes one task."""
    if sys.platform == "win32":  # pragma: no cover - no fcntl there
        from filelock import FileLock

        return FileLock(store.lock_path(str(task_id)), thread_local=False)
    return TaskLock(store, task_id)
