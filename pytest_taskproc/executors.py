"""Executors: inline, and those named on the command line (``process``, ``thread``, ``dask``).

``dask`` alone starts a local Dask cluster of worker processes; with an
address (``dask:tcp://scheduler:8786``) it connects to a running scheduler.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from .context import Context

KINDS = ("process", "thread", "dask")


def check_spec(spec: str) -> str:
    """Validate an executor spec; raises ValueError with a one-line reason."""
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(
            f"unknown executor {spec!r}; use process[:N], thread[:N] or dask[:ADDRESS]"
        )
    if kind in ("process", "thread") and rest and not (rest.isdigit() and int(rest) > 0):
        raise ValueError(f"executor {spec!r}: the worker count must be a positive integer")
    if kind == "dask" and rest:
        _check_address(spec, rest)
    return spec


DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")


def _check_address(spec: str, address: str) -> None:
    scheme, sep, location = address.rpartition("://")
    host, _, port = location.rpartition(":")
    if (sep and scheme not in DASK_SCHEMES) or not host or not port.isdigit():
        raise ValueError(
            f"executor {spec!r}: a Dask scheduler address looks like tcp://HOST:PORT "
            f"(schemes: {', '.join(DASK_SCHEMES)}); leave it out to start a local cluster"
        )


def executor_width(executor: Executor) -> int:
    """How many jobs the executor runs at once, as far as it can be told."""
    if isinstance(executor, InlineExecutor):
        return 1
    current = getattr(executor, "current_width", None)  # executors whose width changes (Dask)
    if callable(current):
        return max(1, int(current()))
    width: object = getattr(executor, "_max_workers", None)
    if isinstance(width, int) and width > 0:
        return width
    client = getattr(executor, "_client", None)  # dask.distributed's ClientExecutor
    if client is not None:
        try:
            threads: int = sum(client.nthreads().values())
            return max(1, threads)
        except Exception:
            pass
    return os.cpu_count() or 1


class InlineExecutor(Executor):
    """Runs each job in the calling thread, so debuggers and ``-s`` see the task.

    Only ``Exception`` is caught into the future: KeyboardInterrupt and
    pytest's outcome exceptions keep propagating as they would from a plain call.
    """

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        __tracebackhide__ = True
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


def start_pool_server(spec: str) -> None:
    """For a ``process`` spec: start the server that pool workers fork from, now.

    A process with threads (pytest plugins start some) forks pool workers
    from a fork server, which takes a few tenths of a second to start and
    import the worker's modules (pytest included, which task files and
    outcomes need).  Started before the run imports and collects, that time
    overlaps the run's own start-up instead of delaying the first task.
    """
    if not check_spec(spec).startswith("process"):
        return
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["pytest_taskproc.poolpreload", "pytest"]
    )
    forkserver.ensure_running()


def make_executor(spec: str) -> tuple[Executor, Callable[[], None]]:
    """The executor for ``spec`` and a function that releases everything it started."""
    kind, _, rest = check_spec(spec).partition(":")
    if kind == "thread":
        pool: Executor = ThreadPoolExecutor(max_workers=int(rest) if rest else None)
        return pool, lambda: pool.shutdown(wait=True)
    if kind == "process":
        saved = Context.executor_name
        Context.executor_name = "process"
        try:
            pool = Context.get_executor(int(rest) if rest else None)
        finally:
            Context.executor_name = saved
        return pool, lambda: pool.shutdown(wait=True)
    return _dask(rest)


def _dask(address: str) -> tuple[Executor, Callable[[], None]]:
    try:
        from .dask_executor import start
    except ImportError as exc:
        raise ValueError(
            "executor 'dask' needs dask.distributed: pip install 'pytest-taskproc[dask]'"
        ) from exc
    executor = start(address)
    return executor, executor.shutdown


def adapt(executor: Executor) -> Executor:
    """The executor to run jobs on: Dask's ``ClientExecutor`` gets task names and shipped code."""
    if "distributed" not in sys.modules:
        return executor  # then it cannot be a Dask executor; avoid importing Dask
    from distributed.cfexecutor import ClientExecutor

    if isinstance(executor, ClientExecutor):
        from .dask_executor import adapt as adapt_dask

        return adapt_dask(executor)
    return executor
