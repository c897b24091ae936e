"""Running one task through a ``job_prefix`` command (srun, bsub -K, docker run, a script).

The parent writes the job to a file inside the cache (which a batch node can
see when the cache is on a shared filesystem) and runs
``PREFIX python -m pytest_taskproc.jobprefix JOB OUTCOME`` with ``/bin/sh``.
As in taskproc 0.11.2, the prefix's elements are shell words joined by
spaces, so ``['jbsub', '-queue x86_1h']`` and ``['jbsub -interactive -tty']``
mean what they say in its README; the part appended here (interpreter and
paths, which may hold spaces, quotes or ``$``) is quoted.  The child computes
the task like any worker, writing the result to the cache and the task's
prints to its files; whatever the prefix itself prints is relayed to the
caller, and a failure comes back with the child's traceback as its cause.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from .atomic import write_atomic
from .cache import ClassStore, ensure_directory, get_store
from .context import job_cache_root
from .errors import JobPrefixError
from .job import Job, compute, describe, portable_error
from .record import Record
from .spec import spec_of


def run_through_prefix(job: Job, store: ClassStore) -> Record:
    """Compute the job in a subprocess started through its class's ``job_prefix``."""
    task = job.task
    prefix = list(spec_of(task).config.job_prefix or ())
    jobs_dir = Path(job.settings.cache_root) / "taskproc" / ".jobs"
    ensure_directory(jobs_dir)
    folder = Path(tempfile.mkdtemp(prefix=f"{job.task_id}-", dir=jobs_dir))
    try:
        job_path, outcome_path = folder / "job.pkl", folder / "outcome.pkl"
        child = replace(
            job,
            in_prefix_child=True,
            settings=replace(job.settings, lock=False, slots=None),
        )
        write_atomic(folder / "sys_path.json", [json.dumps(sys.path).encode()])
        write_atomic(job_path, [cloudpickle.dumps(child)])
        command = shell_command(prefix, [job_path, outcome_path])
        try:
            proc = subprocess.run(
                command, shell=True, capture_output=True, stdin=subprocess.DEVNULL
            )
        except OSError as exc:  # pragma: no cover - /bin/sh itself missing
            raise JobPrefixError(
                f"{task!r}: cannot run job_prefix command {command!r}: {exc}"
            ) from None
        sys.stdout.write(proc.stdout.decode(errors="replace"))
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        if outcome_path.exists():
            status, value = cloudpickle.loads(outcome_path.read_bytes())
            if status == "ok":
                record: Record = value
                return record
            raise value
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-10:]
        raise JobPrefixError(
            f"{task!r}: job_prefix command {command!r} exited with status {proc.returncode} "
            f"without a result for {describe(task, store, job.task_id)}"
            + ("; its last stderr lines:\n" + "\n".join(tail) if tail else "")
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def shell_command(prefix: list[str], paths: list[Path]) -> str:
    """The prefix's shell words, then our own command with every part quoted."""
    ours = [sys.executable, "-m", "pytest_taskproc.jobprefix", *map(str, paths)]
    return " ".join([*prefix, *map(shlex.quote, ours)])


def main(argv: list[str]) -> int:
    job_path, outcome_path = Path(argv[0]), Path(argv[1])
    job: Job = _load_job(job_path)
    # Task properties used in run_task (task_directory, task_id) must resolve
    # in the caller's cache, whatever this process would choose itself.
    job_cache_root.set(Path(job.settings.cache_root))
    outcome: tuple[str, Any]
    try:
        store = get_store(Path(job.settings.cache_root), job.task.task_name)
        outcome = ("ok", compute(job, store))
    except BaseException as exc:  # SystemExit and pytest outcomes too: the parent decides
        outcome = ("error", portable_error(exc, job.task))
    try:
        blob = cloudpickle.dumps(outcome)
    except Exception as exc:
        blob = cloudpickle.dumps(("error", JobPrefixError(f"{job.task!r}: {outcome[1]!r} ({exc})")))
    write_atomic(outcome_path, [blob])
    return 0


def _load_job(path: Path) -> Job:
    """Unpickle the job after taking the parent's ``sys.path``.

    The task class is pickled by reference when its module is importable, so
    the child must see the same import path before it unpickles the job.
    """
    parent_path = json.loads((path.parent / "sys_path.json").read_text())
    sys.path[:] = parent_path + [p for p in sys.path if p not in parent_path]
    job: Job = cloudpickle.loads(path.read_bytes())
    return job


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
