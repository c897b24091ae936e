"""Computing one task, wherever it runs: in the caller, a pool worker, or a job_prefix child.

A :class:`Job` carries only what the computation needs: the task (pickled as
class + arguments), the cache root, its id and its direct upstream ids, and
what the scheduler saw of its result.  Upstream results are read from the
cache, never shipped along.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from .atomic import write_text_atomic
from .cache import ClassStore, get_store
from .capture import captured_output
from .context import Context
from .errors import ResultNotPicklableError, TaskFailedEarlierError, TaskFailedError
from .graph import NodeKey, node_key
from .locks import task_lock
from .ratelimit import FileSlots
from .requires import RESOLVED_ATTR, resolve_slot_value
from .serialize import dump_result


@dataclass
class Job:
    """One task to compute, self-contained enough to cross a process boundary."""

    task: Any
    cache_root: str
    task_id: int
    upstream_ids: tuple[tuple[str, str, int], ...] = ()
    #: the result mtime the scheduler saw; a different one means another process made it
    observed: int | None = None
    #: newest upstream result mtime; the new result must be newer
    not_before: int = 0
    lock: bool = True
    echo: bool = False
    in_prefix_child: bool = False
    origin_pid: int = field(default_factory=os.getpid)
    #: cross-process rate-limit slots (pytest runs); None inside one run_graph
    slots: FileSlots | None = None
    #: where a pytest run records failed tasks, so no process of it retries one
    failure_dir: str | None = None


@dataclass
class Outcome:
    """What became of a job."""

    node: NodeKey
    timestamp: int
    seconds: float
    computed: bool


def describe(task: Any, store: ClassStore, task_id: int) -> str:
    """One line naming a task for error messages: class, arguments, id and output files."""
    return (
        f"{task.task_name} {task._tp_key} (task id {task_id}; "
        f"stdout {store.stdout_path(task_id)}, stderr {store.stderr_path(task_id)})"
    )


def run_job(job: Job) -> Outcome:
    """Compute the job's task unless another process already did; see :class:`Outcome`."""
    __tracebackhide__ = True
    task = job.task
    root = Path(job.cache_root)
    if os.getpid() != job.origin_pid and Context.get_cache_root() != root:
        # A worker process may not share the caller's settings (fork server,
        # Dask, job_prefix); task properties used inside run_task must see
        # the caller's cache.
        Context.cache_dir = root
    store = get_store(root, task.task_name)
    store.remember_id(task._tp_key, job.task_id)
    for name, key, task_id in job.upstream_ids:
        get_store(root, name).remember_id(key, task_id)
    guard = task_lock(store, job.task_id) if job.lock else contextlib.nullcontext()
    with guard:
        current = store.result_timestamp(job.task_id, task._tp_key, warn=False)
        if current is not None and current != job.observed and current > job.not_before:
            return Outcome(node_key(task), current, 0.0, computed=False)
        marker = failure_marker(job, store)
        if marker is not None and os.path.exists(marker):
            with open(marker, encoding="utf-8") as handle:
                summary = handle.read()
            raise TaskFailedEarlierError(f"{task!r} failed earlier in this run: {summary}", summary)
        running = None if marker is None else marker + RUNNING_SUFFIX
        if marker is not None and os.path.exists(marker + RUNNING_SUFFIX):
            # Its last holder of the lock died computing it (a timeout, the OOM
            # killer): recomputing would only pay for that again in this run.
            summary = (
                "TaskDiedError: the process computing it died before it finished "
                "(killed by a timeout, a signal or the out-of-memory killer)"
            )
            write_text_atomic(marker, summary)
            raise TaskFailedEarlierError(f"{task!r} failed earlier in this run: {summary}", summary)
        start = time.perf_counter()
        slot = job.slots.hold(task._tp_config.channels) if job.slots else contextlib.nullcontext()
        try:
            if running is not None:
                os.makedirs(os.path.dirname(running), exist_ok=True)
                # Only its existence counts, so no atomic write: one create, one unlink.
                os.close(os.open(running, os.O_CREAT | os.O_WRONLY, 0o644))
            with slot:
                if task._tp_config.job_prefix is not None and not job.in_prefix_child:
                    from .jobprefix import run_through_prefix

                    timestamp = run_through_prefix(replace(job, lock=False, slots=None), store)
                else:
                    timestamp = compute(job, store)
        except BaseException as exc:
            # Whatever ended run_task, pytest's outcomes and SystemExit included;
            # only KeyboardInterrupt stops the run without a verdict on the task.
            if marker is not None and not isinstance(exc, KeyboardInterrupt):
                # Written while the lock is held, so a process waiting for this
                # task learns of the failure instead of computing it again.
                os.makedirs(os.path.dirname(marker), exist_ok=True)
                write_text_atomic(marker, summarize(exc))
            raise
        finally:
            if running is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(running)
        return Outcome(node_key(task), timestamp, time.perf_counter() - start, computed=True)


