"""Task classes: construction, identity, properties and the public methods.

Constructing ``Cls(*args)`` binds the arguments, derives the canonical key and
returns the one instance of that task in this process, running ``build_task``
only the first time.  Instances pickle as "class + arguments", never with
their upstream graph, so a worker receives a few hundred bytes per task and
rebuilds what it needs with ``build_task``.
"""

from __future__ import annotations

import inspect
import sys
import threading
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, Protocol, TypeVar, cast

from .context import cache_root, verify_scratch
from .definition import check_run_task
from .errors import (
    ClassNameConflictError,
    RequirementTypeError,
    ResultMissingError,
    TaskCycleError,
    TaskDefinitionError,
)
from .identity import (
    TASK_ARGS_TAG,
    TASK_TAG,
    bind_arguments,
    build_signature,
    canonical_arguments,
    encode_key,
    plain_value,
)
from .requires import INPUTS, Const, InputFile, MappedTask, Req, iter_slot_tasks, slot_layout
from .source import code_digest, note_class_defined
from .spec import SPEC_ATTR, TaskClassConfig, TaskObject, TaskSpec, is_task, spec_of

if TYPE_CHECKING:
    from typing_extensions import Self

    from .cache import ClassStore

# The cache, the scheduler and input hashing (``cache``, ``clearing``,
# ``execute``, ``inputs``) are imported where they are first used, not here:
# defining task classes, which every task file does when pytest imports it,
# needs none of them, and together they are most of the library's import time.

P = ParamSpec("P")
R = TypeVar("R", covariant=True)
T = TypeVar("T")
K = TypeVar("K")

_REQ_NAMES = frozenset({"Req", "Requires", "RequiresList", "RequiresDict"})


class _Runs(Protocol[R]):
    """Anything whose ``run_task`` returns ``R``: lets type checkers read the result type
    off a subclass's ``run_task``, with or without ``infer_task_type``."""

    def run_task(self) -> R: ...


_construct_lock = threading.RLock()
_building = threading.local()


