"""One task's computation: upstream values bound, output captured, value and record stored.

A :class:`Job` is what the scheduler planned for one task, complete enough
to cross a process boundary: the task (pickled as class + arguments), the
cache root, its id, the upstream values it must read (task, digest, lineage)
and the code digest the planner saw.  The process that computes it rebuilds
the task with ``build_task``; if what it rebuilds differs from the plan (a
module global or the code differs in that environment), it refuses instead
of caching a value made from another graph.  Whatever it reads is exactly
what the record it writes names.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import STDERR_NAME, STDOUT_NAME, ClassStore, get_store, root_path
from .cancel import computing, raise_if_cancelled
from .capture import captured_output
from .errors import (
    CacheAccessError,
    CorruptResultError,
    InputMissingError,
    PlanMismatchError,
    ResultMissingError,
    ResultNotPicklableError,
    TaskFailedError,
    UpstreamChangedError,
)
from .inputs import input_reads, missing_inputs, persist_stat_cache, written_files
from .ledger import marker_path
from .readaudit import watching_reads
from .record import InputRead, Record, UpstreamRead, made_now, new_lineage
from .recordmemory import Handed
from .relay import Relayed
from .requires import bound_slots, private_attributes, resolve_slot_value
from .source import UNMATCHABLE, CodeDigest, code_digest, named_code, pickled_by_value
from .spec import NodeKey, TaskObject, node_key, spec_of


@dataclass(frozen=True)
class RunSettings:
    """What every job of one run shares: where, how, and under which run id."""

    cache_root: str
    #: the run that computes the jobs, written into their records
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: whether a changed code digest makes a stored result stale
    detect_source_change: bool = False
    lock: bool = True
    echo: bool = False
    #: cross-process rate-limit slots (pytest runs); None inside one run_graph
    slots: Any = None
    #: where a pytest run records failed tasks, so no process of it retries one
    failure_dir: str | None = None
    #: print ``taskproc: done/total tasks`` to stderr while the pass runs
    show_progress: bool = False
    #: log each failure (a library run); a pytest run reports it with its item instead
    log_failures: bool = True
    #: warn about files a task reads without declaring them (``--taskproc-no-read-audit``:
    #: off for this run only, in every process of it, without touching the environment)
    audit_reads: bool = True


@dataclass
class Job:
    """One task to compute, self-contained enough to cross a process boundary."""

    task: TaskObject
    task_id: int
    settings: RunSettings
    #: the upstream values the planner expects this task to read
    reads: tuple[UpstreamRead, ...] = ()
    #: ids of the upstream tasks, sparing the computing process the lookups
    upstream_ids: tuple[int, ...] = ()
    #: per upstream task, its record as this run's job committed it (None: read it),
    #: so the computing process need not read and parse it again
    handed: tuple[Handed | None, ...] = ()
    #: the code digest the planner saw (None: no source available there)
    code: str | None = None
    in_prefix_child: bool = False

    @property
    def node(self) -> NodeKey:
        return node_key(self.task)


@dataclass
class Outcome:
    """What became of a job: the value the task now holds, and whether this job made it."""

    node: NodeKey
    digest: str
    lineage: str
    seconds: float
    computed: bool
    #: the run that made the value (None for results of unknown runs)
    run: str | None = None
    #: the record as the job committed it, for the jobs of downstream tasks (None: not known)
    handed: Handed | None = None
    #: warnings ``run_task`` raised in a pool process, for the caller to issue (see ``relay``)
    warnings: tuple[Relayed, ...] = ()

    @classmethod
    def of(
        cls, record: Record, seconds: float, computed: bool, handed: Handed | None = None
    ) -> Outcome:
        return cls(
            (record.name, record.key),
            record.digest,
            record.lineage,
            seconds,
            computed,
            record.made.get("run"),
            handed,
        )

    def read(self) -> UpstreamRead:
        return UpstreamRead(self.node[0], self.node[1], self.digest, self.lineage)


def describe(task: TaskObject, store: ClassStore, task_id: int | None) -> str:
    """One line naming a task for error messages: class, arguments, id and output files."""
    if task_id is None:
        return f"{task.task_name} {spec_of(task).key} (no task id yet)"
    return (
        f"{task.task_name} {spec_of(task).key} (task id {task_id}; "
        f"stdout {store.stdout_path(task_id)}, stderr {store.stderr_path(task_id)})"
    )


def check_plan(job: Job) -> CodeDigest:
    """Refuse to compute a task that differs here from what the planner saw; returns the
    code digest of its class here (which the record names)."""
    spec = spec_of(job.task)
    planned = [(r.name, r.key) for r in job.reads]
    rebuilt = [node_key(u) for u in spec.upstream]
    if sorted(planned) != sorted(rebuilt):
        missing = sorted(set(planned) - set(rebuilt))[:3]
        extra = sorted(set(rebuilt) - set(planned))[:3]
        raise PlanMismatchError(
            f"{job.task!r}: rebuilt in process {os.getpid()}, its build_task requires other "
            f"upstream tasks than the plan it was sent with (planned but not required here: "
            f"{missing}; required here but not planned: {extra}). This process's environment "
            "differs from the planner's (another version of the code, another module global); "
            "nothing was computed or cached for it."
        )
    code = code_digest(type(job.task))
    # A class that came by value from the planner (made in a function, or in ``__main__``)
    # is the planner's code, even where this process has no source to digest it the same way.
    by_value = pickled_by_value(type(job.task))
    comparable = code.matchable and job.code is not None and not job.code.startswith(UNMATCHABLE)
    if comparable and not by_value and code.digest != job.code:
        raise PlanMismatchError(
            f"{job.task!r}: the code of {spec.name} in process {os.getpid()} differs from the "
            "code the planner saw (another version of the task file or of a helper it uses); "
            "nothing was computed or cached for it."
        )
    return code


def compute(job: Job, store: ClassStore, created: bool = False) -> Record:
    """Run ``run_task`` with upstream values in place; store the value and its record."""
    __tracebackhide__ = True
    task = job.task
    spec = spec_of(task)
    config = spec.config
    root = root_path(job.settings.cache_root)
    code = check_plan(job)  # looked up once: checking it is valid costs per call
    inputs = read_inputs(task, root)
    new_folder, previous = store.begin_run(job.task_id, spec.key, created)
    expected = {(r.name, r.key): r for r in job.reads}
    ids = dict(zip(((r.name, r.key) for r in job.reads), job.upstream_ids, strict=False))
    handed = dict(zip(((r.name, r.key) for r in job.reads), job.handed, strict=False))

    def load(upstream: Any) -> Any:
        node = node_key(upstream)
        return _read_upstream(root, upstream, expected[node], ids.get(node), handed.get(node))

    output = None
    if config.detach_output:
        folder = store.folder(job.task_id)
        output = (f"{folder}{os.sep}{STDOUT_NAME}", f"{folder}{os.sep}{STDERR_NAME}")
    # A run that gives up on the task (a timeout) records its failure, then stops it here.
    failure_dir = job.settings.failure_dir
    marker = None if failure_dir is None else marker_path(failure_dir, store.name, job.task_id)
    with computing(marker):
        value, seconds = run_bound(
            task,
            load,
            output,
            echo=job.settings.echo,
            new_folder=new_folder,
            audit=job.settings.audit_reads,
        )
    raise_if_cancelled(marker)  # finished all the same: not kept
    try:
        stored = store.write_value(job.task_id, value, config.compress_level)
    except CacheAccessError:
        raise
    except Exception as exc:
        raise ResultNotPicklableError(
            f"{task!r}: run_task returned a {type(value).__qualname__} that cloudpickle cannot "
            f"serialise ({type(exc).__name__}: {exc}); nothing was cached for {task.task_name} "
            f"(task id {job.task_id})"
        ) from None
    del value
    files, written = written_files(f"{store.folder(job.task_id)}{os.sep}data")  # no Path per task
    digest = stored.digest
    value_code = named_code(stored.named)
    # A value reproduced byte for byte from the same upstream values (say,
    # after a code edit) keeps its lineage, so what was computed from it stays
    # fresh.  Anything else is a new value, and so is anything computed from a
    # new value: clearing a task recomputes everything downstream of it.
    lineage = None
    if (
        previous is not None
        and previous.digest == digest
        and previous.files == files  # the files it wrote count as part of its value
        and previous.upstream == job.reads
        and previous.value_code == value_code  # the code of the classes it names too
    ):
        lineage = previous.lineage
    record = Record(
        name=spec.name,
        key=spec.key,
        # the planner's digest: check_plan made sure this process runs that code
        code=job.code if job.code is not None else code.digest,
        code_parts=code.parts,
        upstream=job.reads,
        digest=digest,
        size=stored.size,
        file=stored.file,
        stored_size=stored.stored_size,
        lineage=lineage or new_lineage(),
        made=made_now(seconds, job.settings.run_id, type(task)),
        inputs=inputs,
        files=files,
        stat=stored.stat,
        written=written,
        layout=spec.layout,
        value_code=value_code,
    )
    store.commit(job.task_id, record)
    persist_stat_cache(root)
    return record


def run_bound(
    task: TaskObject,
    load: Callable[[Any], Any],
    output: tuple[str | Path, str | Path] | None,
    *,
    echo: bool = False,
    new_folder: bool = False,
    audit: bool = True,
) -> tuple[Any, float]:
    """Call ``run_task`` with its requirement slots bound to upstream values.

    ``load(upstream_task)`` gives an upstream value; it is called once per
    upstream task, however many slots name it.  ``output`` is where the
    task's prints go (stdout and stderr files), None to leave them alone.
    The values are dropped when ``run_task`` returns, so a finished task
    keeps nothing alive.  Returns the value and the seconds ``run_task`` took.
    """
    __tracebackhide__ = True
    loaded: dict[NodeKey, Any] = {}

    def load_once(upstream: Any) -> Any:
        node = node_key(upstream)
        if node not in loaded:
            loaded[node] = load(upstream)
        return loaded[node]

    resolved = {
        slot.public_name: resolve_slot_value(slot.raw_value(task), load_once, task, private=True)
        for slot in spec_of(task).config.slots
    }
    loaded.clear()
    start = time.perf_counter()
    with bound_slots(task, resolved), private_attributes(task):
        del resolved
        with watching_reads(task, audit):
            if output is not None:
                with captured_output(output[0], output[1], echo, new_folder=new_folder):
                    value = task.run_task()
            else:
                value = task.run_task()
    return value, time.perf_counter() - start


def read_inputs(task: Any, root: Path) -> tuple[InputRead, ...]:
    """The digests of the task's declared inputs, taken before it runs (what the record names);
    a missing input file is the task's one error."""
    spec = spec_of(task)
    inputs = input_reads(spec, root)
    missing = missing_inputs(spec, inputs)
    if missing:
        shown = ", ".join(str(p) for p in missing)
        raise InputMissingError(
            f"{task!r}: its input file {shown} does not exist; create it, or fix the path given "
            "to InputFile in build_task (a relative path is taken from the directory of the "
            "file defining the task class)"
        )
    return inputs


