"""The task graph: every task reachable upstream of some roots, as a DAG.

Nodes are ``(class name, canonical key)`` pairs (see ``spec.node_key``);
``upstream(k)`` lists the tasks ``k`` requires, in the order its slots name
them.  Building the graph is one iterative walk (no recursion, so a chain of
a hundred thousand tasks is fine) and does no I/O.  Construction of tasks
already refuses cycles, so the graph is acyclic by the time it exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .spec import NodeKey, TaskObject, node_key, spec_of

__all__ = ["NodeKey", "TaskGraph", "node_key"]


class TaskGraph:
    """A DAG of tasks with a fixed upstream-first order."""

    def __init__(self, roots: Iterable[Any]) -> None:
        roots = list(roots)
        self.roots = [node_key(t) for t in roots]
        self.tasks: dict[NodeKey, TaskObject] = {}
        self._upstream: dict[NodeKey, list[NodeKey]] = {}
        self._downstream: dict[NodeKey, list[NodeKey]] = {}
        self.order: list[NodeKey] = []
        # Iterative depth-first post-order: each task after its upstream tasks,
        # independent tasks in the order they were named.
        for root in roots:
            key = node_key(root)
            if key in self.tasks:
                continue
            self._enter(key, root)
            stack = [(key, iter(spec_of(root).upstream))]
            while stack:
                here, pending = stack[-1]
                for up in pending:
                    there = node_key(up)
                    if there not in self.tasks:
                        self._enter(there, up)
                        stack.append((there, iter(spec_of(up).upstream)))
                        break
                else:
                    stack.pop()
                    self.order.append(here)
        for here in self.order:
            for there in self._upstream[here]:
                self._downstream[there].append(here)

    def _enter(self, key: NodeKey, task: Any) -> None:
        self.tasks[key] = task
        self._upstream[key] = list(dict.fromkeys(node_key(u) for u in spec_of(task).upstream))
        self._downstream[key] = []

    def upstream(self, key: NodeKey) -> list[NodeKey]:
        return self._upstream[key]

    def downstream(self, key: NodeKey) -> list[NodeKey]:
        return self._downstream[key]

    def edges(self) -> list[tuple[NodeKey, NodeKey]]:
        return [(u, v) for v in self.order for u in self._upstream[v]]

    def __len__(self) -> int:
        return len(self.tasks)
