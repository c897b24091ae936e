"""Running the stale part of a task graph: ``run_graph`` for ``run_task_graph`` and friends."""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from .cache import get_store
from .context import Context, cache_root
from .errors import CacheCorruptionWarning, CorruptResultError
from .executors import InlineExecutor
from .freshness import plan
from .graph import TaskGraph
from .ratelimit import ChannelLimiter
from .scheduler import GraphRun, assign_ids
from .spec import node_key, spec_of
from .worker import REPLAN_ERRORS

#: How often one call may plan again after a damaged result or an upstream value
#: that another process changed under it.
MAX_RECOVERIES = 8

__all__ = ["GraphRun", "InlineExecutor", "assign_ids", "discard_corrupt", "run_graph"]


def run_graph(
    task: Any,
    *,
    executor: Executor | None,
    max_workers: int | None,
    rate_limits: Mapping[str, int] | None,
    detect_source_change: bool | None,
    show_progress: bool,
) -> tuple[Any, dict[str, Any]]:
    """Make ``task`` and its upstream fresh; return its result and per-class run counts."""
    if executor is not None and max_workers is not None:
        raise ValueError("run_graph: give either executor or max_workers, not both")
    detect = Context.detect_source_change if detect_source_change is None else detect_source_change
    limiter = ChannelLimiter(rate_limits)
    root = cache_root()
    graph = TaskGraph([task])
    counts = dict.fromkeys(sorted({k[0] for k in graph.tasks}), 0)
    seconds = 0.0
    own: Executor | None = None
    run_id = uuid.uuid4().hex
    try:
        for _ in range(MAX_RECOVERIES):
            states = plan(graph, root, detect)
            root_state = states[node_key(task)]
            try:
                if any(s.stale for s in states.values()):
                    if executor is None and own is None:
                        own = Context.get_executor(max_workers)
                    run = GraphRun(
                        graph,
                        states,
                        root,
                        executor or own,  # type: ignore[arg-type]
                        limiter,
                        detect_source_change=detect,
                        show_progress=show_progress,
                        run_id=run_id,
                    )
                    start = time.perf_counter()
                    try:
                        run.run()
                    finally:
                        seconds += time.perf_counter() - start
                        for name, n in run.ran.items():
                            counts[name] += n
                assert root_state.task_id is not None
                result = root_state.store.load_value(root_state.task_id, spec_of(task).key)[0]
            except REPLAN_ERRORS as exc:
                if isinstance(exc, CorruptResultError):
                    discard_corrupt(root, exc)
                continue
            return result, {"stats": counts, "seconds": seconds}
        raise CorruptResultError(
            f"{task!r}: cached results kept coming back damaged or changed by another process "
            f"after {MAX_RECOVERIES} attempts; is something else writing to the cache?"
        )
    finally:
        if own is not None:
            own.shutdown(wait=True, cancel_futures=True)


def discard_corrupt(cache_root: Path, exc: CorruptResultError) -> None:
    """Warn about a damaged result and drop it, so the next plan recomputes it."""
    warnings.warn(CacheCorruptionWarning(f"{exc}; recomputing it"), stacklevel=3)
    store = get_store(cache_root, exc.task_name)
    task_id = store.known_id(exc.task_key)
    if task_id is not None:
        store.discard_result(task_id)
