"""The task graph: every task reachable upstream of some roots, as a DAG.

Nodes are ``(class name, canonical key)`` pairs with the task object as the
``task`` attribute; an edge ``u -> v`` means ``v`` requires ``u``.  Building
the graph does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import networkx as nx  # type: ignore[import-untyped]

from .errors import TaskCycleError

NodeKey = tuple[str, str]


def node_key(task: Any) -> NodeKey:
    return (task.task_name, task._tp_key)


class TaskGraph:
    """A DAG of tasks with a fixed upstream-first order."""

    def __init__(self, roots: Iterable[Any]) -> None:
        self.dag = nx.DiGraph()
        self.roots = [node_key(t) for t in roots]
        stack = list(roots)
        tasks: dict[NodeKey, Any] = {}
        for task in stack:
            tasks[node_key(task)] = task
        while stack:
            task = stack.pop()
            here = node_key(task)
            self.dag.add_node(here)
            for upstream in task._tp_upstream:
                there = node_key(upstream)
                self.dag.add_edge(there, here)
                if there not in tasks:
                    tasks[there] = upstream
                    stack.append(upstream)
        self.tasks = tasks
        try:
            self.order: list[NodeKey] = list(nx.topological_sort(self.dag))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(self.dag)
            path = " -> ".join(repr(tasks[u]) for u, _ in cycle)
            raise TaskCycleError(
                f"tasks require each other in a cycle, so none can run: {path}"
            ) from None

    def __len__(self) -> int:
        return len(self.tasks)
