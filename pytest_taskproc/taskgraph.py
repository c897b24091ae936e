"""``task_graph(*roots)``: the task graph as a ``networkx.DiGraph``, with each task's state.

For users who analyse or draw their experiment with the tools they know
(``networkx`` algorithms, ``nx.nx_pydot``, Gephi).  Nodes are the tasks'
``(class name, canonical arguments)`` pairs, edges go from an upstream task
to the task that reads it, and planning is the run's own: records are read,
nothing is written and no value is loaded.
"""

from __future__ import annotations

from typing import Any

import networkx as nx  # type: ignore[import-untyped]

from .context import Context, cache_root
from .freshness import plan
from .graph import TaskGraph
from .inventory import folder_size

__all__ = ["task_graph"]


def task_graph(*roots: Any, detect_source_change: bool | None = None) -> nx.DiGraph:
    """The graph of ``roots`` and everything upstream of them, planned against the cache.

    Node attributes: ``task`` (the task object), ``label`` (its repr),
    ``cls`` (class name as in the cache), ``args`` (``task_args``),
    ``state`` (``"fresh"`` or ``"stale"``), ``reason`` (why it is stale, else
    None), ``task_id``, and where a result is cached: ``size`` (bytes of its
    result folder, data included), ``value_size`` (bytes of the stored
    value), ``seconds`` (how long ``run_task`` took) and ``computed_at``.
    """
    detect = Context.detect_source_change if detect_source_change is None else detect_source_change
    graph = TaskGraph(roots)
    states = plan(graph, cache_root(), detect)
    found = nx.DiGraph()
    for key in graph.order:
        state = states[key]
        task = state.task
        attributes: dict[str, Any] = {
            "task": task,
            "label": repr(task),
            "cls": key[0],
            "args": dict(state.spec.arguments),
            "state": "stale" if state.stale else "fresh",
            "reason": state.describe() if state.stale else None,
            "task_id": state.task_id,
        }
        record = state.record
        if record is not None and state.task_id is not None:
            attributes.update(
                size=folder_size(state.store.folder(state.task_id)),
                value_size=record.stored_size,
                seconds=record.made.get("seconds"),
                computed_at=record.made.get("at"),
            )
        found.add_node(key, **attributes)
    found.add_edges_from(graph.edges())
    return found
