"""Executors named on the command line: ``process[:N]``, ``thread[:N]``, ``dask[:ADDRESS]``.

``dask`` alone starts a local Dask cluster of worker processes; with an
address (``dask:tcp://scheduler:8786``) it connects to a running scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
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
    return spec


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
        import distributed
    except ImportError as exc:
        raise ValueError(
            "executor 'dask' needs dask.distributed: pip install 'pytest-taskproc[dask]'"
        ) from exc
    # distributed is only partly typed; keep its objects as Any.
    dask: Any = distributed
    cluster: Any = None
    if address:
        client: Any = dask.Client(address)
    else:
        cluster = dask.LocalCluster(processes=True, threads_per_worker=1, dashboard_address=None)
        client = dask.Client(cluster)

    def close() -> None:
        client.close()
        if cluster is not None:
            cluster.close()

    executor: Executor = client.get_executor()
    return executor, close