class TaskType(Generic[P, R]):
    """Base of every task; subclass :class:`TaskBase` in user code."""

    _tp_config: ClassVar[TaskClassConfig]
    _task_config: ClassVar[_OriginalConfigView]
    task_name: ClassVar[str]

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
        note_class_defined(cls)
        if cls.__module__ != __name__:  # TaskBase itself has nothing to check
            check_run_task(cls)
        name = f"{cls.__module__}.{cls.__qualname__}"
        _declare_annotated_slots(cls)
        cls.task_name = name
        cls._tp_config = config = TaskClassConfig(
            name=name,
            channels=(name, *_check_channels(cls, channel)),
            compress_level=_check_compress_level(cls, compress_level),
            job_prefix=_check_job_prefix(cls, job_prefix),
            detach_output=bool(detach_output),
            signature=build_signature(cls.build_task),
            slots=tuple(_collect_slots(cls)),
        )
        cls._task_config = _OriginalConfigView(config)

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        config = cls.__dict__.get("_tp_config")
        if config is None:
            raise TypeError(f"{cls.__qualname__} is not a task class; subclass TaskBase")
        owner = cls.__qualname__
        bound = bind_arguments(owner, config.signature, plain_value(args), plain_value(kwargs))
        canonical = canonical_arguments(owner, bound)
        key = encode_key(canonical)
        with _construct_lock:
            existing = config.registry.get(key)
            if existing is not None:
                return cast("Self", existing)
            if not config.registry:
                _claim_name(cls)
            self = object.__new__(cls)
            self.__dict__[SPEC_ATTR] = TaskSpec(
                name=config.name,
                key=key,
                canonical=canonical,
                args=bound.args,
                kwargs=bound.kwargs,
                arguments=dict(bound.arguments),
                upstream=(),
                config=config,
            )
            config.registry[key] = self
            batch: list[Any] | None = _building.__dict__.get("batch")
            if batch is not None:
                # Made inside another task's build_task: built later by the
                # outermost construction, so a chain of tasks of any length
                # never nests build_task calls (no RecursionError).
                batch.append(self)
                return self
            _build_batch(self)
            return self

    def __init__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Construction happens in ``__new__``, once per distinct task."""

    def __reduce__(self) -> tuple[Any, ...]:
        spec = spec_of(self)
        return (_rebuild_task, (type(self), spec.args, spec.kwargs))

    def __repr__(self) -> str:
        spec = spec_of(self)
        args, kwargs = spec.args, spec.kwargs
        shown = [_short_repr(a) for a in args]
        shown += [f"{k}={_short_repr(v)}" for k, v in kwargs.items()]
        return f"{type(self).__qualname__}({', '.join(shown)})"

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set yet: a task named inside another
        # task's build_task is built later, unless someone needs its
        # attributes now (build_task code reading an upstream task's fields).
        spec = self.__dict__.get(SPEC_ATTR)
        if spec is not None and not spec.built and not spec.building and name[:2] != "__":
            with _construct_lock:
                _build(self)
            return getattr(self, name)
        raise AttributeError(f"{type(self).__qualname__!r} object has no attribute {name!r}")

    def _tp_identity(self) -> dict[str, Any]:
        return {TASK_TAG: self.task_name, TASK_ARGS_TAG: spec_of(self).canonical}

    def _tp_store(self) -> ClassStore:
        from .cache import get_store

        return get_store(cache_root(), self.task_name)

    def _tp_own_folder(self) -> tuple[ClassStore, int]:
        """The store and id whose result folder holds this task's directory and output files:
        its own, or a scratch one while the task is recomputed to be verified."""
        store = self._tp_store()
        spec = spec_of(self)
        task_id = store.task_id(spec.key)
        scratch = verify_scratch.get()
        if scratch is not None and scratch[0] == spec.node:
            from .cache import ClassStore

            return ClassStore(scratch[1], spec.name), task_id
        return store, task_id

    @property
    def _task_worker(self) -> _OriginalWorkerView:
        """What tests written for taskproc 0.11.2 read of a task's internals."""
        store = self._tp_store()
        return _OriginalWorkerView(store.data_dir(store.task_id(spec_of(self).key)))

    # -- properties ---------------------------------------------------------
    @property
    def task_id(self) -> int:
        """A small integer naming this task's folder, stable for the life of the cache."""
        return self._tp_store().task_id(spec_of(self).key)

    @property
    def task_args(self) -> dict[str, Any]:
        """The bound arguments as given (defaults applied; tuples and int keys kept)."""
        copied: dict[str, Any] = plain_value(spec_of(self).arguments)
        return copied

    @property
    def task_record(self) -> dict[str, Any] | None:
        """What the cached result was made from (see docs/concepts.md), or None without one."""
        store = self._tp_store()
        key = spec_of(self).key
        task_id = store.known_id(key)
        record = None if task_id is None else store.read_record(task_id, key)
        return None if record is None else record.as_dict()

    @property
    def task_directory(self) -> Path:
        """A folder for files the task writes: created on access, emptied before each run."""
        from .cache import ensure_directory

        store, task_id = self._tp_own_folder()
        path = store.data_dir(task_id)
        ensure_directory(path)
        return path

    @property
    def task_stdout(self) -> Path:
        """The file holding what the last run printed (empty if nothing, or no run yet)."""
        store, task_id = self._tp_own_folder()
        return _existing_output(store.stdout_path(task_id))

    @property
    def task_stderr(self) -> Path:
        """The file holding what the last run wrote to stderr (empty if nothing, or no run yet)."""
        store, task_id = self._tp_own_folder()
        return _existing_output(store.stderr_path(task_id))

    # -- cache --------------------------------------------------------------
    def get_task_result(self: _Runs[T]) -> T:
        """The cached result, without running anything (and without writing to the cache)."""
        me = cast("TaskType[..., T]", self)
        store = me._tp_store()
        key = spec_of(me).key
        task_id = store.known_id(key)
        if task_id is None:
            raise ResultMissingError(store.missing_message(key))
        result: T = store.load_value(task_id, key)[0]
        return result

    def clear_task(self) -> None:
        """Forget this task's result and its data directory."""
        store = self._tp_store()
        task_id = store.known_id(spec_of(self).key)
        if task_id is None:
            return
        # Under the task's lock: a process computing this task finishes first,
        # so the clear is not undone by a result committed just after it.
        from .clearing import clear_one

        clear_one(store, task_id)

    @classmethod
    def clear_all_tasks(cls) -> None:
        """Forget every result of the class, each under its task's lock (see clearing.py)."""
        from .cache import get_store
        from .clearing import clear_all

        clear_all(get_store(cache_root(), cls.task_name))

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
        del dump_generations  # accepted for compatibility; generations are not recorded
        from .execute import run_graph

        result, stats = run_graph(
            cast(TaskObject, self),
            executor=executor,
            max_workers=max_workers,
            rate_limits=rate_limits,
            detect_source_change=detect_source_change,
            show_progress=show_progress,
        )
        return cast(T, result), stats

    def __getitem__(self: _Runs[Mapping[K, T]], key: K) -> MappedTask[T]:
        return MappedTask(cast("TaskType[..., Any]", self), (key,))

    def __iter__(self) -> Any:
        # Without this, ``__getitem__`` would make ``list(task)`` build items
        # 0, 1, 2, ... forever.
        raise TypeError(
            f"{self!r} is a task, not its result, so it cannot be iterated; declare the "
            "attribute holding it as a requirement slot (`name: Requires[...]`) and iterate "
            "the slot inside run_task, where it holds the upstream result"
        )


