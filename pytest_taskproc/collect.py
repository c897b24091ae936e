"""Task files to items: roots, parametrize, ids, placement and upstream-first order.

Each task file contributes its roots: the task classes defined in it whose
``build_task`` needs no arguments, plus one root per parameter set of a class
marked ``@pytest.mark.parametrize``.  Every distinct task of the union of the
roots' graphs becomes one item, under the file that defines its class when
that file is collected, else under the file of the first root that reached it.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
from _pytest._code.code import TerminalRepr, Traceback

from .graph import NodeKey, node_key
from .spec import spec_of

ParameterSetType = type(pytest.param(None))

if TYPE_CHECKING:
    from .session import TaskprocSession

_MAX_PLAIN_ID = 32


def is_task_class(obj: Any) -> bool:
    return isinstance(obj, type) and "_tp_config" in obj.__dict__


def defining_file(cls: type) -> Path | None:
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    return Path(filename).resolve() if filename else None


def is_base_class(cls: type) -> bool:
    """A class without a ``run_task`` of its own: a base for other task classes, not a root."""
    return bool(getattr(getattr(cls, "run_task", None), "_tp_placeholder", False))


def _needs_no_arguments(cls: Any) -> bool:
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in cls._tp_config.signature.parameters.values()
    )


class ParameterSet(NamedTuple):
    """One root of a parametrized class: its arguments, explicit id and marks."""

    kwargs: dict[str, Any]
    explicit_id: str | None
    marks: tuple[Any, ...]


def _parameter_sets(cls: type) -> list[ParameterSet] | None:
    """The roots of a class marked ``@pytest.mark.parametrize``, or None."""
    marks = [m for m in cls.__dict__.get("pytestmark", []) if m.name == "parametrize"]
    if not marks:
        return None
    axes: list[list[ParameterSet]] = []
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
            param_marks: tuple[Any, ...] = ()
            if isinstance(raw, ParameterSetType):  # pytest.param(..., id=..., marks=...)
                values, param_marks = raw.values, tuple(raw.marks)
                explicit = raw.id if isinstance(raw.id, str) else None
                if len(names) == 1:
                    values = values[0]
            if len(names) == 1:
                values = (values,)
            if explicit is None and isinstance(ids, (list, tuple)) and index < len(ids):
                explicit = None if ids[index] is None else str(ids[index])
            elif explicit is None and callable(ids):
                made = ids(values[0] if len(names) == 1 else values)
                explicit = None if made is None else str(made)
            axis.append(ParameterSet(dict(zip(names, values, strict=True)), explicit, param_marks))
        axes.append(axis)
    combined = []
    for combo in itertools.product(*axes):
        kwargs: dict[str, Any] = {}
        parts: list[str] = []
        combo_marks: list[Any] = []
        for one in combo:
            kwargs.update(one.kwargs)
            combo_marks.extend(one.marks)
            if one.explicit_id is not None:
                parts.append(one.explicit_id)
        explicit_id = "-".join(parts) if len(parts) == len(combo) else None
        combined.append(ParameterSet(kwargs, explicit_id, tuple(combo_marks)))
    return combined


def class_marks(cls: type) -> list[Any]:
    """The marks on a task class and its bases, as pytest applies them to test classes.

    ``parametrize`` is left out: on a task class it makes roots, not a mark of items.
    """
    found: list[Any] = []
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("pytestmark", [])
        for mark in own if isinstance(own, list) else [own]:
            mark = getattr(mark, "mark", mark)  # a MarkDecorator stored by hand
            if getattr(mark, "name", "parametrize") != "parametrize" and mark not in found:
                found.append(mark)
    return found


@functools.cache
def definition_line(cls: type) -> int | None:
    """0-based line of the ``class`` statement, for report locations, or None if unknown."""
    try:
        lines, start = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return None
    for offset, line in enumerate(lines):
        if line.lstrip().startswith("class "):  # past any decorator lines
            return start - 1 + offset
    return start - 1


def item_nodeid(parent: pytest.Collector, name: str) -> str:
    """The node id of a child named ``ClassName[ids]`` as pytest itself parses it back.

    pytest 9 keeps node ids structured (path, names, params in brackets) and
    reads the ids it cached for ``--lf``/``--ff``/``--nf``/``--sw`` that way;
    built from a name with the brackets in it, the item would never match
    them.  Passing the id as a string lets every pytest version parse it its
    own way, which is the way it parses the cache.
    """
    return f"{parent.nodeid}::{name}"


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

    def repr_failure(  # type: ignore[override]
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> str | TerminalRepr:
        """The user's own frames only: build_task and what it called, not pytest or us."""
        own = [entry for entry in excinfo.traceback if not _is_internal(entry.path)]
        if own:
            excinfo.traceback = Traceback(own)
        return excinfo.getrepr(style="short", funcargs=False)


_INTERNAL_DIRS = tuple(
    str(Path(module.__file__).resolve().parent) + os.sep
    for module in (pytest, sys.modules[__name__.rpartition(".")[0]])
    if module.__file__
)


def _is_internal(path: Any) -> bool:
    text = str(path)
    return text.startswith(_INTERNAL_DIRS) or f"{os.sep}_pytest{os.sep}" in text


def _reports_root_errors(config: pytest.Config) -> bool:
    """Whether this process reports roots whose build_task raised.

    Every xdist worker collects the same files, and xdist shows a collection
    error once only if the reports' texts are equal, which rendered
    tracebacks never are: so one worker reports them.
    """
    workerinput = getattr(config, "workerinput", None)
    return workerinput is None or workerinput.get("workerid") == "gw0"


def _as_text(excinfo: pytest.ExceptionInfo[BaseException], rendered: Any) -> str:
    """A task file's import error as text, the error first (pytest 7 shows only line 1)."""
    return f"{excinfo.typename}: {excinfo.value}\n\n{rendered}"


class TaskFile(pytest.Module):
    """A task file: imported like a test module, collected as task items."""

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        # Text, so that xdist shows an error every worker meets once.
        return _as_text(excinfo, super().repr_failure(excinfo))

    def collect(self) -> Iterator[Any]:
        session: TaskprocSession = self.config.pluginmanager.getplugin("taskproc-session")
        # Registered here, not when the node is made: pytest also makes nodes for
        # files beside the ones named on the command line, then drops them.
        session.task_files[self.path.resolve()] = self
        module = self.obj
        for name, cls in list(vars(module).items()):
            if not is_task_class(cls) or cls.__module__ != module.__name__ or name != cls.__name__:
                continue
            if inspect.isabstract(cls) or is_base_class(cls):
                continue
            params = _parameter_sets(cls)
            if params is None:
                if not _needs_no_arguments(cls):
                    continue  # a library task, used upstream only
                params = [ParameterSet({}, None, ())]
            for kwargs, explicit_id, marks in params:
                try:
                    root = cls(**kwargs)
                except Exception as exc:
                    if not _reports_root_errors(self.config):
                        continue
                    label = explicit_id or "-".join(_value_id(k, v) for k, v in kwargs.items())
                    name = f"{cls.__qualname__}[{label}]" if label else cls.__qualname__
                    yield RootError.from_parent(
                        self, name=name, nodeid=item_nodeid(self, name), error=exc
                    )
                    continue
                session.add_root(root, self, explicit_id, marks)
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
