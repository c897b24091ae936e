"""Parameter sets, ids and marks of task classes, read the way pytest reads test classes."""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
from typing import Any, NamedTuple

import pytest

from ..spec import is_task_class, spec_of

ParameterSetType = type(pytest.param(None))

_MAX_PLAIN_ID = 32


class ParameterSet(NamedTuple):
    """One root of a parametrized class: its arguments, explicit id and marks."""

    kwargs: dict[str, Any]
    explicit_id: str | None
    marks: tuple[Any, ...]


def parameter_sets(cls: type) -> list[ParameterSet] | None:
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
    return list(_class_marks(cls))


@functools.lru_cache(maxsize=1024)
def _class_marks(cls: type) -> tuple[Any, ...]:
    # once per class, not per item; the classes' marks are set when they are defined
    found: list[Any] = []
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("pytestmark", [])
        for mark in own if isinstance(own, list) else [own]:
            mark = getattr(mark, "mark", mark)  # a MarkDecorator stored by hand
            if getattr(mark, "name", "parametrize") != "parametrize" and mark not in found:
                found.append(mark)
    return tuple(found)


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


def value_id(name: str, value: Any) -> str:
    kind = type(value)
    if kind is str and value.isprintable() and 0 < len(value) <= _MAX_PLAIN_ID:
        return str(value)
    if kind in (int, float, bool, type(None)):
        return str(value)
    if is_task_class(type(value)):
        return type(value).__qualname__
    digest = hashlib.sha1(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()[:6]
    return f"{name}{digest}"


def task_item_name(task: Any) -> str:
    """``ClassName[ids]`` from the task's arguments, like pytest's parametrize ids."""
    parts = [value_id(name, value) for name, value in spec_of(task).arguments.items()]
    base = type(task).__qualname__
    return f"{base}[{'-'.join(parts)}]" if parts else base


def skip_by_marks(item: pytest.Item) -> str | None:
    """Why ``item`` is skipped by its marks before it runs, or None.

    pytest evaluates ``skip``/``skipif``/``xfail(run=False)`` at an item's
    setup; a downstream item needs the same verdict for its upstream tasks,
    which may run elsewhere or not at all (deselected), so it asks pytest's
    own evaluation here.
    """
    try:
        from _pytest.skipping import evaluate_skip_marks, evaluate_xfail_marks
    except ImportError:  # pragma: no cover - a pytest that moved them
        return None
    skipped = evaluate_skip_marks(item)
    if skipped is not None:
        return f"skipped by its mark: {skipped.reason}"
    if not item.config.option.runxfail:
        xfailed = evaluate_xfail_marks(item)
        if xfailed is not None and not xfailed.run:
            return f"marked xfail(run=False): {xfailed.reason}"
    return None
