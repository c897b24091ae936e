"""Canonical identity of a task: its class name and its arguments as JSON.

Two constructions are one task exactly when their canonical JSON is equal, so
the encoding must never merge values Python keeps apart.  Plain JSON merges
tuples with lists and integer dict keys with string keys; those are written
with a tag (``{"__tuple__": [...]}``, ``{"__dict__": [[k, v], ...]}``) and every
other value is written exactly as the original ``taskproc`` wrote it, so the
common case stays readable in ``args.json``.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from .errors import TaskArgumentError

TASK_TAG = "__task__"
TASK_ARGS_TAG = "__args__"
TASK_ITEM_TAG = "__key__"
TUPLE_TAG = "__tuple__"
DICT_TAG = "__dict__"
RESERVED_KEYS = frozenset({TASK_TAG, TUPLE_TAG, DICT_TAG})

_SCALARS = (str, int, bool, type(None))


def build_signature(build_task: Callable[..., Any]) -> inspect.Signature:
    """``build_task``'s signature without ``self``, computed once per class."""
    signature = inspect.signature(build_task)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def bind_arguments(
    owner: str, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> inspect.BoundArguments:
    """Bind a construction's arguments to ``build_task``, defaults applied."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TaskArgumentError(f"{owner}: {exc}") from None
    bound.apply_defaults()
    return bound


def canonical_arguments(owner: str, bound: inspect.BoundArguments) -> dict[str, Any]:
    """The JSON data that identifies a task, from its bound ``build_task`` arguments."""
    canonical = {}
    for name, value in bound.arguments.items():
        try:
            canonical[name] = _canonical(value, owner, name)
        except RecursionError:
            raise TaskArgumentError(
                f"{owner}: argument {name!r} is nested too deeply to serve as a task's "
                "identity; pass a flatter value (or a task holding the data)"
            ) from None
    return canonical


def plain_value(value: Any) -> Any:
    """A private copy of ``value``, with NumPy scalars replaced by the Python values they equal.

    Lists, tuples and dicts are copied at every depth, so a caller that
    changes its ``params`` dict after ``Train(params)`` (a sweep in a loop)
    changes neither the task nor what its ``build_task`` sees; tasks and
    other objects stay themselves.  ``np.float64(0.5)`` and ``0.5`` must be
    one task (sweeps over ``np.linspace`` are common), and ``task_args``
    should show what the identity means.
    """
    numpy = sys.modules.get("numpy")
    try:
        return _plain(value, numpy.generic if numpy is not None else None)
    except RecursionError:
        return value  # canonical_arguments rejects it, naming the argument


def _plain(value: Any, generic: type | None) -> Any:
    kind = type(value)
    if kind in _SCALARS or kind is float:
        return value
    if generic is not None and isinstance(value, generic):
        return value.item()  # type: ignore[attr-defined]
    if kind is list:
        return [_plain(v, generic) for v in value]
    if kind is tuple:
        return tuple(_plain(v, generic) for v in value)
    if kind is dict:
        return {_plain(k, generic): _plain(v, generic) for k, v in value.items()}
    return value


#: One encoder for every key: ``json.dumps`` with options builds a new one per call,
#: which dominated planning large graphs (a key is encoded per record read).
_KEY_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def encode_key(canonical: dict[str, Any]) -> str:
    """The one string form of canonical arguments: sorted keys, no spaces."""
    return _KEY_ENCODER.encode(canonical)


def _canonical(value: Any, owner: str, where: str) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is float:
        if not math.isfinite(value):
            _reject(owner, where, value, "non-finite floats have no stable identity")
        return value
    if kind is list:
        return [_canonical(v, owner, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is tuple:
        return {TUPLE_TAG: [_canonical(v, owner, f"{where}[{i}]") for i, v in enumerate(value)]}
    if kind is dict:
        return _canonical_dict(value, owner, where)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):
        return _canonical(value.item(), owner, where)
    identity = getattr(value, "_tp_identity", None)
    # a task class has the method too, unbound: it is a forgotten call, rejected below
    if identity is not None and callable(identity) and not isinstance(value, type):
        return identity()
    _reject(
        owner,
        where,
        value,
        "accepted are str, int, finite float, bool, None, tasks, and lists, tuples "
        "and dicts of those",
    )


def _canonical_dict(value: dict[Any, Any], owner: str, where: str) -> Any:
    for key in value:
        if type(key) not in _SCALARS:
            _reject(owner, f"{where} key {key!r}", key, "dict keys must be str, int, bool or None")
    keys = list(value)
    # Key order is part of the identity: build_task sees the dict as given, and code
    # that iterates it (layers of a model, steps of a pipeline) depends on the order,
    # so {'b': 1, 'a': 2} and {'a': 2, 'b': 1} are two tasks.  A dict whose keys are
    # in sorted order keeps the plain form (the encoder sorts object keys); any other
    # order is spelt as its pairs, in order.
    if (
        all(type(k) is str for k in keys)
        and not RESERVED_KEYS.intersection(keys)
        and keys == sorted(keys)
    ):
        return {k: _canonical(v, owner, f"{where}[{k!r}]") for k, v in value.items()}
    pairs = [
        [_canonical(k, owner, where), _canonical(v, owner, f"{where}[{k!r}]")]
        for k, v in value.items()
    ]
    return {DICT_TAG: pairs}


def _reject(owner: str, where: str, value: Any, rule: str) -> Any:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    raise TaskArgumentError(
        f"{owner}: argument {where!r} has unsupported value {shown} "
        f"of type {type(value).__qualname__}; {rule}"
    )
