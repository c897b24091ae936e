"""Task classes: construction, identity, properties and the public methods.

Constructing ``Cls(*args)`` binds the arguments, derives the canonical key and
returns the one instance of that task in this process, running ``build_task``
only the first time.  Instances pickle as "class + arguments", never with
their upstream graph, so a worker receives a few hundred bytes per task and
rebuilds what it needs with ``build_task``.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, Protocol, TypeVar, cast

from .cache import ClassStore, ensure_directory, get_store
from .context import Context
from .errors import RequirementTypeError, TaskCycleError, TaskDefinitionError
from .identity import (
    TASK_ARGS_TAG,
    TASK_TAG,
    bind_arguments,
    build_signature,
    canonical_arguments,
    encode_key,
)
from .requires import Const, MappedTask, Req, iter_slot_tasks

if TYPE_CHECKING:
    from typing_extensions import Self

P = ParamSpec("P")
R = TypeVar("R", covariant=True)
T = TypeVar("T")
K = TypeVar("K")

_REQ_NAMES = frozenset({"Req", "Requires", "RequiresList", "RequiresDict"})


@dataclass
class TaskClassConfig:
    """What the class keywords and the class body say about a task class."""

    name: str
    channels: tuple[str, ...]
    compress_level: int | None
    job_prefix: tuple[str, ...] | None
    detach_output: bool
    signature: inspect.Signature
    slots: tuple[Req[Any, Any], ...]
    registry: dict[str, TaskType[..., Any]] = field(default_factory=dict)


class _Runs(Protocol[R]):
    """Anything whose ``run_task`` returns ``R``: lets type checkers read the result type
    off a subclass's ``run_task``, with or without ``infer_task_type``."""

    def run_task(self) -> R: ...


_construct_lock = threading.RLock()
_building = threading.local()


