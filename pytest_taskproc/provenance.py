"""Provenance of cached results: manifests of their records, and verification by recomputing.

A *manifest* lists tasks with their records (``task.task_record``): which
arguments, which code and which upstream values made each result, so a CI
run can keep it as an artifact next to its test report.  *Verifying* a
cached task recomputes it from the upstream values its record names, in a
scratch folder, and compares the new value with the cached one: by bytes,
then by value (see ``compare.py``).  Verification writes nothing in the cache.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from .atomic import write_text_atomic
from .cache import ClassStore, ensure_directory, get_store
from .compare import first_difference
from .context import cache_root as current_cache_root
from .context import job_cache_root, verify_scratch
from .errors import CorruptResultError, ResultMissingError
from .freshness import Reason, judge, reads_of
from .inputs import file_digests, written_digest_of
from .job import run_bound
from .ledger import summarize
from .record import Record, UpstreamRead
from .serialize import dump_result, unpickle, value_digest
from .source import code_digest
from .spec import NodeKey, node_key, spec_of

__all__ = [
    "Status",
    "Verification",
    "build_manifest",
    "manifest_document",
    "manifest_entry",
    "verify_task",
    "verify_task_blob",
    "verify_task_timed",
    "write_manifest",
]


# -- manifests ----------------------------------------------------------------


@contextlib.contextmanager
def _using_cache_root(root: Path) -> Iterator[None]:
    """Task properties read ``root`` in this thread for the duration (not process-wide)."""
    token = job_cache_root.set(root)
    try:
        yield
    finally:
        job_cache_root.reset(token)


def manifest_entry(task: Any, status: str | None = None) -> dict[str, Any]:
    """One task in a manifest: class, arguments, task id, status and record (None if none).

    Reads the cache the task uses now and writes nothing; the record is that
    of ``task.task_record``.
    """
    spec = spec_of(task)
    entry: dict[str, Any] = {
        "task": spec.name,
        "args": json.loads(spec.key),
        "id": get_store(current_cache_root(), spec.name).known_id(spec.key),
        "record": task.task_record,
    }
    if status is not None:
        entry["status"] = status
    return entry


def build_manifest(
    tasks: Iterable[Any],
    cache_root: str | os.PathLike[str] | None = None,
    statuses: Mapping[Any, str] | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """``{"cache": ROOT, "environment": {...}, "tasks": [entry, ...]}`` for ``tasks``.

    ``cache_root`` defaults to the cache the tasks use now; ``statuses`` maps
    task objects to what became of them in the caller's run (``computed``,
    ``cached``, ``failed``, ...); ``directory`` is the project whose git
    commit the environment names (default: the folder of the first task's file).
    Entries are in the order given.
    """
    root = Path(os.path.abspath(cache_root)) if cache_root is not None else current_cache_root()
    statuses = statuses or {}
    tasks = list(tasks)
    with _using_cache_root(root):
        entries = [manifest_entry(task, statuses.get(task)) for task in tasks]
    if directory is None:
        from .environment import project_directory

        directory = project_directory(type(tasks[0]) if tasks else None)
    return manifest_document(root, entries, directory)


def manifest_document(
    root: str | os.PathLike[str], entries: list[dict[str, Any]], directory: str | os.PathLike[str]
) -> dict[str, Any]:
    """A manifest of ``entries``, with the run's environment once at the top."""
    from .environment import run_environment

    environment = run_environment(directory, [entry.get("record") for entry in entries])
    return {"cache": str(root), "environment": environment, "tasks": entries}


def dump_manifest(manifest: Mapping[str, Any]) -> str:
    """The manifest as JSON with sorted keys, so two manifests diff line by line."""
    return json.dumps(manifest, sort_keys=True, indent=1) + "\n"


def write_manifest(path: str | os.PathLike[str], manifest: Mapping[str, Any]) -> None:
    """Write a manifest atomically: a reader sees the old file or the new one, whole."""
    target = Path(path)
    ensure_directory(target.parent)
    write_text_atomic(target, dump_manifest(manifest))


# -- verification -------------------------------------------------------------


class Status(str, enum.Enum):
    """What verifying one task found; the value is the word shown to users."""

    #: recomputed, and the value equals the cached one
    VERIFIED = "verified"
    #: recomputed, and the value differs (or run_task failed)
    NOT_REPRODUCIBLE = "not reproducible"
    #: cached, but its record no longer matches its upstream values or its code: not verified
    STALE = "stale"
    #: no result in the cache: nothing to verify
    NOT_CACHED = "not cached"


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify_task` for one task."""

    task: Any
    status: Status
    #: what differs (not reproducible), or why the task was not verified (stale, not cached)
    difference: str | None = None
    #: the recomputed value was pickled to the very bytes that are cached
    same_bytes: bool = False

    @property
    def failed(self) -> bool:
        """Whether the task fails a verify run (its value is not reproducible)."""
        return self.status is Status.NOT_REPRODUCIBLE

    def describe(self) -> str:
        """One line: the task, the status, and what differs or why."""
        line = f"{self.task!r}: {self.status.value}"
        if self.status is Status.VERIFIED and not self.same_bytes:
            line += " (equal value, pickled differently)"
        if self.difference:
            line += f": {self.difference}"
        return line


class _NotVerifiable(Exception):
    """An upstream value the record names can no longer be read."""


class _DamagedUpstream(Exception):
    """An upstream value the record names is damaged: reported, never passed as cached."""


def _moved_paths(value: Any, scratch: str, real: str) -> Any:
    """``value`` with strings and paths under ``scratch`` moved under ``real``."""
    if isinstance(value, str):
        if value == scratch or value.startswith(scratch + os.sep):
            return real + value[len(scratch) :]
        return value
    if isinstance(value, PurePath):
        text = str(value)
        moved = _moved_paths(text, scratch, real)
        return value if moved is text else type(value)(moved)
    if type(value) in (list, tuple):
        items = [_moved_paths(v, scratch, real) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    if type(value) is dict:
        pairs = [
            (_moved_paths(k, scratch, real), _moved_paths(v, scratch, real))
            for k, v in value.items()
        ]
        if all(k is a and v is b for (k, v), (a, b) in zip(pairs, value.items(), strict=True)):
            return value
        return dict(pairs)
    return value


def _files_difference(record: Record, written: dict[str, str], real_dir: Path) -> str | None:
    """What differs between the files the recomputation wrote and those of the cached result."""
    if written_digest_of(written) == record.files:
        return None
    cached = file_digests(real_dir)
    if written_digest_of(cached) != record.files:
        return (
            f"the files in its task_directory {real_dir} are not the ones its result was "
            "recorded with (changed since): clear the task to compute it again"
        )
    names = sorted(set(cached) | set(written))
    changed = [n for n in names if cached.get(n) != written.get(n)]
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return f"the files it wrote into its task_directory differ: {shown}"


def verify_task(
    task: Any,
    *,
    cache_root: str | os.PathLike[str] | None = None,
    scratch_dir: str | os.PathLike[str] | None = None,
) -> Verification:
    """Recompute a cached task and compare the new value with the cached one.

    The task runs in this process and thread (without its ``job_prefix``),
    reading its upstream values from the cache, exactly those its record
    names.  Its ``task_directory``, ``task_stdout`` and ``task_stderr`` point
    into a scratch folder made under ``scratch_dir`` (default: the system's
    temporary directory) and removed afterwards; nothing is written in the
    cache.  A task whose record no longer matches (an upstream value or its
    code changed since) is reported ``stale`` without being run.
    """
    spec = spec_of(task)
    root = Path(os.path.abspath(cache_root)) if cache_root is not None else current_cache_root()
    store = get_store(root, spec.name)
    task_id = store.known_id(spec.key)
    record = None if task_id is None else store.inspect_record(task_id, spec.key)
    if isinstance(record, str):
        return Verification(task, Status.NOT_CACHED, record)
    if task_id is None or record is None:
        return Verification(task, Status.NOT_CACHED)
    try:
        reads = _check_upstream(root, task, record)
    except _DamagedUpstream as exc:
        return Verification(task, Status.NOT_REPRODUCIBLE, str(exc))
    if isinstance(reads, str):
        return Verification(task, Status.STALE, reads)

    def load(upstream: Any) -> Any:
        return _load_upstream(root, upstream, reads[node_key(upstream)])

    scratch = Path(tempfile.mkdtemp(prefix="taskproc-verify-", dir=scratch_dir))
    try:
        stand_in = ClassStore(scratch, spec.name)
        ensure_directory(stand_in.result_dir(task_id))
        output = (stand_in.stdout_path(task_id), stand_in.stderr_path(task_id))
        token = verify_scratch.set((spec.node, scratch))
        try:
            with _using_cache_root(root):
                value, _ = run_bound(task, load, output, new_folder=True)
        except _DamagedUpstream as exc:
            return Verification(task, Status.NOT_REPRODUCIBLE, str(exc))
        except _NotVerifiable as exc:
            return Verification(task, Status.STALE, str(exc))
        except Exception as exc:
            return Verification(task, Status.NOT_REPRODUCIBLE, f"run_task raised {summarize(exc)}")
        finally:
            verify_scratch.reset(token)
        # A path into the scratch task_directory stands for the same path in the real one.
        real_dir = store.data_dir(task_id)
        value = _moved_paths(value, str(stand_in.data_dir(task_id)), str(real_dir))
        written = file_digests(stand_in.data_dir(task_id))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    found = _compare(task, store, task_id, record, value)
    if found.status is Status.VERIFIED:
        difference = _files_difference(record, written, real_dir)
        if difference is not None:
            return Verification(task, Status.NOT_REPRODUCIBLE, difference)
    return found


def verify_task_timed(
    task: Any, cache_root: str | os.PathLike[str]
) -> tuple[str, str | None, bool, float]:
    """:func:`verify_task`, answered as ``(status, difference, same_bytes, seconds)``.

    The plain answer a pytest run needs, the same whether it verified in its
    own process or on a pool (see :func:`verify_task_blob`).
    """
    start = time.perf_counter()
    found = verify_task(task, cache_root=cache_root)
    return found.status.value, found.difference, found.same_bytes, time.perf_counter() - start


def verify_task_blob(blob: bytes, cache_root: str) -> tuple[str, str | None, bool, float]:
    """Pool entry point of :func:`verify_task_timed`: the task arrives cloudpickled.

    The answer leaves without the task, which the caller has.
    """
    import cloudpickle  # type: ignore[import-untyped]

    return verify_task_timed(cloudpickle.loads(blob), cache_root)


def _check_upstream(root: Path, task: Any, record: Record) -> dict[NodeKey, UpstreamRead] | str:
    """The upstream values to read, as the record names them; or why the record is stale.

    Freshness is judged as a run would (same upstream tasks, holding the
    values recorded, same code), from records only: a stale task's value is
    not expected to be reproduced from what the cache holds now.
    """
    spec = spec_of(task)
    names: dict[NodeKey, Any] = {}
    now: dict[NodeKey, UpstreamRead | None] = {}
    for upstream in spec.upstream:
        node = node_key(upstream)
        names[node] = upstream
        store = get_store(root, node[0])
        up_id = store.known_id(node[1])
        found = None if up_id is None else store.inspect_record(up_id, node[1])
        if isinstance(found, str):
            raise _DamagedUpstream(
                f"cannot be recomputed: the cached value of upstream task {upstream!r} is "
                f"damaged ({found})"
            )
        now[node] = None if found is None else reads_of(found)
    reason, detail = judge(spec, record, code_digest(type(task)), now, names)
    if reason is None:
        return {(r.name, r.key): r for r in record.upstream}
    if reason is Reason.UPSTREAM_STALE:
        missing = next(n for n, read in now.items() if read is None)
        return f"upstream task {names[missing]!r} has no cached result"
    return f"{reason.sentence} ({detail})" if detail else reason.sentence


def _load_upstream(root: Path, upstream: Any, read: UpstreamRead) -> Any:
    """The value of an upstream task, provided it is still the one the record names."""
    spec = spec_of(upstream)
    store = get_store(root, spec.name)
    up_id = store.known_id(spec.key)
    try:
        if up_id is None:
            raise ResultMissingError(f"no cached result for {spec.name} {spec.key}")
        value, found = store.load_value(up_id, spec.key)
    except ResultMissingError:
        raise _NotVerifiable(f"upstream task {upstream!r} has no cached result") from None
    except CorruptResultError as exc:
        raise _DamagedUpstream(
            f"cannot be recomputed: the cached value of upstream task {upstream!r} is damaged "
            f"({exc})"
        ) from None
    if reads_of(found) != read:
        raise _NotVerifiable(f"{Reason.UPSTREAM_CHANGED.value} ({upstream!r})")
    return value


def _compare(
    task: Any, store: ClassStore, task_id: int, record: Record, value: Any
) -> Verification:
    """Bytes first; only when they differ are both values unpickled and compared."""
    try:
        data = dump_result(value)
    except Exception as exc:
        return Verification(
            task,
            Status.NOT_REPRODUCIBLE,
            f"the recomputed {type(value).__qualname__} cannot be pickled "
            f"({type(exc).__name__}: {exc})",
        )
    del value
    if value_digest(data) == record.digest:
        # The recorded digest is reproduced; the stored bytes must still have it.
        damage = store.verify_value(task_id, record)
        if damage is not None:
            return Verification(task, Status.NOT_CACHED, damage)
        return Verification(task, Status.VERIFIED, same_bytes=True)
    spec = spec_of(task)
    try:
        cached, now = store.load_value(task_id, spec.key)
    except ResultMissingError:
        return Verification(task, Status.NOT_CACHED, "its result was removed while it was verified")
    except CorruptResultError as exc:
        return Verification(task, Status.NOT_CACHED, str(exc))
    if now.digest != record.digest:
        return Verification(task, Status.STALE, "its result was replaced while it was verified")
    # The recomputed value goes through pickle too, so both sides are compared
    # as a reader of the cache would get them.
    try:
        recomputed = unpickle(data)
    except ValueError as exc:
        return Verification(task, Status.NOT_REPRODUCIBLE, f"the recomputed value {exc}")
    difference = first_difference(cached, recomputed)
    if difference is None:
        return Verification(task, Status.VERIFIED)
    return Verification(task, Status.NOT_REPRODUCIBLE, difference)
