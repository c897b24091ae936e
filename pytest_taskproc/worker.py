"""Where a job runs: the task's lock, a last look at the cache, the failure ledger, the slots.

``run_job`` is the same wherever it is called: in the caller's thread, a
thread or process pool, a Dask worker, or (for ``job_prefix`` tasks) on the
way to a batch job.  Under the task's lock it looks at the cache once more,
since another process may have made the result while this one waited;
``run_jobs_blob`` is the entry point for pools whose jobs arrive pickled.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import threading
import time
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from .cache import ClassStore, get_store, root_path
from .cancel import prepare_pool_process, running_note
from .context import job_cache_root
from .errors import CorruptResultError, TaskCancelled, UpstreamChangedError
from .freshness import judge
from .job import Job, Outcome, compute, describe, portable_error
from .jobprefix import run_through_prefix
from .ledger import RUNNING_SUFFIX, Failure, Kind, marker_path
from .locks import task_lock
from .record import Record
from .relay import ATTRIBUTE, capturing
from .source import code_digest
from .spec import spec_of

__all__ = ["Job", "Outcome", "describe", "run_job", "run_jobs", "run_jobs_blob"]


def run_job(job: Job) -> Outcome:
    """Compute the job's task unless another process already did; see :class:`Outcome`."""
    __tracebackhide__ = True
    task = job.task
    spec = spec_of(task)
    root = root_path(job.settings.cache_root)
    store = get_store(root, spec.name)
    store.remember_id(spec.key, job.task_id)
    token = job_cache_root.set(root)
    try:
        guard = task_lock(store, job.task_id) if job.settings.lock else contextlib.nullcontext()
        with guard:
            # A result folder created just now holds no result another process made.
            created = store.create_folder(job.task_id, spec.key)
            done = None if created else _fresh_now(job, store)
            if done is not None:
                return Outcome.of(done, 0.0, computed=False)
            return _compute_under_lock(job, store, created)
    finally:
        job_cache_root.reset(token)


def _compute_under_lock(job: Job, store: ClassStore, created: bool = False) -> Outcome:
    """Compute the task, unless this run saw it fail; record a failure for the whole run."""
    __tracebackhide__ = True
    task = job.task
    spec = spec_of(task)
    marker = failure_marker(job, store)
    # Read even when this job made the folder just now: a run that gave up on the
    # task before any attempt started (a timeout while its job was queued) records
    # the failure without making the folder.
    earlier = None if marker is None else Failure.read(marker)
    if earlier is not None:
        raise earlier.earlier(task)
    running = None if marker is None else marker + RUNNING_SUFFIX
    # Only an attempt that made or found the folder writes the running marker, so a
    # folder made just now has none to find (a system call and an exception saved).
    if (
        running is not None
        and not created
        and os.path.exists(running)
        and not executor_retries.get()
    ):
        # Its last holder of the lock died computing it (a timeout, the OOM
        # killer): recomputing would only pay for that again in this run.
        died = Failure(
            Kind.FAILED,
            "TaskDiedError: the process computing it died before it finished "
            "(killed by a timeout, a signal or the out-of-memory killer)",
        )
        died.write(running[: -len(RUNNING_SUFFIX)])
        raise died.earlier(task)
    start = time.perf_counter()
    slots = job.settings.slots
    slot = slots.hold(spec.config.channels) if slots else contextlib.nullcontext()
    try:
        if running is not None:
            _mark_running(running)
        with slot:
            if spec.config.job_prefix is not None and not job.in_prefix_child:
                record = run_through_prefix(job, store)
            else:
                record = compute(job, store, created)
    except TaskCancelled:
        raise  # the run that gave up on it recorded why (the timeout) in the marker
    except BaseException as exc:
        # Whatever ended run_task, pytest's outcomes and SystemExit included, is
        # the task's failure; KeyboardInterrupt stops the run without a verdict,
        # and a changed or damaged upstream value only makes the caller plan again.
        if marker is not None and not isinstance(exc, (KeyboardInterrupt, *REPLAN_ERRORS)):
            # Written while the lock is held, so a process waiting for this
            # task learns of the failure instead of computing it again.
            Failure.of(exc).write(marker, exc)
        raise
    finally:
        if running is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(running)
    if marker is not None:
        note_computed(job.settings.failure_dir, store.name, job.task_id)
    seconds = time.perf_counter() - start
    return Outcome.of(record, seconds, computed=True, handed=store.handed(job.task_id, record))