def _read_upstream(
    root: Path,
    upstream: Any,
    expected: UpstreamRead,
    task_id: int | None,
    handed: Handed | None = None,
) -> Any:
    """The value of an upstream task, exactly the one the plan named."""
    spec = spec_of(upstream)
    store = get_store(root, spec.name)
    if task_id is not None:
        # The planner's id, taken without asking the id table whether it is still the
        # one the id came from: the record read must name this very task (by its
        # arguments, or by the stamp of the file its writer handed on), so a folder
        # that changed hands is never read as this task's value.
        store.remember_id(spec.key, task_id)
        found: int | None = task_id
    else:
        found = store.known_id(spec.key)
    try:
        if found is None:
            raise ResultMissingError(f"no cached result for {spec.name} {spec.key}")
        given = None if handed is None else (handed, expected.digest, expected.lineage)
        value, record = store.load_value(found, spec.key, given)
    except ResultMissingError:
        raise _vanished(upstream) from None
    except CorruptResultError:
        if task_id is not None and not store.ids.confirms(spec.key, task_id):
            raise _vanished(upstream) from None  # its folder holds another task's result now
        raise
    if record.digest != expected.digest or record.lineage != expected.lineage:
        raise UpstreamChangedError(
            f"{upstream!r}: its value changed after it was planned (recomputed by another process?)"
        )
    return value


