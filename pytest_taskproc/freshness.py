"""Why each task of a graph is fresh or stale.

A task is stale when it has no trustworthy result, when its class's source
changed after its result was made (if detection is on), when an upstream task
is stale, or when an upstream result is newer than its own.  The verdict for
every task comes from one upstream-first pass over stat() calls, with ids
looked up per class in one batch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .cache import ClassStore, get_store
from .graph import NodeKey, TaskGraph
from .source import class_source


class Reason(enum.Enum):
    """Why a task has to run; the value is the sentence shown to users."""

    MISSING = "no result yet"
    CLEARED = "its result was cleared"
    SOURCE_CHANGED = "its source code changed"
    UPSTREAM_STALE = "an upstream task is stale"
    UPSTREAM_NEWER = "an upstream result is newer"


@dataclass
class TaskState:
    """What the planner knows about one task."""

    task: Any
    store: ClassStore
    task_id: int
    timestamp: int | None
    reason: Reason | None = None
    detail: str = ""

    @property
    def stale(self) -> bool:
        return self.reason is not None

    def describe(self) -> str:
        if self.reason is None:
            return "fresh"
        return self.reason.value + (f" ({self.detail})" if self.detail else "")


def plan(
    graph: TaskGraph,
    root: Any,
    detect_source_change: bool,
    cleared: frozenset[NodeKey] = frozenset(),
) -> dict[NodeKey, TaskState]:
    """The state of every task in ``graph``, upstream first."""
    by_class: dict[str, list[NodeKey]] = {}
    for key in graph.order:
        by_class.setdefault(key[0], []).append(key)
    states: dict[NodeKey, TaskState] = {}
    source_times: dict[str, int] = {}
    for name, keys in by_class.items():
        store = get_store(root, name)
        ids = store.task_ids([k[1] for k in keys])
        cls: type = type(graph.tasks[keys[0]])
        source_times[name] = store.source_timestamp(class_source(cls))
        for key, task_id in zip(keys, ids, strict=True):
            states[key] = TaskState(
                task=graph.tasks[key],
                store=store,
                task_id=task_id,
                timestamp=store.result_timestamp(task_id, key[1]),
            )
    for key in graph.order:
        state = states[key]
        if key in cleared:
            state.reason = Reason.CLEARED
            continue
        if state.timestamp is None:
            state.reason = Reason.MISSING
            continue
        if detect_source_change and state.timestamp < source_times[key[0]]:
            state.reason = Reason.SOURCE_CHANGED
            continue
        for up in graph.dag.predecessors(key):
            upstate = states[up]
            if upstate.stale:
                state.reason, state.detail = Reason.UPSTREAM_STALE, repr(upstate.task)
                break
            assert upstate.timestamp is not None
            if upstate.timestamp > state.timestamp:
                state.reason, state.detail = Reason.UPSTREAM_NEWER, repr(upstate.task)
                break
    return states