def _mark_running(path: str) -> None:
    """Create the running marker: its existence says the task is under way; what it
    holds, who to ask to stop it (``cancel.request_stop``, read only by a run that
    gives up on the task).

    Its folder is made when the first marker finds it missing, not looked at
    for every task (``os.makedirs`` is three system calls and an exception).
    """
    flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, running_note().encode())
    finally:
        os.close(fd)


#: next to the failure markers' folder: one ``class id`` line per task this run computed
COMPUTED_LOG = "computed.log"


def note_computed(failure_dir: str | None, name: str, task_id: int) -> None:
    """Count a saved result for the run, so an interrupted run's summary can tell all of them.

    One short ``O_APPEND`` write: lines from concurrent processes never interleave.
    """
    if failure_dir is None:
        return
    path = os.path.join(os.path.dirname(failure_dir), COMPUTED_LOG)
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name} {task_id}\n".encode())
        finally:
            os.close(fd)


#: Errors that are not the task's fault: the scheduler plans again after them.
REPLAN_ERRORS = (CorruptResultError, UpstreamChangedError)


def _fresh_now(job: Job, store: ClassStore) -> Record | None:
    """The task's result, if one that matches the plan exists (made by another process)."""
    spec = spec_of(job.task)
    record = store.read_record(job.task_id, spec.key, warn=False)
    if record is None:
        return None
    code = code_digest(type(job.task)) if job.settings.detect_source_change else None
    upstream = {(r.name, r.key): r for r in job.reads}
    reason, _ = judge(spec, record, code, upstream)
    if reason is not None or store.written_changes(job.task_id, record):
        return None  # planned stale for files it wrote that were changed since: not made anew
    return record


#: True while jobs run on an executor that itself retries a job whose process died
#: (Dask, up to its ``allowed-failures``): the ``.running`` marker the dead attempt
#: left is then no failure of this run, and the executor reports the last death.
executor_retries: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pytest_taskproc_executor_retries", default=False
)


def failure_marker(job: Job, store: ClassStore) -> str | None:
    """Where a failure of this job's task is recorded for the run, if the run records them."""
    failure_dir = job.settings.failure_dir
    return None if failure_dir is None else marker_path(failure_dir, store.name, job.task_id)


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


def _run_relaying(job: Job) -> JobResult:
    """Run one job, its warnings carried by its outcome or its error."""
    with capturing() as relayed:
        ((ok, value),) = run_jobs([job])
    if relayed:
        if ok:
            value = dataclasses.replace(value, warnings=tuple(relayed))
        else:
            value.__dict__[ATTRIBUTE] = tuple(relayed)
    return ok, value


def run_jobs_blob(blob: bytes, *, retried: bool = False) -> list[JobResult]:
    """Pool entry point: jobs arrive cloudpickled, errors leave picklable with their traceback.

    ``retried``: the executor runs a job again when its process dies (see
    :data:`executor_retries`).
    """
    prepare_pool_process()  # a pool process (main thread): stoppable, ends with its parent
    jobs: list[Job] = cloudpickle.loads(blob)
    # Warnings are caught per job only in a pool process's main thread: catching
    # them swaps process-wide state, which threads running jobs side by side
    # (a Dask worker) would trample.
    relay = threading.current_thread() is threading.main_thread()
    token = executor_retries.set(retried)
    try:
        results = [_run_relaying(job) for job in jobs] if relay else run_jobs(jobs)
    finally:
        executor_retries.reset(token)
    return [
        (ok, value if ok else portable_error(value, job.task))
        for (ok, value), job in zip(results, jobs, strict=True)
    ]
