"""Task files to items: roots, parametrize, ids, placement and upstream-first order.

Each task file contributes its roots: the task classes defined in it whose
``build_task`` needs no arguments, plus one root per parameter set of a class
marked ``@pytest.mark.parametrize``.  Every distinct task of the union of the
roots' graphs becomes one item, under the file that defines its class when
that file is collected, else under the file of the first root that reached it.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .graph import NodeKey, node_key
from .spec import spec_of

if TYPE_CHECKING:
    from .session import TaskprocSession

_MAX_PLAIN_ID = 32


def is_task_class(obj: Any) -> bool:
    return isinstance(obj, type) and "_tp_config" in obj.__dict__


def defining_file(cls: type) -> Path | None:
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    return Path(filename).resolve() if filename else None


def _needs_no_arguments(cls: Any) -> bool:
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in cls._tp_config.signature.parameters.values()
    )


def _parameter_sets(cls: type) -> list[tuple[dict[str, Any], str | None]] | None:
    """Keyword arguments and explicit id per root of a parametrized class, or None."""
    marks = [m for m in cls.__dict__.get("pytestmark", []) if m.name == "parametrize"]
    if not marks:
        return None
    axes: list[list[tuple[dict[str, Any], str | None]]] = []
    for mark in reversed(marks):  # decorators apply bottom-up; pytest ids read top-down
        argnames = mark.args[0]
        names = (
            [n.strip() for n in argnames.split(",")]
            if isinstance(argnames, str)
            else list(argnames)
        )
        ids = mark.kwargs.get("ids")
        axis = []
        for index, raw in enumerate(mark.args[1]):
            explicit = None
            values = raw
            if hasattr(raw, "values") and hasattr(raw, "marks"):  # pytest.param(...)
                values, explicit = raw.values, raw.id
                if len(names) == 1:
                    values = values[0]
            if len(names) == 1:
                values = (values,)
            if explicit is None and isinstance(ids, (list, tuple)) and index < len(ids):
                explicit = None if ids[index] is None else str(ids[index])
            elif explicit is None and callable(ids):
                made = ids(values[0] if len(names) == 1 else values)
                explicit = None if made is None else str(made)
            axis.append((dict(zip(names, values, strict=True)), explicit))
        axes.append(axis)
    combined = []
    for combo in itertools.product(*axes):
        kwargs: dict[str, Any] = {}
        parts: list[str] = []
        for values, explicit in combo:
            kwargs.update(values)
            if explicit is not None:
                parts.append(explicit)
        combined.append((kwargs, "-".join(parts) if len(parts) == len(combo) else None))
    return combined


def _value_id(name: str, value: Any) -> str:
    kind = type(value)
    if kind is str and value.isprintable() and 0 < len(value) <= _MAX_PLAIN_ID:
        return str(value)
    if kind in (int, float, bool, type(None)):
        return str(value)
    if hasattr(value, "_tp_config"):
        return type(value).__qualname__
    digest = hashlib.sha1(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()[:6]
    return f"{name}{digest}"


def task_item_name(task: Any) -> str:
    """``ClassName[ids]`` from the task's arguments, like pytest's parametrize ids."""
    parts = [_value_id(name, value) for name, value in spec_of(task).arguments.items()]
    base = type(task).__qualname__
    return f"{base}[{'-'.join(parts)}]" if parts else base


class RootError(pytest.Collector):
    """A root whose ``build_task`` raised: a collection error for that root only."""

    def __init__(self, *, error: BaseException, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def collect(self) -> list[Any]:
        raise self.error


class TaskFile(pytest.Module):
    """A task file: imported like a test module, collected as task items."""

    def collect(self) -> Iterator[Any]:
        session: TaskprocSession = self.config.pluginmanager.getplugin("taskproc-session")
        # Registered here, not when the node is made: pytest also makes nodes for
        # files beside the ones named on the command line, then drops them.
        session.task_files[self.path.resolve()] = self
        module = self.obj
        for name, cls in list(vars(module).items()):
            if not is_task_class(cls) or cls.__module__ != module.__name__ or name != cls.__name__:
                continue
            if inspect.isabstract(cls):
                continue
            params = _parameter_sets(cls)
            if params is None:
                if not _needs_no_arguments(cls):
                    continue  # a library task, used upstream only
                params = [({}, None)]
            for kwargs, explicit_id in params:
                try:
                    root = cls(**kwargs)
                except Exception as exc:
                    label = explicit_id or "-".join(_value_id(k, v) for k, v in kwargs.items())
                    yield RootError.from_parent(
                        self,
                        name=f"{cls.__qualname__}[{label}]" if label else cls.__qualname__,
                        error=exc,
                    )
                    continue
                session.add_root(root, self, explicit_id)
        yield from session.claim_items(self)


def upstream_first(roots: list[Any]) -> list[NodeKey]:
    """Every task of the roots' graphs, each after its upstream tasks, roots in the order given.

    A depth-first post-order keeps independent tasks in definition order, as
    pytest users expect; a plain topological sort may reverse them.
    """
    order: list[NodeKey] = []
    seen: set[NodeKey] = set()
    for root in roots:
        if node_key(root) in seen:
            continue
        seen.add(node_key(root))
        stack = [(root, iter(root._tp_upstream))]
        while stack:
            task, upstream = stack[-1]
            for up in upstream:
                if node_key(up) not in seen:
                    seen.add(node_key(up))
                    stack.append((up, iter(up._tp_upstream)))
                    break
            else:
                stack.pop()
                order.append(node_key(task))
    return order


def items_in_upstream_order(items: list[Any], order: dict[NodeKey, int]) -> list[Any]:
    """Task items sorted upstream-first in the slots task items held; other tests stay put."""
    task_positions = [i for i, item in enumerate(items) if hasattr(item, "task")]
    tasks = sorted((items[i] for i in task_positions), key=lambda it: order[node_key(it.task)])
    reordered = list(items)
    for position, item in zip(task_positions, tasks, strict=True):
        reordered[position] = item
    return reordered
