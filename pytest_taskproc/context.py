"""Process-wide settings: where the cache lives and how tasks are executed.

The names and environment variables are those of the original ``taskproc``
(``CP_CACHE_DIR``, ``CP_EXECUTOR``, ``CP_MAX_WORKERS``,
``CP_DETECT_SOURCE_CHANGE``), so code that configured ``Context`` keeps working.
Nothing here touches the filesystem: the cache root is resolved when a task is
first used, which lets the pytest plugin and the app choose it first.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


class Context:
    """Settings shared by every task of this process."""

    cache_dir: Path | None = None
    executor_name: str = os.environ.get("CP_EXECUTOR", "process")
    max_workers: int = int(os.environ.get("CP_MAX_WORKERS", "-1"))
    #: on unless ``CP_DETECT_SOURCE_CHANGE=0``: a wrong value is worse than a recompute
    detect_source_change: bool = _env_flag("CP_DETECT_SOURCE_CHANGE", default=True)
    #: warn when a running task reads a file it does not declare (also ``CP_AUDIT_READS=0``)
    audit_reads: bool = True

    @classmethod
    def get_cache_root(cls) -> Path:
        """The cache root: ``Context.cache_dir``, else ``$CP_CACHE_DIR``, else ``./.cache``."""
        chosen = cls.cache_dir
        if chosen is None:
            chosen = Path(os.environ.get("CP_CACHE_DIR") or ".cache")
        return Path(os.path.abspath(chosen))

    @classmethod
    def resolve_max_workers(cls, max_workers: int | None = None) -> int:
        """Negative counts mean "all CPUs but ``-n - 1``", as in the original."""
        wanted = cls.max_workers if max_workers is None else max_workers
        cpus = os.cpu_count() or 1
        if wanted < 0:
            wanted = cpus + 1 + wanted
        return max(1, wanted)

    @classmethod
    def get_executor(cls, max_workers: int | None = None) -> Executor:
        """A new pool of ``executor_name`` (``$CP_EXECUTOR``: process or thread)."""
        workers = cls.resolve_max_workers(max_workers)
        if cls.executor_name == "thread":
            return ThreadPoolExecutor(max_workers=workers)
        if cls.executor_name == "process":
            # multiprocessing costs tens of ms to import: only when a pool is made
            from concurrent.futures import ProcessPoolExecutor

            context = _process_context()
            if context.get_start_method() == "fork":
                # Every worker writes records naming the installed distributions:
                # found once here, forked workers inherit the table instead of
                # each reading every distribution's metadata again.
                from .installed import warm_up

                warm_up()
            from .cancel import prepare_pool_process

            # Each pool process can be asked to stop a task, and ends with its parent,
            # from its start: an idle one, too, must not outlive a run killed outright.
            pool = ProcessPoolExecutor if sys.version_info >= (3, 12) else _break_tolerant_pool()
            return pool(max_workers=workers, mp_context=context, initializer=prepare_pool_process)
        raise ValueError(
            f"unknown executor name {cls.executor_name!r} (CP_EXECUTOR); use 'process' or 'thread'"
        )


def _break_tolerant_pool() -> Any:
    """A process pool that survives its own breakdown with cancelled jobs pending.

    Before Python 3.12 a pool whose process was killed (Ctrl+C ends the workers
    at once; a straggler is killed at the end of a run) sets its error on every
    pending job, and one cancelled meanwhile makes that raise in the pool's
    manager thread, which pytest reports as an unhandled thread exception
    (3.12 ignores the cancelled ones; this does the same).
    """
    from concurrent.futures import InvalidStateError, ProcessPoolExecutor

    class Settled:
        """A job's future whose error is not set once it is cancelled."""

        def __init__(self, future: Any) -> None:
            self.future = future

        def set_exception(self, error: BaseException) -> None:
            with contextlib.suppress(InvalidStateError):
                self.future.set_exception(error)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.future, name)

    class Pool(ProcessPoolExecutor):
        def _start_executor_manager_thread(self) -> None:
            super()._start_executor_manager_thread()
            manager: Any = self._executor_manager_thread
            if manager is None or getattr(manager, "_tolerant", False):
                return
            broken = manager.terminate_broken

            def terminate_broken(cause: Any) -> None:
                for item in list(manager.pending_work_items.values()):
                    item.future = Settled(item.future)
                broken(cause)

            manager.terminate_broken = terminate_broken
            manager._tolerant = True

    return Pool


#: The cache root of the job running in this thread (set by the worker for the
#: duration of one task), so task properties used inside ``run_task`` see the
#: cache the job belongs to, whatever this process's own settings say.
job_cache_root: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "pytest_taskproc_job_cache_root", default=None
)

#: While a cached task is recomputed to verify it, the cache root whose layout
#: stands in for that one task's result folder: ``((class name, key), root)``.
#: Its ``task_directory``, ``task_stdout`` and ``task_stderr`` point there, so
#: the recomputation writes nothing in the real cache; every other task,
#: upstream ones included, keeps its real folder.
verify_scratch: contextvars.ContextVar[tuple[tuple[str, str], Path] | None] = (
    contextvars.ContextVar("pytest_taskproc_verify_scratch", default=None)
)

_fixed_root: tuple[object, Path] | None = None
_fixed_lock = threading.Lock()


def cache_root() -> Path:
    """The cache root tasks use now: the running job's, else this process's fixed root.

    The process's root is resolved when a task first needs it and then kept,
    so a task that changes the working directory or ``CP_CACHE_DIR`` does not
    move the cache under the rest of the run.  Assigning ``Context.cache_dir``
    in code is a deliberate choice and is followed.
    """
    global _fixed_root
    job = job_cache_root.get()
    if job is not None:
        return job
    setting = Context.cache_dir
    fixed = _fixed_root
    if fixed is not None and fixed[0] is setting:
        return fixed[1]
    with _fixed_lock:
        path = Context.get_cache_root()
        _fixed_root = (setting, path)
    return path


def forget_fixed_root() -> None:
    """Let the next task resolve the cache root again (for tests that move it on purpose)."""
    global _fixed_root
    _fixed_root = None


def _process_context() -> BaseContext:
    """How worker processes start.

    Forking is what the original used on Linux: it is the fastest, and it is
    the only method that works for scripts without an ``if __name__ ==
    "__main__"`` guard.  It is unsafe once the caller runs other threads
    (pytest-xdist, Dask, a thread pool), so then workers fork from a clean
    fork server instead; platforms without fork spawn.
    """
    import multiprocessing  # tens of ms to import: only when a pool is made

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and sys.platform.startswith("linux") and _threads() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["pytest_taskproc.poolpreload"])
        return ctx
    return multiprocessing.get_context("spawn")


def _threads() -> int:
    """The threads of this process that run Python code.

    ``threading`` knows only the threads it started, not those started with
    ``_thread`` (execnet's in a pytest-xdist worker), whose locks a fork
    copies all the same (Python 3.12+ warns of such a fork).  Every thread
    that runs Python code has a frame here.  Threads of C libraries that
    never run Python do not count: OpenBLAS (numpy) stops its own around a
    fork, and counting them would make every script that imports numpy
    start its pool from a fork server, which needs an ``if __name__ ==
    "__main__"`` guard in the script.
    """
    return max(len(sys._current_frames()), threading.active_count())