def summarize(error: BaseException) -> str:
    """``Type: first line of the message``, for skip reasons and failure markers."""
    if isinstance(error, TaskFailedEarlierError):
        return error.summary
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


#: next to a failure marker while a process computes the task; left behind if it dies
RUNNING_SUFFIX = ".running"


def failure_marker(job: Job, store: ClassStore) -> str | None:
    """Where a failure of this job's task is recorded for the run, if the run records them."""
    if job.failure_dir is None:
        return None
    return os.path.join(job.failure_dir, f"{store.name}.{job.task_id}")


def compute(job: Job, store: ClassStore) -> int:
    """Run ``run_task`` with upstream results in place and store what it returns."""
    __tracebackhide__ = True
    task = job.task
    config = task._tp_config
    root = Path(job.cache_root)
    new_folder = store.begin_run(job.task_id, task._tp_key)
    loaded: dict[NodeKey, Any] = {}

    def load(upstream: Any) -> Any:
        key = node_key(upstream)
        if key not in loaded:
            up_store = get_store(root, upstream.task_name)
            task_id = up_store.task_id(upstream._tp_key)
            # Every upstream result was checked against its args.json when the
            # scheduler planned it, or when its job stored it, during this run.
            loaded[key] = up_store.load_result(task_id, upstream._tp_key, owner_checked=True)
        return loaded[key]

    resolved = {
        slot.public_name: resolve_slot_value(slot.raw_value(task), load) for slot in config.slots
    }
    loaded.clear()
    task.__dict__[RESOLVED_ATTR] = resolved
    try:
        if config.detach_output:
            with captured_output(
                store.stdout_path(job.task_id),
                store.stderr_path(job.task_id),
                job.echo,
                new_folder=new_folder,
            ):
                value = task.run_task()
        else:
            value = task.run_task()
    finally:
        task.__dict__.pop(RESOLVED_ATTR, None)
    del resolved
    try:
        data = dump_result(value)
    except Exception as exc:
        raise ResultNotPicklableError(
            f"{task!r}: run_task returned a {type(value).__qualname__} that cloudpickle cannot "
            f"serialise ({type(exc).__name__}: {exc}); nothing was cached for "
            f"{describe(task, store, job.task_id)}"
        ) from None
    return store.write_result(
        job.task_id, data, config.compress_level, job.not_before, new_folder=new_folder
    )


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in another process."""

    def __str__(self) -> str:
        return str(self.args[0])


JobResult = tuple[bool, Any]  # (True, Outcome) or (False, exception)


def run_jobs(jobs: list[Job]) -> list[JobResult]:
    """Run a chunk of independent jobs; one failing does not stop the others.

    Whatever ends a job is collected, pytest's outcome exceptions and
    ``SystemExit`` included, so the scheduler records it as that task's
    failure; only ``KeyboardInterrupt`` propagates, to stop the run.
    """
    __tracebackhide__ = True
    results: list[JobResult] = []
    for job in jobs:
        try:
            results.append((True, run_job(job)))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            results.append((False, exc))
    return results


def run_jobs_blob(blob: bytes) -> list[JobResult]:
    """Pool entry point: jobs arrive cloudpickled, errors leave picklable with their traceback."""
    jobs: list[Job] = cloudpickle.loads(blob)
    results = run_jobs(jobs)
    return [
        (ok, value if ok else _portable(value, job))
        for (ok, value), job in zip(results, jobs, strict=True)
    ]


def _portable(exc: BaseException, job: Job) -> BaseException:
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
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = TaskFailedError(
            f"{job.task!r} raised {type(exc).__qualname__}, which cannot be pickled; "
            f"its traceback:\n{text}"
        )
    cause = RemoteTraceback(f'\n"""\n{text}"""')
    exc.__cause__ = cause
    exc.__dict__["__cause__"] = cause
    return exc
