"""Requirement slots and the values they may hold.

A slot is a descriptor: ``build_task`` stores tasks (or ``Const`` values, or
items of a task's result) in it, and inside ``run_task`` reading it gives the
upstream *results*.  Results are loaded by the executor before ``run_task``
starts and dropped afterwards, so a finished task does not keep its upstream
values alive.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .errors import (
    MissingItemError,
    RequirementTypeError,
    SlotReadInBuildError,
    UnsetRequirementError,
)
from .spec import SPEC_ATTR, is_task
from .valuedigest import is_immutable

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")

SLOT_PREFIX = "_tp_req_"
#: The upstream values of the tasks whose ``run_task`` runs now, by ``id`` of the task,
#: for ``Req.__get__``.  Kept out of the task's ``__dict__`` (which is the user's), and
#: process-wide rather than per thread or context, so threads ``run_task`` starts read
#: the same values.
_BOUND: dict[int, Mapping[str, Any]] = {}


@contextmanager
def bound_slots(task: object, values: Mapping[str, Any]) -> Iterator[None]:
    """Slots of ``task`` read as ``values`` (by slot name) while the block runs."""
    _BOUND[id(task)] = values
    try:
        yield
    finally:
        del _BOUND[id(task)]


class Req(Generic[T, R]):
    """A requirement slot: set to ``T`` in ``build_task``, read as ``R`` in ``run_task``."""

    public_name: str = "?"

    def __set_name__(self, owner: Any, name: str) -> None:
        self.public_name = name
        self.private_name = SLOT_PREFIX + name

    def __set__(self, obj: Any, value: T) -> None:
        obj.__dict__[self.private_name] = value

    @overload
    def __get__(self, obj: None, objtype: Any = None) -> Self: ...
    @overload
    def __get__(self, obj: object, objtype: Any = None) -> R: ...
    def __get__(self, obj: object | None, objtype: Any = None) -> Any:
        if obj is None:
            return self
        resolved = _BOUND.get(id(obj))
        if resolved is not None and self.public_name in resolved:
            return resolved[self.public_name]
        spec = obj.__dict__.get(SPEC_ATTR)
        if spec is not None and not spec.built:
            # Still inside build_task: no upstream result may exist yet, and one
            # that happens to be cached must not make this work only sometimes.
            raise SlotReadInBuildError(
                f"{type(obj).__qualname__}: requirement slot {self.public_name!r} was read inside "
                f"build_task of {obj!r}; a slot gives the upstream result only inside run_task. "
                "To use the upstream task itself in build_task, keep it in a local variable too"
            )
        return resolve_slot_value(self.raw_value(obj), load_task_result, obj)

    def raw_value(self, obj: Any) -> Any:
        """What ``build_task`` stored, or a clear error naming class and slot."""
        try:
            return obj.__dict__[self.private_name]
        except KeyError:
            raise UnsetRequirementError(
                f"{type(obj).__qualname__}: requirement slot {self.public_name!r} was not set "
                f"by build_task of {obj!r}; assign a task, task['key'], Const(value) or "
                "InputFile(path) to it"
            ) from None


@dataclass(frozen=True)
class Const(Generic[R]):
    """A plain value standing where a requirement is expected."""

    value: R

    def get_task_result(self) -> R:
        """The value itself, as a task's cached result would be read."""
        return self.value


class InputFile:
    """A file or directory a task reads, declared in a ``Requires[Path]`` slot.

    Its content is an input of the task like an upstream value: the record
    holds the path as written and the SHA-256 of the content, and new content
    makes the task stale.  A relative path is taken relative to the directory
    of the file that defines the task class; inside ``run_task`` the slot
    holds the absolute ``Path``.
    """

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"InputFile takes a path (str or Path), not {path!r:.100}")
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"InputFile({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InputFile) and other.path == self.path

    def __hash__(self) -> int:
        return hash(("InputFile", self.path))

    def resolve(self, owner: Any) -> Path:
        """The absolute path, a relative one taken from the directory of ``owner``'s class file."""
        path = Path(self.path).expanduser()
        if path.is_absolute():
            return path
        return Path(os.path.abspath(class_directory(type(owner)) / path))


