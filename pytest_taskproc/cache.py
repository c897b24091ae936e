"""On-disk layout of the cache, the task id table, and result storage.

Layout, per task class::

    {root}/taskproc/{module}.{qualname}/
        source.txt            normalised source; its mtime is the source's timestamp
        id_table/             diskcache: canonical arguments -> task id
        locks/{id}.lock       cross-process locks (see locks.py)
        results/{id}/
            args.json         canonical arguments; checked on every read
            result.pkl[.gz]   the result (see serialize.py)
            stdout.txt, stderr.txt, data/

A result counts only when ``args.json`` beside it names the same arguments,
so a damaged id table or a stray directory can cost a recompute but never
hands one task another task's value.  A broken id table is rebuilt from the
``args.json`` files, which keeps every id stable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Any

import diskcache  # type: ignore[import-untyped]
from filelock import FileLock

from . import serialize
from .atomic import TMP_MARK, remove_tree, write_atomic, write_text_atomic
from .errors import CacheAccessError, CorruptResultError, ResultMissingError

NEXT_ID = "next_id"  # canonical keys are JSON objects, so this never collides
CACHE_README = """\
# pytest-taskproc cache

Cached task results written by pytest-taskproc. Each task class has a folder
`{module}.{qualname}/` with `results/{task_id}/` per task. Delete a folder to
make its tasks recompute. Results are pickles: only load a cache you trust.
"""


class CacheCorruptionWarning(UserWarning):
    """A cache file was damaged; the affected result is recomputed."""


def _access_error(action: str, path: Path, exc: OSError) -> CacheAccessError:
    reason = exc.strerror or str(exc)
    hint = (
        " (is the cache directory read-only?)" if exc.errno in (errno.EACCES, errno.EROFS) else ""
    )
    return CacheAccessError(f"cannot {action} {path}: {reason}{hint}")


def ensure_directory(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _access_error("create cache directory", path, exc) from None


_prepared_roots: set[tuple[int, str]] = set()


def prepare_root(root: Path) -> Path:
    """``{root}/taskproc`` with a README, a ``.gitignore`` and a ``CACHEDIR.TAG``."""
    top = root / "taskproc"
    marker = (os.getpid(), str(top))
    if marker in _prepared_roots:
        return top
    ensure_directory(top)
    for name, text in (
        ("README.md", CACHE_README),
        (".gitignore", "# written by pytest-taskproc\n*\n"),
        (
            "CACHEDIR.TAG",
            "Signature: 8a477f597d28d172789f06886806bc55\n"
            "# This directory holds pytest-taskproc results; they can be recomputed.\n",
        ),
    ):
        path = top / name
        if not path.exists():
            try:
                write_text_atomic(path, text)
            except OSError as exc:
                raise _access_error("write", path, exc) from None
    _prepared_roots.add(marker)
    return top


class ClassStore:
    """Everything on disk for one task class under one cache root."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.base = root / "taskproc" / name
        self.results_dir = self.base / "results"
        self.locks_dir = self.base / "locks"
        self._ids: dict[str, int] = {}
        self._table: diskcache.Cache | None = None
        self._lock = threading.Lock()
        self._locks_ready = False
        self._source_seen: tuple[str, int] | None = None
        self._results_prefix = str(self.results_dir) + os.sep

    # -- id table ---------------------------------------------------------
    def _open_table(self) -> diskcache.Cache:
        if self._table is None:
            prepare_root(self.root)
            ensure_directory(self.results_dir)
            path = self.base / "id_table"
            try:
                self._table = self._open_checked(path)
            except sqlite3.DatabaseError as exc:
                self._table = self._rebuild_table(path, exc)
            except OSError as exc:
                raise _access_error("open the id table", path, exc) from None
        return self._table

    @staticmethod
    def _open_checked(path: Path) -> diskcache.Cache:
        database = path / "cache.db"
        if database.exists():
            # diskcache leaks the connection of an open that fails (a ResourceWarning
            # since Python 3.13), so a file that is no database is caught here first.
            with contextlib.closing(sqlite3.connect(database)) as connection:
                connection.execute("PRAGMA schema_version").fetchone()
        table = diskcache.Cache(
            str(path), eviction_policy="none", statistics=0, tag_index=0, timeout=60
        )
        try:
            table.get(NEXT_ID)  # touches the database, so damage shows up here
        except BaseException:
            table.close()
            raise
        return table

    def _rebuild_table(self, path: Path, exc: Exception) -> diskcache.Cache:
        warnings.warn(
            CacheCorruptionWarning(
                f"id table of {self.name} at {path} is damaged ({exc}); "
                "rebuilding it from results/*/args.json"
            ),
            stacklevel=4,
        )
        remove_tree(path)
        table = self._open_checked(path)
        highest = -1
        with table.transact(retry=True):
            for entry in self._result_entries():
                table.set(entry[1], entry[0])
                highest = max(highest, entry[0])
            table.set(NEXT_ID, highest + 1)
        return table

    def _result_entries(self) -> list[tuple[int, str]]:
        entries = []
        try:
            names = os.listdir(self.results_dir)
        except FileNotFoundError:
            return []
        for name in names:
            if not name.isdigit():
                continue
            try:
                key = (self.results_dir / name / "args.json").read_text()
            except OSError:
                continue
            entries.append((int(name), key))
        return entries

    def task_ids(self, keys: list[str]) -> list[int]:
        """Ids for ``keys``, assigning new ones in one transaction."""
        with self._lock:
            missing = [k for k in dict.fromkeys(keys) if k not in self._ids]
            if missing:
                self._assign(missing)
            return [self._ids[k] for k in keys]

    def task_id(self, key: str) -> int:
        found = self._ids.get(key)
        if found is not None:
            return found
        return self.task_ids([key])[0]

    def remember_id(self, key: str, task_id: int) -> None:
        """Record an id learned from the scheduler, sparing a worker the lookup."""
        self._ids[key] = task_id

    def _assign(self, keys: list[str]) -> None:
        try:
            self._assign_in(self._open_table(), keys)
        except sqlite3.DatabaseError as exc:
            self._table = self._rebuild_table(self.base / "id_table", exc)
            self._assign_in(self._table, keys)

    def _assign_in(self, table: diskcache.Cache, keys: list[str]) -> None:
        unknown = []
        for key in keys:
            found = table.get(key)
            if found is None:
                unknown.append(key)
            else:
                self._ids[key] = int(found)
        if not unknown:
            return
        try:
            with table.transact(retry=True):
                next_id = int(table.get(NEXT_ID, 0))
                for key in unknown:
                    found = table.get(key)
                    if found is None:
                        found = next_id
                        next_id += 1
                        table.set(key, found)
                    self._ids[key] = int(found)
                table.set(NEXT_ID, next_id)
        except OSError as exc:
            raise _access_error("write the id table of", self.base, exc) from None

    # -- paths ------------------------------------------------------------
    def folder(self, task_id: int) -> str:
        """The task's result folder as a string: pathlib costs too much per task."""
        return f"{self._results_prefix}{task_id}"

    def result_dir(self, task_id: int) -> Path:
        return Path(self.folder(task_id))

    def stdout_path(self, task_id: int) -> Path:
        return self.result_dir(task_id) / "stdout.txt"

    def stderr_path(self, task_id: int) -> Path:
        return self.result_dir(task_id) / "stderr.txt"

    def data_dir(self, task_id: int) -> Path:
        return self.result_dir(task_id) / "data"

    def lock_path(self, stem: str) -> str:
        if not self._locks_ready:
            ensure_directory(self.locks_dir)
            self._locks_ready = True
        return f"{self.locks_dir}{os.sep}{stem}.lock"

    # -- source -----------------------------------------------------------
    def source_timestamp(self, source: str | None) -> int:
        """mtime (ns) of ``source.txt``, rewriting it when the source changed."""
        if source is None:
            return 0
        # A class's source cannot change within a process; look once.
        if self._source_seen is not None and self._source_seen[0] == source:
            return self._source_seen[1]
        mtime = self._source_timestamp(source)
        self._source_seen = (source, mtime)
        return mtime

    def _source_timestamp(self, source: str) -> int:
        path = self.base / "source.txt"
        try:
            if path.read_text() == source:
                return path.stat().st_mtime_ns
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _access_error("read", path, exc) from None
        prepare_root(self.root)
        ensure_directory(self.locks_dir)
        # Two processes may both find the file missing or old. Without the
        # lock, the later writer would date the source after results the
        # other one already stored, and those would be recomputed.
        with FileLock(str(self.locks_dir / "source.lock")):
            try:
                if path.read_text() != source:
                    write_text_atomic(path, source)
                return path.stat().st_mtime_ns
            except FileNotFoundError:
                write_text_atomic(path, source)
                return path.stat().st_mtime_ns
            except OSError as exc:
                raise _access_error("write", path, exc) from None

    # -- results ----------------------------------------------------------
    def _result_file(self, task_id: int) -> tuple[str, int] | None:
        """The newest result file of a task and its mtime (ns), if any."""
        best: tuple[str, int] | None = None
        folder = self.folder(task_id)
        for name in (serialize.RAW_NAME, serialize.GZIP_NAME):
            path = f"{folder}{os.sep}{name}"
            try:
                mtime = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                continue
            if best is None or mtime > best[1]:
                best = (path, mtime)
        return best

    def result_timestamp(self, task_id: int, key: str, warn: bool = True) -> int | None:
        """When the task's result was written, or None if there is no trustworthy one."""
        found = self._result_file(task_id)
        if found is None:
            return None
        if not self._owns(task_id, key, warn):
            return None
        return found[1]

    def _owns(self, task_id: int, key: str, warn: bool = True) -> bool:
        path = f"{self.folder(task_id)}{os.sep}args.json"
        try:
            with open(path, encoding="utf-8") as handle:
                stored = handle.read()
        except FileNotFoundError:
            stored = None
        except (OSError, UnicodeDecodeError):
            stored = ""
        if stored == key:
            return True
        if not warn:
            return False
        problem = "is missing" if stored is None else "names other arguments"
        warnings.warn(
            CacheCorruptionWarning(
                f"{path} {problem}; the result of {self.name} with arguments {key} "
                "is not trusted and will be recomputed"
            ),
            stacklevel=3,
        )
        return False

    def load_result(self, task_id: int, key: str, owner_checked: bool = False) -> Any:
        """The stored result; ``owner_checked`` skips re-reading an ``args.json``
        the caller verified moments ago (the scheduler does, for upstream results)."""
        found = self._result_file(task_id)
        if found is None or not (owner_checked or self._owns(task_id, key)):
            raise ResultMissingError(f"no cached result for {self.name} with arguments {key}")
        path = found[0]
        try:
            with open(path, "rb") as handle:
                blob = handle.read()
        except FileNotFoundError:
            raise ResultMissingError(
                f"no cached result for {self.name} with arguments {key}"
            ) from None
        try:
            return serialize.decode(os.path.basename(path), blob)
        except ValueError as exc:
            raise CorruptResultError(
                f"cached result {path} of {self.name} with arguments {key} is damaged: {exc}",
                self.name,
                key,
            ) from None

    def check_result(self, task_id: int) -> str | None:
        """A cheap structural check of a stored result; what is wrong, or None.

        A raw pickle must start with a protocol header and end with the STOP
        opcode, which catches truncation and garbage without unpickling; a
        gzip stream is decompressed to its end, which checks its CRC.
        """
        found = self._result_file(task_id)
        if found is None:
            return None
        path = found[0]
        try:
            with open(path, "rb") as handle:
                if path.endswith(serialize.GZIP_NAME):
                    problem = serialize.check_gzip_stream(handle)
                else:
                    problem = serialize.check_pickle_frame(handle)
        except FileNotFoundError:
            return None
        return (
            None
            if problem is None
            else f"cached result {path} of {self.name} is damaged: {problem}"
        )

    def begin_run(self, task_id: int, key: str) -> bool:
        """Make way for a new result: nothing old may outlive a failed run.

        Returns whether the task's folder was created just now, in which case
        there is nothing old to remove afterwards either.
        """
        folder = self.folder(task_id)
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
        except FileNotFoundError:
            ensure_directory(Path(folder))
        except OSError as exc:
            raise _access_error("prepare", Path(folder), exc) from None
        else:
            # A new folder holds no result, and a result is only trusted next
            # to a matching args.json, so args.json need not be written
            # atomically here: a torn one is simply rewritten next time.
            try:
                with open(f"{folder}{os.sep}args.json", "x", encoding="utf-8") as handle:
                    handle.write(key)
            except OSError as exc:
                raise _access_error("prepare", Path(folder), exc) from None
            return True
        self.discard_result(task_id)
        _remove_leftovers(folder)
        try:
            if not self._owns(task_id, key, warn=False):
                write_text_atomic(Path(folder, "args.json"), key)
        except OSError as exc:
            raise _access_error("prepare", Path(folder), exc) from None
        remove_tree(Path(folder, "data"))
        return False

    def write_result(
        self,
        task_id: int,
        data: bytes,
        compress_level: int | None,
        not_before_ns: int,
        new_folder: bool = False,
    ) -> int:
        """Store pickled ``data`` atomically; returns the new result's mtime (ns).

        The mtime is kept strictly above ``not_before_ns`` (the newest upstream
        result), so "upstream is newer" never misfires on coarse clocks.
        """
        name, blob = serialize.encode(data, serialize.choose_encoding(data, compress_level))
        folder = self.folder(task_id)
        path = f"{folder}{os.sep}{name}"
        try:
            write_atomic(path, [blob])
            mtime = os.stat(path).st_mtime_ns
            if mtime <= not_before_ns:
                mtime = not_before_ns + 1
                os.utime(path, ns=(mtime, mtime))
        except OSError as exc:
            raise _access_error("write the result", Path(path), exc) from None
        if not new_folder:
            other = serialize.GZIP_NAME if name == serialize.RAW_NAME else serialize.RAW_NAME
            _unlink(f"{folder}{os.sep}{other}")
        return mtime

    def discard_result(self, task_id: int) -> None:
        folder = self.folder(task_id)
        for name in (serialize.RAW_NAME, serialize.GZIP_NAME):
            _unlink(f"{folder}{os.sep}{name}")

    def clear_task(self, task_id: int) -> None:
        self.discard_result(task_id)
        remove_tree(self.data_dir(task_id))

    def clear_all(self) -> None:
        remove_tree(self.results_dir)


def _remove_leftovers(folder: str) -> None:
    """Delete temporary files of writers that died (a SIGKILL mid-write).

    Only called under the task's lock, when no live process writes here.
    """
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(".") and TMP_MARK in name:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _access_error("remove", Path(path), exc) from None


_stores: dict[tuple[int, str, str], ClassStore] = {}
_stores_lock = threading.Lock()


def get_store(root: Path, name: str) -> ClassStore:
    """The store of one class under one root, one object per process."""
    marker = (os.getpid(), str(root), name)
    store = _stores.get(marker)
    if store is None:
        with _stores_lock:
            store = _stores.setdefault(marker, ClassStore(root, name))
    return store
