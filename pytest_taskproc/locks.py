"""Cross-process locks that make every task computed exactly once.

Locks are ``fcntl``/``msvcrt`` file locks from :mod:`filelock`: the operating
system drops them when their holder dies, even by SIGKILL, so a lock left by a
killed process never blocks the next run.  The lock files themselves stay in
place; deleting a lock file another process is waiting on would let two
processes hold "the same" lock (see filelock's documentation on Unix locks).
"""

from __future__ import annotations

from filelock import FileLock

from .cache import ClassStore


def task_lock(store: ClassStore, task_id: int) -> FileLock:
    """The lock a process holds while it computes one task."""
    return FileLock(str(store.lock_path(task_id)), thread_local=False)
