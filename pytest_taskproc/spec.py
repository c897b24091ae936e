"""The typed view of a task and of its class, shared by every stage of the pipeline.

A task object is user code (a ``TaskBase`` subclass instance); what the
library needs to know about it lives in one :class:`TaskSpec` made at
construction: its class name, canonical key, arguments, upstream tasks and
class configuration.  Modules read tasks through :func:`spec_of` instead of
reaching into private attributes, which keeps the modules that plan, store
and compute tasks independent of the module that defines them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeGuard

#: The attribute of a task instance that holds its spec (in the instance ``__dict__``).
SPEC_ATTR = "_tp_spec"
#: The attribute of a task class that holds its :class:`TaskClassConfig`.
CONFIG_ATTR = "_tp_config"

NodeKey = tuple[str, str]


class TaskObject(Protocol):
    """A task instance, as the library handles it: any ``TaskBase`` subclass's."""

    task_name: ClassVar[str]

    def run_task(self) -> Any: ...


@dataclass
class TaskClassConfig:
    """What the class keywords and the class body say about a task class."""

    name: str
    channels: tuple[str, ...]
    compress_level: int | None
    job_prefix: tuple[str, ...] | None
    detach_output: bool
    signature: inspect.Signature
    slots: tuple[Any, ...]
    #: canonical key -> the one task object of that key in this process
    registry: dict[str, Any] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        # A class pickled by value (made by a factory, defined in __main__)
        # carries its config; the tasks of this process stay here, since
        # rebuilding them there would run build_task on a half-restored class.
        state = dict(self.__dict__)
        state["registry"] = {}
        return state


@dataclass(eq=False)
class TaskSpec:
    """Everything the library knows about one task, fixed once ``build_task`` has run."""

    name: str
    key: str
    canonical: dict[str, Any]
    #: the call as bound to ``build_task`` (defaults applied), for pickling and repr
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: parameter name -> value as given (NumPy scalars as plain values)
    arguments: dict[str, Any]
    #: the tasks its requirement slots name, each once, in slot order
    upstream: tuple[Any, ...]
    config: TaskClassConfig
    #: the declared inputs its slots hold: (slot label, Const or InputFile, absolute path)
    inputs: tuple[tuple[str, Any, Any], ...] = ()
    #: digest of where its slots put each upstream task (slot, position, item taken), which
    #: the set of upstream tasks does not say; None without slots
    layout: str | None = None
    #: build_task has run (and ``upstream`` is final)
    built: bool = False
    #: build_task is running now
    building: bool = False

    @property
    def node(self) -> NodeKey:
        return (self.name, self.key)


def spec_of(task: Any) -> TaskSpec:
    """The spec of a task object (raises ``KeyError`` for anything that is not a task)."""
    spec: TaskSpec = task.__dict__[SPEC_ATTR]
    return spec


def node_key(task: Any) -> NodeKey:
    """``(class name, canonical key)``: the identity of a task across processes."""
    spec: TaskSpec = task.__dict__[SPEC_ATTR]
    return (spec.name, spec.key)


def config_of(cls: type) -> TaskClassConfig:
    config: TaskClassConfig = cls.__dict__[CONFIG_ATTR]
    return config


def is_task(value: Any) -> bool:
    """A task object (not a task class, which in a slot is a forgotten call)."""
    return not isinstance(value, type) and SPEC_ATTR in getattr(value, "__dict__", ())


def is_task_class(obj: Any) -> TypeGuard[type[Any]]:
    return isinstance(obj, type) and CONFIG_ATTR in obj.__dict__