def _vanished(upstream: Any) -> UpstreamChangedError:
    return UpstreamChangedError(
        f"{upstream!r}: its result vanished while a downstream task was about to read it "
        "(cleared by another process?)"
    )


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in another process."""

    def __str__(self) -> str:
        return str(self.args[0])


def _class_home(cls: type) -> str | None:
    """The module ``cls`` can be imported from by its qualified name, if any.

    pytest's ``Failed`` and ``Skipped`` (from ``pytest.fail``/``pytest.skip``)
    name ``builtins`` as their module, so pickle cannot find them by name.
    """
    module = sys.modules.get(cls.__module__)
    if getattr(module, cls.__qualname__, None) is cls:
        home: str = cls.__module__
        return home
    for name, module in list(sys.modules.items()):
        if getattr(module, cls.__qualname__, None) is cls:
            return name
    return None


class _Rebuilt:
    """Pickles an exception as its class's path, arguments and attributes.

    This is what pickle does for an exception, made independent of the
    ``copyreg`` table, where libraries register reducers of their own for
    every exception (``distributed`` does, through tblib, losing the code of
    a ``SystemExit``), and of the module the class claims to live in.
    """

    def __init__(self, home: str, exc: BaseException) -> None:
        state = {**exc.__dict__, "__cause__": exc.__cause__}
        self.parts = (home, type(exc).__qualname__, exc.args, state)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, self.parts)


def _rebuild(home: str, name: str, args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    cls = getattr(importlib.import_module(home), name)
    try:
        exc: BaseException = cls(*args)
    except Exception:
        exc = cls.__new__(cls)
        exc.args = args
    for key, value in state.items():
        setattr(exc, key, value)
    return exc


def _plain_reduce(cls: type) -> bool:
    """Whether instances pickle the way every exception does by default."""
    default: Any = BaseException
    return getattr(cls, "__reduce_ex__", None) is default.__reduce_ex__ and (
        getattr(cls, "__reduce__", None) is default.__reduce__
    )


def portable_error(exc: BaseException, task: TaskObject) -> BaseException:
    """``exc`` ready to be pickled to another process, its traceback text attached as cause.

    Pickling keeps an exception's class, arguments and ``__dict__``, not its
    ``__cause__`` or traceback.  Unpickling sets every ``__dict__`` entry with
    ``setattr``, so a ``__cause__`` entry there becomes the real cause on
    arrival: the caller sees the remote traceback chained to the error, with
    the failing line of ``run_task`` in the other process, as taskproc 0.11.2
    shows through ``concurrent.futures``.  (An instance attribute by that name
    is shadowed by the built-in one until then, so nothing changes here.)
    """
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    home = _class_home(type(exc)) if _plain_reduce(type(exc)) else None
    if home is not None:
        try:
            pickle.dumps(exc.args), pickle.dumps(exc.__dict__)
        except Exception:
            pass
        else:
            exc.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
            return _Rebuilt(home, exc)  # type: ignore[return-value]
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = TaskFailedError(
            f"{task!r} raised {type(exc).__qualname__}, which cannot be pickled; "
            f"its traceback:\n{text}"
        )
    cause = RemoteTraceback(f'\n"""\n{text}"""')
    exc.__cause__ = cause
    exc.__dict__["__cause__"] = cause
    return exc
