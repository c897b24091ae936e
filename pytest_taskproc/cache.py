"""The on-disk layout of the cache: result folders, their records, and how both are written.

Layout, per task class::

    {root}/taskproc/{module}.{qualname}/
        id_table/             canonical arguments -> task id (see idtable.py)
        locks/tasks.lock      cross-process locks (see locks.py)
        results/{id}/
            args.json         canonical arguments (ground truth for the id table)
            record.json       what the result was made from (see record.py)
            result.pkl[.gz]   the pickled value (see serialize.py)
            stdout.txt, stderr.txt, data/

``record.json`` is the commit point.  A new result is written as: remove the
old record (from then on the old result is no longer trusted), remove the old
value, run the task, write the value, then rename the new record into place.
A SIGKILL at any instant leaves the old result whole, the new one whole, or a
folder without a record, which counts as no result.  A reader trusts a value
only when the record names the task's arguments and the bytes have the
recorded digest; a reader that finds the bytes changed under it reads again
instead of calling it damage, since a writer may have committed meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import warnings
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from . import serialize
from .atomic import TMP_MARK, read_to_end, remove_tree, write_bytes_atomic, write_text_atomic
from .errors import (
    CacheAccessError,
    CacheCorruptionWarning,
    CorruptResultError,
    RecordError,
    ResultMissingError,
    UpstreamChangedError,
)
from .idtable import IdTable, access_error
from .inputs import stat_cache, stat_key, written_changes
from .record import Record
from .recordmemory import (
    Handed,
    committed_entry,
    committed_record,
    file_stamp,
    parsed_record,
    remember_committed,
)

__all__ = ["CacheCorruptionWarning", "ClassStore", "get_store"]

RECORD_NAME = "record.json"
ARGS_NAME = "args.json"
STDOUT_NAME = "stdout.txt"
STDERR_NAME = "stderr.txt"
CACHE_README = """\
# pytest-taskproc cache