class TaskType(Generic[P, R]):
    """Base of every task; subclass :class:`TaskBase` in user code."""

    _tp_config: ClassVar[TaskClassConfig]
    task_name: ClassVar[str]
    _tp_key: str
    _tp_canonical: dict[str, Any]
    _tp_call: tuple[tuple[Any, ...], dict[str, Any]]
    _tp_upstream: tuple[TaskType[..., Any], ...]

    def build_task(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Declare upstream requirements and attributes; override in subclasses."""

    def run_task(self) -> R:
        """Compute the result; override in subclasses."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define run_task")

    def __init_subclass__(
        cls,
        *,
        channel: str | Sequence[str] | None = None,
        compress_level: int | None = None,
        job_prefix: Sequence[str] | None = None,
        detach_output: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        _check_run_task(cls)
        name = f"{cls.__module__}.{cls.__qualname__}"
        _declare_annotated_slots(cls)
        cls.task_name = name
        cls._tp_config = TaskClassConfig(
            name=name,
            channels=(name, *_check_channels(cls, channel)),
            compress_level=_check_compress_level(cls, compress_level),
            job_prefix=_check_job_prefix(cls, job_prefix),
            detach_output=bool(detach_output),
            signature=build_signature(cls.build_task),
            slots=tuple(_collect_slots(cls)),
        )

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        config = cls.__dict__.get("_tp_config")
        if config is None:
            raise TypeError(f"{cls.__qualname__} is not a task class; subclass TaskBase")
        owner = cls.__qualname__
        bound = bind_arguments(owner, config.signature, args, kwargs)
        canonical = canonical_arguments(owner, bound)
        key = encode_key(canonical)
        with _construct_lock:
            existing = config.registry.get(key)
            if existing is not None:
                return cast("Self", existing)
            self = object.__new__(cls)
            state = self.__dict__
            state["_tp_key"] = key
            state["_tp_canonical"] = canonical
            state["_tp_call"] = (bound.args, bound.kwargs)
            stack: list[tuple[str, str, str]] = _building.__dict__.setdefault("stack", [])
            marker = (config.name, key, repr(self))
            for depth, entry in enumerate(stack):
                if entry[:2] == marker[:2]:
                    path = " -> ".join(e[2] for e in [*stack[depth:], marker])
                    raise TaskCycleError(
                        f"{owner}: tasks require each other in a cycle, so none can run: {path}"
                    )
            stack.append(marker)
            try:
                self.build_task(*bound.args, **bound.kwargs)
            finally:
                stack.pop()
            state["_tp_upstream"] = _collect_upstream(self, config)
            config.registry[key] = self
            return self

    def __init__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Construction happens in ``__new__``, once per distinct task."""

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._tp_call
        return (_rebuild_task, (type(self), args, kwargs))

    def __repr__(self) -> str:
        args, kwargs = self._tp_call
        shown = [_short_repr(a) for a in args]
        shown += [f"{k}={_short_repr(v)}" for k, v in kwargs.items()]
        return f"{type(self).__qualname__}({', '.join(shown)})"

    def _tp_identity(self) -> dict[str, Any]:
        return {TASK_TAG: self.task_name, TASK_ARGS_TAG: self._tp_canonical}

    def _tp_store(self) -> ClassStore:
        return get_store(Context.get_cache_root(), self.task_name)

    # -- properties ---------------------------------------------------------
    @property
    def task_id(self) -> int:
        return self._tp_store().task_id(self._tp_key)

    @property
    def task_args(self) -> dict[str, Any]:
        args: dict[str, Any] = json.loads(self._tp_key)
        return args

    @property
    def task_directory(self) -> Path:
        store = self._tp_store()
        path = store.data_dir(store.task_id(self._tp_key))
        ensure_directory(path)
        return path

    @property
    def task_stdout(self) -> Path:
        """What the last run printed; empty when it printed nothing or never ran."""
        store = self._tp_store()
        return _existing_output(store.stdout_path(store.task_id(self._tp_key)))

    @property
    def task_stderr(self) -> Path:
        store = self._tp_store()
        return _existing_output(store.stderr_path(store.task_id(self._tp_key)))

    # -- cache --------------------------------------------------------------
    def get_task_result(self: _Runs[T]) -> T:
        """The cached result, without running anything."""
        me = cast("TaskType[..., T]", self)
        store = me._tp_store()
        result: T = store.load_result(store.task_id(me._tp_key), me._tp_key)
        return result

    def clear_task(self) -> None:
        store = self._tp_store()
        store.clear_task(store.task_id(self._tp_key))

    @classmethod
    def clear_all_tasks(cls) -> None:
        get_store(Context.get_cache_root(), cls.task_name).clear_all()

    # -- running ------------------------------------------------------------
    def run_graph(
        self: _Runs[T],
        *,
        executor: Executor | None = None,
        max_workers: int | None = None,
        rate_limits: Mapping[str, int] | None = None,
        detect_source_change: bool | None = None,
        show_progress: bool = False,
    ) -> T:
        """Bring this task and everything upstream up to date; return its result."""
        return cast("TaskType[..., T]", self).run_graph_with_stats(
            executor=executor,
            max_workers=max_workers,
            rate_limits=rate_limits,
            detect_source_change=detect_source_change,
            show_progress=show_progress,
        )[0]

    def run_graph_with_stats(
        self: _Runs[T],
        *,
        executor: Executor | None = None,
        max_workers: int | None = None,
        rate_limits: Mapping[str, int] | None = None,
        detect_source_change: bool | None = None,
        dump_generations: bool = False,
        show_progress: bool = False,
    ) -> tuple[T, dict[str, Any]]:
        """Like :meth:`run_graph`; also returns ``{'stats': {class name: tasks run}}``."""
        from .execute import run_graph

        del dump_generations  # accepted for compatibility; generations are not recorded
        result, stats = run_graph(
            self,
            executor=executor,
            max_workers=max_workers,
            rate_limits=rate_limits,
            detect_source_change=detect_source_change,
            show_progress=show_progress,
        )
        return cast(T, result), stats

    def __getitem__(self: _Runs[Mapping[K, T]], key: K) -> MappedTask[T]:
        return MappedTask(cast("TaskType[..., Any]", self), (key,))


def _existing_output(path: Path) -> Path:
    """Output files are only written when a task prints; make the empty one on demand."""
    if not path.exists():
        ensure_directory(path.parent)
        try:
            with open(path, "x"):
                pass
        except FileExistsError:
            pass
    return path


def _rebuild_task(cls: type[TaskType[..., Any]], args: tuple[Any, ...], kwargs: Any) -> Any:
    return cls(*args, **kwargs)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_req_annotation(cls: type, annotation: Any) -> bool:
    from typing import get_origin

    if isinstance(annotation, str):
        head = annotation.split("[", 1)[0].strip().rsplit(".", 1)[-1]
        return head in _REQ_NAMES
    return annotation is Req or get_origin(annotation) is Req


def _declare_annotated_slots(cls: type) -> None:
    """``x: Requires[int]`` without ``= Req()`` declares a slot too."""
    try:
        annotations = inspect.get_annotations(cls, eval_str=True)
    except Exception:  # forward references: fall back to reading the strings
        annotations = inspect.get_annotations(cls)
    for name, annotation in annotations.items():
        if _is_req_annotation(cls, annotation) and not isinstance(cls.__dict__.get(name), Req):
            slot: Req[Any, Any] = Req()
            slot.__set_name__(cls, name)
            setattr(cls, name, slot)


def _collect_slots(cls: type) -> list[Req[Any, Any]]:
    seen: dict[str, Req[Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Req):
                seen[name] = value
    return list(seen.values())


def _collect_upstream(task: TaskType[..., Any], config: TaskClassConfig) -> tuple[Any, ...]:
    found: dict[int, Any] = {}
    for slot in config.slots:
        value = slot.raw_value(task)
        for upstream in iter_slot_tasks(task, slot.public_name, value):
            found.setdefault(id(upstream), upstream)
    return tuple(found.values())


def _check_run_task(cls: type) -> None:
    """A task class must define ``run_task``; a base class for other tasks may leave it out.

    Without this, a misspelt ``run_task`` would silently cache ``None``.  A
    class counts as a base when it derives from ``abc.ABC`` (or uses
    ``ABCMeta``) or defines neither ``build_task`` nor ``run_task`` (a class
    holding shared slots or helpers).  Such a class is not collected
    as a root, and running it is an error saying why.
    """
    if cls.__module__ == __name__:
        return  # TaskBase itself
    owner = next(k for k in cls.__mro__ if "run_task" in k.__dict__)
    method = owner.__dict__["run_task"]
    if owner.__module__ != __name__ and not getattr(method, "_tp_placeholder", False):
        return
    user_classes = [k for k in cls.__mro__ if k.__module__ != __name__ and k is not object]
    defines_build = any("build_task" in k.__dict__ for k in user_classes)
    if isinstance(cls, abc.ABCMeta) or not defines_build:
        setattr(cls, "run_task", _base_class_run_task)  # noqa: B010 - mypy: no such attribute
        return
    methods = [
        n for n, v in vars(cls).items() if callable(v) and n != "build_task" and n[:1] != "_"
    ]
    close = difflib.get_close_matches("run_task", methods, n=1, cutoff=0.6)
    hint = f" ({close[0]!r} is defined: a misspelling?)" if close else ""
    raise TaskDefinitionError(
        f"{cls.__qualname__} defines build_task but no run_task{hint}; every task class needs "
        "run_task(self) returning its result. A base class meant only to be subclassed "
        "should derive from abc.ABC, or define neither build_task nor run_task"
    )


def _base_class_run_task(self: Any) -> Any:
    raise TaskDefinitionError(
        f"{type(self).__qualname__} defines no run_task: it is a base class for other task "
        "classes, not a task to run"
    )


_base_class_run_task._tp_placeholder = True  # type: ignore[attr-defined]


def _check_channels(cls: type, channel: Any) -> tuple[str, ...]:
    if channel is None:
        return ()
    if isinstance(channel, str):
        return (channel,)
    labels = tuple(channel)
    if not all(isinstance(label, str) for label in labels):
        raise TypeError(
            f"{cls.__qualname__}: channel must be a str or a list of str, not {channel!r}"
        )
    return labels


def _check_compress_level(cls: type, level: Any) -> int | None:
    if level is None:
        return None
    if type(level) is not int or not -1 <= level <= 9:
        raise ValueError(
            f"{cls.__qualname__}: compress_level must be an int from -1 to 9 (zlib levels), "
            f"not {level!r}"
        )
    return level


def _check_job_prefix(cls: type, prefix: Any) -> tuple[str, ...] | None:
    if prefix is None:
        return None
    if isinstance(prefix, str) or not all(isinstance(p, (str, Path)) for p in prefix):
        raise TypeError(
            f"{cls.__qualname__}: job_prefix must be a list of strings, shell words that are "
            f"joined by spaces (e.g. ['srun', '-c', '4'] or ['srun -c 4']), not {prefix!r}"
        )
    return tuple(str(p) for p in prefix)


class TaskBase(TaskType[..., Any]):
    """Subclass this to define a task; without ``build_task`` it takes no arguments."""

    if not TYPE_CHECKING:
        # Hidden from type checkers so that subclasses may give build_task any
        # signature: TaskType declares it as taking anything.
        def build_task(self) -> None:
            pass

        def run_task(self) -> Any:
            return None


class TaskClassProtocol(Protocol[P, R]):
    def build_task(self, *args: P.args, **kwargs: P.kwargs) -> None: ...
    def run_task(self) -> R: ...


def infer_task_type(cls: type[TaskClassProtocol[P, R]]) -> type[TaskType[P, R]]:
    """Let type checkers see a task class's arguments and result type."""
    if not (isinstance(cls, type) and issubclass(cls, TaskType)):
        raise TypeError(f"infer_task_type: {cls!r} must subclass TaskBase")
    return cast("type[TaskType[P, R]]", cls)


Task = TaskType[..., R] | MappedTask[R]
TaskLike = Task[R] | Const[R]
Requires = Req[TaskLike[R], R]
RequiresList = Req[Sequence[TaskLike[R]], list[R]]
RequiresDict = Req[Mapping[K, TaskLike[R]], dict[K, R]]


__all__ = [
    "Const",
    "Req",
    "RequirementTypeError",
    "Requires",
    "RequiresDict",
    "RequiresList",
    "Task",
    "TaskBase",
    "TaskType",
    "infer_task_type",
]