def class_directory(cls: type) -> Path:
    """The directory of the file defining ``cls``; the working directory when there is none
    (a class typed into a REPL)."""
    import sys

    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    return Path(os.path.abspath(file)).parent if file else Path.cwd()


#: what may stand in a requirement slot besides tasks: values, not computations
INPUTS = (Const, InputFile)


class MappedTask(Generic[R]):
    """An item of a task's result (``task['key']``, nestable) usable as a requirement."""

    __slots__ = ("origin", "path", "slot")

    # The origin is a task object; typed loosely so that this module stays
    # below task.py, which builds on it.
    def __init__(self, origin: Any, path: tuple[Any, ...]) -> None:
        self.origin = origin
        self.path = path
        #: "Task(args): requirement slot 'name'", once build_task put it in a slot
        self.slot: str | None = None

    def __getitem__(self, key: Any) -> MappedTask[Any]:
        return MappedTask(self.origin, (*self.path, key))

    def __iter__(self) -> Any:
        raise TypeError(f"{self!r} is an item of a task's result, so it cannot be iterated")

    def __repr__(self) -> str:
        return repr(self.origin) + "".join(f"[{k!r}]" for k in self.path)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MappedTask)
            and other.origin is self.origin
            and other.path == self.path
        )

    def __hash__(self) -> int:
        return hash((id(self.origin), repr(self.path)))

    def get_origin(self) -> Any:
        return self.origin

    def get_args(self) -> list[Any]:
        return list(self.path)

    def select(self, value: Any) -> Any:
        for depth, key in enumerate(self.path):
            try:
                value = value[key]
            except (LookupError, TypeError):
                raise MissingItemError(self._missing(depth, value, key)) from None
        return value

    def _missing(self, depth: int, value: Any, key: Any) -> str:
        holder = repr(self.origin) + "".join(f"[{k!r}]" for k in self.path[:depth])
        where = f"{self.slot} reads {self!r}" if self.slot else f"{self!r}"
        kind = type(value).__qualname__
        if isinstance(value, Mapping):
            keys = [repr(k) for k in list(value)[:10]]
            more = f" and {len(value) - 10} more" if len(value) > 10 else ""
            has = f"its keys: {', '.join(keys)}{more}" if keys else "it is empty"
            problem = f"the {kind} {holder} has no key {key!r}; {has}"
        elif isinstance(value, (list, tuple)):
            problem = f"the {kind} {holder} has {len(value)} items, so no index {key!r}"
        else:
            problem = f"{holder} is a {kind}, which has no item {key!r}"
        return f"{where}, but {problem}"

    def get_task_result(self) -> R:
        result: R = self.select(self.origin.get_task_result())
        return result

    def _tp_identity(self) -> dict[str, Any]:
        from .identity import TASK_ITEM_TAG, _canonical

        out = dict(self.origin._tp_identity())
        out[TASK_ITEM_TAG] = [_canonical(k, repr(self.origin), "key") for k in self.path]
        return out