Cached task results written by pytest-taskproc. Each task class has a folder
`{module}.{qualname}/` with `results/{task_id}/` per task: `args.json` (the
task's arguments), `record.json` (what the result was made from: code digest,
upstream values read, when and where) and the pickled result. Delete a folder
to make its tasks recompute. Results are pickles: only load a cache you trust.
"""

#: How often a reader re-reads a result that changed under it before giving up.
READ_ATTEMPTS = 5


class StoredValue(NamedTuple):
    """What ``write_value`` stored: the file name, the pickle's digest and size, the file's size."""

    file: str
    digest: str
    size: int
    stored_size: int
    #: (mtime_ns, inode, ctime_ns) of the file as it was left
    stat: tuple[int, int, int]
    #: the classes and functions the pickle names (by module and name only)
    named: tuple[Any, ...] = ()


#: A value file at least this large whose stat is the one its writer recorded
#: (size, mtime, inode and ctime, which no user can set) is loaded without
#: hashing it again, as planning already trusts it: every process writes a
#: value into a new file, never into an old one, so those are the writer's
#: bytes unless the disk changed them under the file system (bit rot).  A
#: smaller one is hashed, which costs little; a large file changed since,
#: copied or touched is hashed, and its stat remembered in the stat table when
#: its bytes are the recorded ones (so a copied cache is hashed once).
TRUST_STAT_FROM = 1 << 20


def _writer_stat(st: os.stat_result) -> tuple[int, int, int]:
    """(mtime_ns, inode, ctime_ns): what a record keeps of its value file as the writer left it."""
    return (st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@functools.lru_cache(maxsize=64)
def root_path(root: str) -> Path:
    """The cache root of a job as a ``Path``, made once per process: pathlib costs per task."""
    return Path(root)


def ensure_directory(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise access_error("create cache directory", path, exc) from None


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
                raise access_error("write", path, exc) from None
    _prepared_roots.add(marker)
    return top


def _warn(message: str) -> None:
    warnings.warn(CacheCorruptionWarning(message), stacklevel=4)


class ClassStore:
    """Everything on disk for one task class under one cache root."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.base = root / "taskproc" / name
        self.results_dir = self.base / "results"
        self.locks_dir = self.base / "locks"
        self.ids = IdTable(name, self.base, self.results_dir)
        self._locks_ready = False
        self._results_prefix = str(self.results_dir) + os.sep

    # -- ids --------------------------------------------------------------
    def lookup_ids(self, keys: list[str]) -> list[int | None]:
        """Existing ids of ``keys`` (None where there is none); writes nothing."""
        return self.ids.lookup(keys)

    def known_id(self, key: str) -> int | None:
        found = self.ids.known(key)
        return found if found is not None else self.ids.lookup([key])[0]

    def task_ids(self, keys: list[str]) -> list[int]:
        """Ids for ``keys``, assigning new ones: only for tasks about to be written."""
        prepare_root(self.root)
        ensure_directory(self.results_dir)
        return self.ids.assign(keys)

    def task_id(self, key: str) -> int:
        found = self.ids.known(key)
        return found if found is not None else self.task_ids([key])[0]

    def remember_id(self, key: str, task_id: int) -> None:
        self.ids.remember(key, task_id)

    def missing_message(self, key: str) -> str:
        """Why there is no result, naming the cache looked in (the usual surprise: another one)."""
        return (
            f"no cached result for {self.name} with arguments {key} in the cache {self.root} "
            "(computed in another cache? the root is Context.cache_dir, else $CP_CACHE_DIR, "
            "else .cache in the working directory)"
        )

    # -- paths ------------------------------------------------------------
    def folder(self, task_id: int) -> str:
        """The task's result folder as a string: pathlib costs too much per task."""
        return f"{self._results_prefix}{task_id}"

    def result_dir(self, task_id: int) -> Path:
        return Path(self.folder(task_id))

    def stdout_path(self, task_id: int) -> Path:
        return self.result_dir(task_id) / STDOUT_NAME

    def stderr_path(self, task_id: int) -> Path:
        return self.result_dir(task_id) / STDERR_NAME

    def data_dir(self, task_id: int) -> Path:
        return self.result_dir(task_id) / "data"

    def record_path(self, task_id: int) -> str:
        return f"{self.folder(task_id)}{os.sep}{RECORD_NAME}"

    def lock_path(self, stem: str) -> str:
        if not self._locks_ready:
            ensure_directory(self.locks_dir)
            self._locks_ready = True
        return f"{self.locks_dir}{os.sep}{stem}.lock"

    # -- reading ----------------------------------------------------------
    def _record_text(self, task_id: int) -> bytes | None:
        path = self.record_path(task_id)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            return b""
        except OSError as exc:
            raise access_error("read", path, exc) from None

    def read_record(self, task_id: int, key: str, warn: bool = True) -> Record | None:
        """The record of a task's result, or None when there is no trustworthy one.

        Only the record is read (and the value file's size checked), so
        planning a large graph costs one small read per task.
        """
        text = self._record_text(task_id)
        if text is None:
            return None
        return self._checked_record(task_id, key, text, warn)

    def inspect_record(self, task_id: int, key: str) -> Record | str | None:
        """Like :meth:`read_record`, but says what is wrong instead of warning (None: no result)."""
        text = self._record_text(task_id)
        return None if text is None else self._check_record(task_id, key, text, rehash=True)

    def _checked_record(self, task_id: int, key: str, text: bytes, warn: bool) -> Record | None:
        found = self._check_record(task_id, key, text, rehash=True)
        if isinstance(found, str):
            if warn:
                _warn(found + "; recomputing it")
            return None
        return found

    def _check_record(
        self, task_id: int, key: str, text: bytes, rehash: bool = False
    ) -> Record | str | None:
        """The record if it is trustworthy, None if there is no result, else what is wrong.

        With ``rehash`` (planning), a value file whose stat is not the one its
        writer recorded is hashed again before it is trusted, as git's index
        does: damage or another file copied over it is found before the value
        is served as fresh, and only such files are read.
        """
        path = self.record_path(task_id)
        try:
            record = parsed_record(text)
        except RecordError as exc:
            return f"{path} of {self.name} {key} is damaged ({exc})"
        return self._check_parsed(task_id, key, record, text, rehash)

    def _check_parsed(
        self,
        task_id: int,
        key: str,
        record: Record,
        text: bytes,
        rehash: bool = False,
        stat_value: bool = True,
    ) -> Record | str | None:
        """``_check_record`` of a record already parsed from ``text``; without ``stat_value``
        the value file is not looked at (its reader checks its size)."""
        path = self.record_path(task_id)
        if record.name != self.name or record.key != key:
            return (
                f"{path} belongs to {record.name} {record.key}, not to {self.name} {key}, "
                "so that result is not trusted"
            )
        if record.file not in (serialize.RAW_NAME, serialize.GZIP_NAME):
            return f"{path} of {self.name} {key} names no result file"
        if not stat_value:
            return record
        value_path = f"{self.folder(task_id)}{os.sep}{record.file}"
        try:
            st = os.stat(value_path)
        except (FileNotFoundError, NotADirectoryError):
            return None  # the record of a result being replaced, or a deleted value file
        except OSError as exc:
            raise access_error("read", value_path, exc) from None
        if st.st_size != record.stored_size:
            return (
                f"cached result {value_path} of {self.name} {key} is damaged: it has "
                f"{st.st_size} bytes where its record says {record.stored_size}"
            )
        if rehash and _writer_stat(st) != record.stat:
            return self._rehashed(task_id, record, text, value_path, st)
        return record

    def _rehashed(
        self, task_id: int, record: Record, text: bytes, path: str, st: os.stat_result
    ) -> Record | str | None:
        """A value file touched since its writer left it: trusted only if its bytes are the
        recorded ones (remembered by stat, so a copied cache is read once, not every run)."""
        table = stat_cache(self.root)
        now = stat_key(st)
        if table.lookup(path, now) == record.digest:
            return record
        try:
            with open(path, "rb") as handle:
                digest = serialize.value_digest(serialize.unpack(record.file, handle.read()))
        except FileNotFoundError:
            return None
        except ValueError:
            digest = None
        except OSError as exc:
            raise access_error("read", path, exc) from None
        if digest == record.digest:
            table.remember(path, now, digest)
            return record
        if self._record_text(task_id) != text:
            return None  # replaced by a writer meanwhile: judged again next time
        return (
            f"cached result {path} of {self.name} {record.key} is damaged: it does not have the "
            "digest its record names (changed or replaced after it was written)"
        )

    def written_changes(self, task_id: int, record: Record) -> list[str]:
        """The files the task wrote into its task_directory that are no longer what its record
        names, by relative path (see :func:`inputs.written_changes`); empty when all are."""
        if record.files is None and not record.written:
            return []  # the common case: nothing written, nothing to look at
        return written_changes(
            f"{self.folder(task_id)}{os.sep}data",
            record.files,
            record.written,
            stat_cache(self.root),
        )

    def value_stat(self, task_id: int, name: str) -> tuple[int, int, int] | None:
        """(mtime_ns, inode, ctime_ns) of a value file as its writer leaves it, for the record."""
        try:
            st = os.stat(f"{self.folder(task_id)}{os.sep}{name}")
        except OSError:
            return None
        return _writer_stat(st)

    def handed(self, task_id: int, record: Record) -> Handed | None:
        """What a downstream job needs to trust ``record``, just committed here, unread."""
        known = committed_entry(self.record_path(task_id))
        if known is None or known[2] is not record:
            return None
        return Handed(known[0], record.file, record.stored_size, record.stat)

    def _current_record(
        self, task_id: int, key: str, handed: tuple[Handed, str, str] | None, memory: bool
    ) -> tuple[bytes | None, Record | str | None, bool]:
        """The record to read the value by, its text (None: vouched for by ``handed``), and
        whether it came from memory (then the value file's size is left to the reader).

        ``memory``: take the record this process committed, or ``handed``, while
        the record file is still that one; else read and check it.
        """
        path = self.record_path(task_id)
        if memory:
            committed = committed_record(path)
            if committed is not None:
                text, parsed = committed
                return text, self._check_parsed(task_id, key, parsed, text, stat_value=False), True
            if handed is not None:
                given, digest, lineage = handed
                try:
                    st = os.stat(path)
                except OSError:
                    st = None
                if st is not None and file_stamp(st) == given.stamp:
                    partial = given.record(self.name, key, digest, lineage)
                    return (
                        None,
                        self._check_parsed(task_id, key, partial, b"", stat_value=False),
                        True,
                    )
        found = self._record_text(task_id)
        return found, None if found is None else self._check_record(task_id, key, found), False

    def _stamped(self, task_id: int, handed: Handed) -> bool:
        """Whether the record file is still the one ``handed`` describes."""
        try:
            return file_stamp(os.stat(self.record_path(task_id))) == handed.stamp
        except OSError:
            return False

    def load_value(
        self, task_id: int, key: str, handed: tuple[Handed, str, str] | None = None
    ) -> tuple[Any, Record]:
        """The stored value and its record, checked against the recorded digest.

        ``ResultMissingError`` when there is no result; ``CorruptResultError``
        when the stored bytes are damaged.  A result replaced by another
        process while it is read is read again.  ``handed``: the writer's
        :class:`Handed` with the digest and lineage the caller expects; while
        the record file is that one, its record is not read, and only the
        part of it reading the value needs is returned.
        """
        memory = True
        for _ in range(READ_ATTEMPTS):
            text, record, remembered = self._current_record(task_id, key, handed, memory)
            if isinstance(record, str):
                raise CorruptResultError(record, self.name, key)
            if record is None:
                raise ResultMissingError(self.missing_message(key))
            path = f"{self.folder(task_id)}{os.sep}{record.file}"
            try:
                value, problem, hashed = self._read_value(path, record)
            except FileNotFoundError:
                # replaced just now: read the new record (a record from memory: the
                # record file says whether there is a result at all)
                memory = memory and not remembered
                continue
            except OSError as exc:
                raise access_error("read", path, exc) from None
            if problem is None and hashed:
                return value, record
            if remembered and problem is not None:
                # A record from memory whose value does not match it: judged next by
                # the record file and the value file's stat, as any other result is.
                memory = False
                continue
            if text is None:
                if problem is None and handed is not None and self._stamped(task_id, handed[0]):
                    return value, record  # trusted by its stat; the handed record still stands
                memory = False  # the record was not read: judge the bytes by the record itself
                continue
            if self._record_text(task_id) != text:
                # A writer committed in the meantime; the bytes were the new ones (and a
                # record from memory is not taken again: read the file's record next).
                memory = memory and not remembered
                continue
            if problem is None:
                # Trusted by its stat: the file read is the one the record
                # describes, as its writer left it, and the record did not change
                # while it was read (a writer removes the record before the value).
                return value, record
            dropped = self._drop_damaged(task_id, text)
            raise CorruptResultError(
                f"cached result {path} of {self.name} with arguments {key} is damaged: "
                + problem
                + (
                    "; it is no longer trusted, so the next run recomputes it (run the task "
                    "again, e.g. task.run_graph(), to get a good value now)"
                    if dropped
                    else "; delete its result folder (task.clear_task()) and run the task "
                    "again to recompute it"
                ),
                self.name,
                key,
            )
        raise ResultMissingError(
            f"the result of {self.name} with arguments {key} kept changing while it was read"
        )

    def _read_value(self, path: str, record: Record) -> tuple[Any, str | None, bool]:
        """The value in a value file: (value, what is wrong with it or None, whether it was hashed).

        A file of at least ``TRUST_STAT_FROM`` bytes whose stat is the one its
        writer recorded, or one whose bytes had the recorded digest at this
        very stat (the stat table: a copied cache, hashed once by planning),
        is unpickled straight from the file; any other is read, hashed and
        compared with the recorded digest.  ``OSError`` propagates.
        """
        # A bare descriptor: most values are small, and a buffered file object costs
        # three more system calls and a few objects for each upstream value read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            large = st.st_size >= TRUST_STAT_FROM and st.st_size == record.stored_size
            if large and (
                _writer_stat(st) == record.stat
                or stat_cache(self.root).lookup(path, stat_key(st)) == record.digest
            ):
                with os.fdopen(fd, "rb") as handle:
                    fd = -1  # the file object closes it
                    try:
                        return serialize.load_file(record.file, handle), None, False
                    except ValueError as exc:
                        return None, str(exc), False
            blob = read_to_end(fd, st.st_size)
            if large and stat_key(os.fstat(fd)) != stat_key(st):
                large = False  # changed while it was read: its stat is not worth remembering
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            value, intact = serialize.verified_load(
                serialize.unpack(record.file, blob), record.digest
            )
        except ValueError as exc:
            return None, str(exc), True
        if not intact:
            return None, "its bytes do not have the digest its record names", True
        if large:
            stat_cache(self.root).remember(path, stat_key(st), record.digest)
        return value, None, True

    def _drop_damaged(self, task_id: int, text: bytes) -> bool:
        """Withdraw the record of a value found damaged, so planning never trusts it again
        (its stat may well be the writer's: bit rot changes no date).  Best effort: a cache
        that cannot be written keeps it, and the error says how to clear it."""
        if self._record_text(task_id) != text:
            return False
        try:
            os.unlink(self.record_path(task_id))
        except OSError:
            return False
        return True

    def planned_value_problem(self, task_id: int, record: Record) -> str | None:
        """What is wrong with the value file of a result planning found fresh; None if nothing.

        A file that is as its writer left it (the stat its record names), or
        whose bytes were hashed at this stat before (the stat table), is not
        read: planning hashed again every other one (``_check_record`` with
        ``rehash``), so a cached run costs the same whatever the size of its
        values.  Only a file changed since (or a record without a stat) is
        hashed again here.
        """
        path = f"{self.folder(task_id)}{os.sep}{record.file}"
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None  # replaced or cleared meanwhile: not damage
        except OSError as exc:
            raise access_error("read", path, exc) from None
        if st.st_size == record.stored_size:
            if _writer_stat(st) == record.stat:
                return None
            if stat_cache(self.root).lookup(path, stat_key(st)) == record.digest:
                return None
        return self.verify_value(task_id, record)

    def verify_value(self, task_id: int, record: Record) -> str | None:
        """Whether the stored bytes still have the recorded digest; what is wrong, or None."""
        path = f"{self.folder(task_id)}{os.sep}{record.file}"
        try:
            with open(path, "rb") as handle:
                data = serialize.unpack(record.file, handle.read())
        except FileNotFoundError:
            return None  # replaced or cleared meanwhile: not damage
        except ValueError as exc:
            return f"cached result {path} of {self.name} is damaged: {exc}"
        if serialize.value_digest(data) != record.digest:
            if self._record_text(task_id) is None:
                return None
            current = self.read_record(task_id, record.key, warn=False)
            if current is not None and current.digest != record.digest:
                return None  # recomputed by another process meanwhile
            return f"cached result {path} of {self.name} does not have the digest its record names"
        return None

    # -- writing ----------------------------------------------------------
    def create_folder(self, task_id: int, key: str) -> bool:
        """Create the task's result folder with its ``args.json``; False if it existed."""
        folder = self.folder(task_id)
        try:
            os.mkdir(folder)
        except FileExistsError:
            return False
        except FileNotFoundError:
            ensure_directory(Path(folder))
        except OSError as exc:
            raise access_error("prepare", folder, exc) from None
        # A new folder holds no record, so args.json need not be written
        # atomically: a torn one is rewritten by the next run.
        try:
            _write_new(f"{folder}{os.sep}{ARGS_NAME}", key.encode())
        except OSError as exc:
            remove_tree(Path(folder))  # nothing of it is a result yet
            raise access_error("prepare", folder, exc) from None
        return True

    def begin_run(
        self, task_id: int, key: str, created: bool = False
    ) -> tuple[bool, Record | None]:
        """Make way for a new result; returns (folder is new, the previous record).

        The previous record is removed first: from then on the old value is
        not trusted, so a failed or killed run leaves no result behind.
        ``created``: the caller made the folder (``create_folder``) under the task's lock.
        """
        folder = self.folder(task_id)
        if created or self.create_folder(task_id, key):
            return True, None
        if not os.path.isdir(folder):
            _warn(f"{folder} is not a folder; replacing it with the result of {self.name} {key}")
            _unlink(folder)
            return self.begin_run(task_id, key)
        try:
            with open(f"{folder}{os.sep}{ARGS_NAME}", encoding="utf-8") as handle:
                owned = handle.read() == key
        except (OSError, UnicodeDecodeError):
            owned = False
        if not owned and not self.ids.confirms(key, task_id):
            # The id came from a table that is gone (a class folder deleted by
            # hand): the folder is another task's now, and stays untouched.
            raise UpstreamChangedError(
                f"{folder} belongs to another task of {self.name} now (was the class folder "
                f"deleted?); planning {key} again"
            )
        previous = self.read_record(task_id, key, warn=False)
        _unlink(self.record_path(task_id))
        self.discard_value(task_id)
        _remove_leftovers(folder)
        if not owned:
            try:
                write_text_atomic(Path(folder, ARGS_NAME), key)
            except OSError as exc:
                raise access_error("prepare", folder, exc) from None
        remove_tree(Path(folder, "data"))
        return False, previous

    def write_value(self, task_id: int, value: Any, compress_level: int | None) -> StoredValue:
        """Pickle ``value`` into the task's folder in one pass; what was stored.

        Written in place: until the record is committed nobody trusts it.
        Pickling errors propagate as they are (nothing is left behind); a
        failing write is an ``access_error``.
        """
        folder = self.folder(task_id)
        with contextlib.ExitStack() as files:

            def open_file(name: str) -> BinaryIO:
                # Unbuffered: the writer hands over whole pickle frames and arrays,
                # and a buffered file costs system calls of its own (isatty, lseek).
                return files.enter_context(open(f"{folder}{os.sep}{name}", "wb", buffering=0))

            writer = serialize.ValueWriter(open_file, compress_level)
            named: dict[int, Any] = {}
            try:
                serialize.stream_result(value, writer, named)
                digest = writer.finish()
            except BaseException as exc:
                files.close()
                path = f"{folder}{os.sep}{writer.name}"
                if writer.name is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # a partial value is no result; a full disk needs room
                if isinstance(exc, OSError) and exc is writer.write_error:
                    raise access_error("write the result", path, exc) from None
                raise
            stat = os.fstat(writer.fileno())
        assert writer.name is not None
        return StoredValue(
            writer.name,
            digest,
            writer.size,
            writer.stored_size,
            _writer_stat(stat),
            tuple(named.values()),
        )

    def commit(self, task_id: int, record: Record) -> None:
        """Publish a result: its record replaces whatever record was there, atomically."""
        path = self.record_path(task_id)
        text = record.to_json().encode()
        try:
            written = write_bytes_atomic(path, text)
        except OSError as exc:
            # A value without a record is no result, and on a full disk it
            # holds the room the next task needs.
            with contextlib.suppress(CacheAccessError):
                self.discard_value(task_id)
            raise access_error("write", path, exc) from None
        remember_committed(path, written, text, record)

    def discard_value(self, task_id: int) -> None:
        folder = self.folder(task_id)
        for name in (serialize.RAW_NAME, serialize.GZIP_NAME):
            _unlink(f"{folder}{os.sep}{name}")

    def discard_result(self, task_id: int) -> None:
        """Forget a result: the record goes first, so no reader trusts what remains."""
        _unlink(self.record_path(task_id))
        self.discard_value(task_id)

    def clear_task(self, task_id: int) -> None:
        self.discard_result(task_id)
        remove_tree(self.data_dir(task_id))

    def clear_all(self) -> None:
        remove_tree(self.results_dir)


def _write_new(path: str, data: bytes) -> None:
    """Write a file that must not exist yet, through a bare descriptor (once per computed
    task: a file object costs more than the write)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


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
    except (FileNotFoundError, NotADirectoryError):
        pass
    except IsADirectoryError:
        remove_tree(Path(path))
    except OSError as exc:
        raise access_error("remove", path, exc) from None


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


if __name__ == "__main__":
    # `python -m pytest_taskproc.cache` runs this file as __main__, a second copy
    # of this module: hand over at once to the tool, which imports the real one.
    from pytest_taskproc.cachetool import main

    raise SystemExit(main())
