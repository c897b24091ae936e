"""Where a job runs: the task's lock, a last look at the cache, the failure ledger, the slots.

``run_job`` is the same wherever it is called: in the caller's thread, a
thread or process pool, a Dask worker, or (for ``job_prefix`` tasks) on the
way to a batch job.  Under the task's lock it looks at the cache once more,
since another process may have made the result while this one waited;
``run_jobs_blob`` is the entry point for pools whose jobs arrive pickled.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from .atomic import write_text_atomic
from .cache import ClassStore, get_store, root_path
from .context import job_cache_root
from .errors import CorruptResultError, TaskFailedEarlierError, UpstreamChangedError
from .freshness import judge
from .job import Job, Outcome, compute, describe, portable_error
from .jobprefix import run_through_prefix
from .locks import task_lock
from .record import Record
from .source import code_digest
from .spec import spec_of

__all__ = ["Job", "Outcome", "describe", "run_job", "run_jobs", "run_jobs_blob", "summarize"]


def run_job(job: Job) -> Outcome:
    """Compute the job's task unless another process already did; see :class:`Outcome`."""
    __tracebackhide__ = True
    task = job.task
    spec = spec_of(task)
    root = root_path(job.cache_root)
    store = get_store(root, spec.name)
    store.remember_id(spec.key, job.task_id)
    token = job_cache_root.set(root)
    try:
        guard = task_lock(store, job.task_id) if job.lock else contextlib.nullcontext()
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
    if marker is not None and os.path.exists(marker):
        with open(marker, encoding="utf-8") as handle:
            summary = handle.read()
        raise TaskFailedEarlierError(f"{task!r} failed earlier in this run: {summary}", summary)
    running = None if marker is None else marker + RUNNING_SUFFIX
    if running is not None and os.path.exists(running):
        # Its last holder of the lock died computing it (a timeout, the OOM
        # killer): recomputing would only pay for that again in this run.
        summary = (
            "TaskDiedError: the process computing it died before it finished "
            "(killed by a timeout, a signal or the out-of-memory killer)"
        )
        write_text_atomic(running[: -len(RUNNING_SUFFIX)], summary)
        raise TaskFailedEarlierError(f"{task!r} failed earlier in this run: {summary}", summary)
    start = time.perf_counter()
    slot = job.slots.hold(spec.config.channels) if job.slots else contextlib.nullcontext()
    try:
        if running is not None:
            os.makedirs(os.path.dirname(running), exist_ok=True)
            # Only its existence counts, so no atomic write: one create, one unlink.
            os.close(os.open(running, os.O_CREAT | os.O_WRONLY, 0o644))
        with slot:
            if spec.config.job_prefix is not None and not job.in_prefix_child:
                record = run_through_prefix(job, store)
            else:
                record = compute(job, store, created)
    except BaseException as exc:
        # Whatever ended run_task, pytest's outcomes and SystemExit included, is
        # the task's failure; KeyboardInterrupt stops the run without a verdict,
        # and a changed or damaged upstream value only makes the caller plan again.
        if marker is not None and not isinstance(exc, (KeyboardInterrupt, *REPLAN_ERRORS)):
            # Written while the lock is held, so a process waiting for this
            # task learns of the failure instead of computing it again.
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            write_text_atomic(marker, summarize(exc))
        raise
    finally:
        if running is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(running)
    return Outcome.of(record, time.perf_counter() - start, computed=True)


#: Errors that are not the task's fault: the scheduler plans again after them.
REPLAN_ERRORS = (CorruptResultError, UpstreamChangedError)


def _fresh_now(job: Job, store: ClassStore) -> Record | None:
    """The task's result, if one that matches the plan exists (made by another process)."""
    spec = spec_of(job.task)
    record = store.read_record(job.task_id, spec.key, warn=False)
    if record is None:
        return None
    code = code_digest(type(job.task)) if job.detect_source_change else None
    upstream = {(r.name, r.key): r for r in job.reads}
    reason, _ = judge(spec, record, code, upstream)
    return record if reason is None else None


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
        (ok, value if ok else portable_error(value, job.task))
        for (ok, value), job in zip(results, jobs, strict=True)
    ]