class _OriginalConfigView:
    """``Cls._task_config`` as taskproc 0.11.2 had it (name, channels, db.compress_level),
    so tests written for it run unchanged; not part of this package's API."""

    def __init__(self, config: TaskClassConfig) -> None:
        self.name = config.name
        self.channels = config.channels
        self.db = _OriginalDatabaseView(config.compress_level)


class _OriginalDatabaseView:
    def __init__(self, compress_level: int | None) -> None:
        self.compress_level = compress_level


class _OriginalWorkerView:
    """``task._task_worker`` of taskproc 0.11.2: where the task directory will be."""

    def __init__(self, directory: Path) -> None:
        self._directory_uninit = directory


def _existing_output(path: Path) -> Path:
    """Output files are only written when a task prints; make the empty one on demand."""
    if not path.exists():
        from .cache import ensure_directory

        ensure_directory(path.parent)
        try:
            with open(path, "x"):
                pass
        except FileExistsError:
            pass
    return path


def _build_batch(first: Any) -> None:
    """Run ``build_task`` of ``first`` and of every new task it names, one after another."""
    batch = [first]
    _building.batch = batch
    try:
        index = 0
        while index < len(batch):  # grows while build_task names new tasks
            _build(batch[index])
            index += 1
        _refuse_cycles(batch)
    except BaseException:
        for task in batch:  # nothing of a failed construction stays registered
            spec = spec_of(task)
            spec.config.registry.pop(spec.key, None)
        raise
    finally:
        _building.batch = None


def _build(task: Any) -> None:
    spec = spec_of(task)
    if spec.built:
        return
    spec.building = True
    try:
        # A private copy: build_task may change what it is given without
        # changing the task's identity (or what a pool process rebuilds).
        task.build_task(*plain_value(spec.args), **plain_value(spec.kwargs))
    finally:
        spec.building = False
    _refuse_undeclared(task)
    spec.upstream = _collect_upstream(task, spec.config)
    spec.inputs = _collect_inputs(task, spec.config.slots)
    spec.layout = slot_layout(task, spec.config.slots)
    spec.built = True


def _requirement_like(value: Any) -> bool:
    return isinstance(value, (MappedTask, *INPUTS)) or is_task(value)


def _refuse_undeclared(task: Any) -> None:
    """A task (or ``Const``, ``InputFile``, item) kept in a plain attribute is never computed
    before ``run_task`` reads it, and its value is not in the record: refuse it by name."""
    for name, value in task.__dict__.items():
        if name.startswith("_tp_"):
            continue
        # Only a direct value: a list holding tasks may be plain data (an
        # argument kept for later), and iterating it cannot hang.
        if _requirement_like(value):
            cls = type(task).__qualname__
            raise TaskDefinitionError(
                f"{cls}: build_task of {task!r} assigned {_short_repr(value)} to the attribute "
                f"{name!r}, which is not a requirement slot, so it would never be computed or "
                f"recorded; declare it in the class body as `{name}: Requires[...]`"
            )