def iter_slot_tasks(owner: Any, slot: str, value: Any) -> Iterator[Any]:
    """The upstream tasks a slot value refers to; rejects anything else by name."""
    if isinstance(value, INPUTS):
        return
    if isinstance(value, MappedTask):
        _name_slot(value, owner, slot)
        yield value.origin
    elif is_task(value):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _single(owner, slot, item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _single(owner, slot, item)
    else:
        _bad_slot(owner, slot, value)


def _name_slot(value: MappedTask[Any], owner: Any, slot: str) -> None:
    """Let a missing item name the slot that asked for it (the first one, if shared)."""
    if value.slot is None:
        value.slot = f"{owner!r}: requirement slot {slot!r}"


def _single(owner: Any, slot: str, value: Any) -> Iterator[Any]:
    if isinstance(value, INPUTS):
        return
    if isinstance(value, MappedTask):
        _name_slot(value, owner, slot)
        yield value.origin
    elif is_task(value):
        yield value
    else:
        _bad_slot(owner, slot, value)


def _bad_slot(owner: Any, slot: str, value: Any) -> None:
    raise RequirementTypeError(
        f"{type(owner).__qualname__}: requirement slot {slot!r} of {owner!r} holds "
        f"{type(value).__qualname__} {value!r:.100}; expected a task, task['key'], Const(value), "
        "InputFile(path), or a list or dict of those"
    )


def resolve_slot_value(value: Any, load: Any, owner: Any = None, private: bool = False) -> Any:
    """Replace every task in a slot value by its result, via ``load(task)``;
    an ``InputFile`` by its absolute path (relative to ``owner``'s class file).
    ``private``: a ``Const`` value that can change as a copy (for ``run_task``)."""
    if isinstance(value, Const):
        return private_copy(value.value) if private else value.value
    if isinstance(value, InputFile):
        return value.resolve(owner)
    if isinstance(value, MappedTask):
        return value.select(load(value.origin))
    if is_task(value):
        return load(value)
    if isinstance(value, (list, tuple)):
        return [resolve_slot_value(v, load, owner, private) for v in value]
    if isinstance(value, Mapping):
        return {k: resolve_slot_value(v, load, owner, private) for k, v in value.items()}
    raise RequirementTypeError(f"unsupported requirement value {value!r:.100}")


def private_copy(value: Any) -> Any:
    """A copy of a ``Const`` value for one ``run_task``, unless it cannot change.

    A list or dict given to ``Const`` is often a module's object shared by
    many tasks (a sweep's base config): a task that changes its copy in place
    would otherwise change what the next task in this process computes from,
    while that task's record names the value it was planned with.
    """
    if is_immutable(value):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:
        return value  # not copyable (it holds a lock, a connection): as the original does


@contextmanager
def private_attributes(task: object) -> Iterator[None]:
    """The task's own attributes that can change, as copies while the block runs.

    ``build_task`` runs once per process and the task object is kept: a
    ``run_task`` that changes ``self.params`` in place would leave that for
    the next run of the same task in this process (after a failure, a
    ``clear_task``, a rerun), which would compute from it while its record
    names the task's arguments.  The copies are dropped afterwards, as a pool
    process's are.
    """
    own = vars(task)
    originals = {k: v for k, v in own.items() if not k.startswith("_tp_")}
    own.update({k: private_copy(v) for k, v in originals.items()})
    try:
        yield
    finally:
        own.update(originals)


def slot_leaves(task: Any, slots: Any) -> list[tuple[str, Any]]:
    """Every task, item, ``Const`` and ``InputFile`` the slots hold, in order, each with
    where it stands: ``data``, ``files[2]``, ``grid['a']``."""
    found: list[tuple[str, Any]] = []
    for slot in slots:
        _leaves(slot.public_name, slot.raw_value(task), found)
    return found


def _leaves(label: str, value: Any, found: list[tuple[str, Any]]) -> None:
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _leaves(f"{label}[{index}]", item, found)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _leaves(f"{label}[{key!r}]", item, found)
    else:
        found.append((label, value))


def slot_layout(task: Any, slots: Any) -> str | None:
    """A digest of where the task's slots put each upstream task: which slot, which position
    in a list or under which key of a dict (in order), and which item of its result.

    Two builds that name the same upstream tasks may still hand ``run_task``
    other values: ``[Leaf(2), Leaf(1)]`` for ``[Leaf(1), Leaf(2)]``, ``Src()['b']``
    for ``Src()['a']``, the same two tasks in swapped slots (an order or a key
    read from a file by ``build_task``).  Inputs (``Const``, ``InputFile``) are
    recorded by slot and position already; here they only hold their place.
    """
    if not slots:
        return None
    text = "\x1f".join(f"{label}\x1e{_placed(leaf)}" for label, leaf in slot_leaves(task, slots))
    return hashlib.sha256(text.encode()).hexdigest()


def _placed(leaf: Any) -> str:
    if isinstance(leaf, MappedTask):
        return _placed(leaf.origin) + "\0" + repr(leaf.path)
    if is_task(leaf):
        spec = leaf.__dict__[SPEC_ATTR]
        return f"{spec.name}\0{spec.key}"
    return "Const" if isinstance(leaf, Const) else "InputFile"


def load_task_result(task: Any) -> Any:
    return task.get_task_result()


__all__ = ["Const", "InputFile", "MappedTask", "Req"]