def _refuse_cycles(batch: list[Any]) -> None:
    """Tasks that require each other can never run: name them, in order."""
    members = {id(t) for t in batch}
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for root in batch:
        if state.get(id(root)):
            continue
        path = [root]
        stack = [iter(spec_of(root).upstream)]
        state[id(root)] = 1
        while stack:
            for up in stack[-1]:
                if id(up) not in members:
                    continue  # made by an earlier construction: complete and acyclic
                if state.get(id(up)) == 1:
                    loop = [*path[path.index(up) :], up]
                    raise TaskCycleError(
                        f"{type(loop[0]).__qualname__}: tasks require each other in a cycle, "
                        "so none can run: " + " -> ".join(repr(t) for t in loop)
                    )
                if not state.get(id(up)):
                    state[id(up)] = 1
                    path.append(up)
                    stack.append(iter(spec_of(up).upstream))
                    break
            else:
                state[id(path.pop())] = 2
                stack.pop()


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


_claims: dict[str, tuple[weakref.ref[type], object]] = {}


def _claim_name(cls: type) -> None:
    """One class object per task name in a process: two would share one cache folder.

    A class whose module was imported again (a reload, a test importing a
    fresh copy) is replaced, not in conflict: its module is gone from
    ``sys.modules``.  So is a class defined again in ``__main__`` (a notebook
    cell or a REPL line run again after an edit, or such a class unpickled by
    value in a pool worker): the newest definition is the one in use, and its
    own code digest decides what is stale.  Two live classes of one module and
    qualname, such as two classes made by one factory function, are refused
    by name.
    """
    name = f"{cls.__module__}.{cls.__qualname__}"
    module = sys.modules.get(cls.__module__)
    claim = _claims.get(name)
    other = claim[0]() if claim is not None else None
    same_module = claim is not None and claim[1] is module and module is not None
    interactive = cls.__module__ == "__main__"
    if (
        other is not None
        and other is not cls
        and same_module
        and not interactive
        and not _same_code(other, cls)
    ):
        raise ClassNameConflictError(
            f"two different task classes are both named {name} ({_where(other)} and "
            f"{_where(cls)}); they would share one cache folder, so the second may not be "
            "used. Give each class its own name (e.g. set __qualname__ in the factory)."
        )
    _claims[name] = (weakref.ref(cls), module)


def _collect_inputs(task: Any, slots: Any) -> tuple[tuple[str, Any, Any], ...]:
    from .inputs import collect_inputs  # not at the top: see the note on imports there

    return collect_inputs(task, slots)


def _same_code(one: type, other: type) -> bool:
    """Copies of one class (a process pool unpickles a factory-made class by value) are
    not a conflict; classes whose code or closed-over values differ are."""
    mine, theirs = code_digest(one), code_digest(other)
    return mine.matchable and mine.digest == theirs.digest


def _where(cls: type) -> str:
    try:
        return f"{inspect.getsourcefile(cls)}:{inspect.getsourcelines(cls)[1]}"
    except (OSError, TypeError):
        return f"class object at {id(cls):#x}"


def _collect_upstream(task: TaskType[..., Any], config: TaskClassConfig) -> tuple[Any, ...]:
    found: dict[int, Any] = {}
    for slot in config.slots:
        value = slot.raw_value(task)
        for upstream in iter_slot_tasks(task, slot.public_name, value):
            found.setdefault(id(upstream), upstream)
    return tuple(found.values())


def _check_channels(cls: type, channel: Any) -> tuple[str, ...]:
    if channel is None:
        return ()
    if isinstance(channel, str):
        return (channel,)
    labels = tuple(channel) if isinstance(channel, (list, tuple, set, frozenset)) else (None,)
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
TaskLike = Task[R] | Const[R] | InputFile
Requires = Req[TaskLike[R], R]
RequiresList = Req[Sequence[TaskLike[R]], list[R]]
RequiresDict = Req[Mapping[K, TaskLike[R]], dict[K, R]]


__all__ = [
    "Const",
    "InputFile",
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
