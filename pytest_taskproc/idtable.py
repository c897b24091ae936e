"""Task ids: canonical arguments -> a small integer, stable for the life of the cache.

The table is a ``diskcache`` database per class, written only when a task
gets a new id (that is, when it is about to be computed).  Looking ids up
never writes: planning, dry runs and ``get_task_result()`` open the database
read-only with ``sqlite3`` (``mode=ro``), which works on a cache the user may
read but not write and leaves every byte as it was.  The table keeps SQLite's
rollback journal rather than its write-ahead log for that reason: a read-only
reader of a write-ahead log would have to create its shared-memory file.

The result folders are the ground truth: each holds its ``args.json``.  A
missing, empty or damaged table is rebuilt from them with the same ids, so
nothing is recomputed; until it can be rebuilt on disk (a read-only cache),
lookups are served from the folders.

A process keeps the ids it has seen in memory, so it must notice when the
table they came from is gone (a class folder deleted by hand, ``rm -r`` of the
cache): every lookup and assignment first compares the table on disk (its
folder's and its database's inodes) with the one the ids came from, and
forgets them all when it differs.  The process holds the table's folder open
meanwhile, so a folder made anew after a deletion cannot reuse its inode.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import remove_tree
from .errors import CacheAccessError, CacheCorruptionWarning

if TYPE_CHECKING:
    import diskcache  # type: ignore[import-untyped]

NEXT_ID = "next_id"  # canonical keys are JSON objects, so this never collides
TABLE_FILE = "cache.db"


def access_error(action: str, path: Path | str, exc: OSError) -> CacheAccessError:
    reason = exc.strerror or str(exc)
    hint = (
        " (is the cache directory read-only?)" if exc.errno in (errno.EACCES, errno.EROFS) else ""
    )
    return CacheAccessError(f"cannot {action} {path}: {reason}{hint}")


def listed(folder: Path | str) -> list[str]:
    """The names in a folder of the cache; none if it does not exist, else an access error."""
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise access_error("list", folder, exc) from None


class IdTable:
    """The id table of one task class under one cache root."""

    def __init__(self, name: str, base: Path, results_dir: Path) -> None:
        self.name = name
        self.path = base / "id_table"
        # Strings, not Paths: the identity is checked on every look-up.
        self._folder = str(self.path)
        self._database = os.path.join(self._folder, TABLE_FILE)
        self.results_dir = results_dir
        self._ids: dict[str, int] = {}
        self._loaded = False
        self._lock = threading.Lock()
        self._writer: diskcache.Cache | None = None
        #: the table on disk could not be read; ids come from the result folders
        self._damaged: str | None = None
        #: (device, folder inode, database inode) of the table the ids in memory
        #: came from; None when there was none; _UNSEEN before the first look
        self._identity: tuple[int, int, int] | object | None = _UNSEEN
        self._held: int | None = None

    # -- which table the ids came from --------------------------------------
    def _check_table(self) -> None:
        """Forget every id in memory when the table on disk is not the one they came from."""
        current = _identity(self._folder, self._database)
        if current == self._identity:
            return
        if self._identity is not _UNSEEN:
            # Ids another table gave out: keeping them could make two tasks share a folder.
            self._ids.clear()
            self._loaded = False
            self._damaged = None
            self._close_writer()
        self._hold()

    def _hold(self) -> None:
        """Keep the table's folder open, so its inode stays its own while we trust its ids.

        The folder, not the database: a descriptor on the database would look
        like a connection left open.
        """
        if self._held is not None:
            os.close(self._held)
            self._held = None
        with contextlib.suppress(OSError):
            self._held = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        self._identity = _identity(self._folder, self._database)

    def confirms(self, key: str, task_id: int) -> bool:
        """Whether the table on disk gives ``task_id`` to ``key`` (before reusing a folder)."""
        with self._lock:
            found = self._read_table([key])
            confirmed = found is not None and found.get(key) == task_id
            if not confirmed:
                self._ids.clear()
                self._loaded = False
                self._close_writer()
                self._identity = _UNSEEN
            return confirmed

    # -- reading ----------------------------------------------------------
    def lookup(self, keys: list[str]) -> list[int | None]:
        """The ids of ``keys``, None for keys that have none yet; writes nothing."""
        with self._lock:
            self._check_table()
            if not self._loaded:
                self._load()
            missing = [k for k in keys if k not in self._ids]
            if missing and self._loaded:
                self._refresh(missing)  # another process may have assigned them since
            return [self._ids.get(k) for k in keys]

    def known(self, key: str) -> int | None:
        """The id in memory, if the table it came from is still the one on disk."""
        with self._lock:
            if key not in self._ids:
                return None  # nothing to vouch for: the caller looks it up (and checks)
            self._check_table()
            return self._ids.get(key)

    def remember(self, key: str, task_id: int) -> None:
        """An id learned from whoever planned the job, sparing a worker the lookup."""
        self._ids[key] = task_id

    def _load(self) -> None:
        found = self._read_table(None)
        if found is None:
            self._ids.update(self._from_folders())
        else:
            self._ids.update(found)
        self._loaded = True

    def _refresh(self, keys: list[str]) -> None:
        found = self._read_table(keys)
        if found:
            self._ids.update(found)

    def _read_table(self, keys: list[str] | None) -> dict[str, int] | None:
        """Ids from the table on disk, or None when it is missing or damaged."""
        database = self.path / TABLE_FILE
        problem = _file_problem(database)
        if problem is not None:
            if problem != MISSING:
                self._damaged = problem
            return None
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=60)
            ) as connection:
                if keys is None:
                    rows = connection.execute("SELECT key, value FROM Cache WHERE raw = 1")
                    return {k: int(v) for k, v in rows if k != NEXT_ID and isinstance(k, str)}
                found = {}
                for start in range(0, len(keys), 500):
                    chunk = keys[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    query = f"SELECT key, value FROM Cache WHERE raw = 1 AND key IN ({marks})"
                    found.update({k: int(v) for k, v in connection.execute(query, chunk)})
                return found
        except sqlite3.DatabaseError as exc:
            self._damaged = str(exc)
            return None

    def _from_folders(self) -> dict[str, int]:
        """The ids of existing results, read from their ``args.json`` files."""
        found: dict[str, int] = {}
        for task_id, key in result_folders(self.results_dir):
            if key is not None:
                found[key] = task_id
        return found

    # -- writing ----------------------------------------------------------
    def assign(self, keys: list[str]) -> list[int]:
        """Ids for ``keys``, giving new ones (in one transaction) to those without."""
        with self._lock:
            self._check_table()
            if not self._loaded:
                self._load()
            missing = [k for k in dict.fromkeys(keys) if k not in self._ids]
            if missing:
                try:
                    self._assign_in(self._open_writer(), missing)
                except sqlite3.DatabaseError as exc:
                    self._close_writer()
                    self._raise_if_access(exc, "write the id table")
                    self._damaged = str(exc)
                    try:
                        self._assign_in(self._open_writer(), missing)
                    except sqlite3.DatabaseError as again:
                        self._close_writer()
                        self._raise_if_access(again, "write the id table")
                        raise
                finally:
                    # diskcache keeps one connection per thread and closes only
                    # the calling thread's: one left in a pool thread that ends
                    # is never closed (a ResourceWarning on Python 3.13).  The
                    # next assignment reconnects, which costs far less than the
                    # computation it precedes.
                    self._close_connection()
            return [self._ids[k] for k in keys]

    def _raise_if_access(self, exc: sqlite3.DatabaseError, action: str) -> None:
        """A full disk or a read-only file is the user's to fix, not damage to rebuild."""
        reason = _access_problem(exc)
        if reason is not None:
            raise CacheAccessError(
                f"cannot {action} {self.path / TABLE_FILE}: {reason}{_hint(reason)}"
            ) from None

    def _open_writer(self) -> diskcache.Cache:
        if self._writer is not None:
            return self._writer
        # Creating, checking or rebuilding the table must not race another
        # process doing the same: one could take the other's half-made table
        # for a damaged one and remove it.
        locks = self.path.parent / "locks"
        try:
            locks.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise access_error("create cache directory", locks, exc) from None
        from filelock import FileLock  # a tenth of a second to import: only to write

        try:
            with FileLock(str(locks / "id_table.lock")):
                return self._open_writer_locked()
        except OSError as exc:
            if isinstance(exc, CacheAccessError):
                raise
            raise access_error("lock the id table in", locks, exc) from None

    def _open_writer_locked(self) -> diskcache.Cache:
        # What readers saw may have been a table another process was creating;
        # under the lock, nobody is, so damage seen now is real.
        self._damaged = _probe(self.path / TABLE_FILE)
        rebuild = self._damaged is not None
        if self._damaged == MISSING:
            # A deleted table must not hand out ids that result folders still use.
            rebuild = any(True for _ in result_folders(self.results_dir))
            self._damaged = "it is missing" if rebuild else None
        if rebuild:
            self._warn_rebuild()
            remove_tree(self.path)
        fresh = rebuild or not (self.path / TABLE_FILE).exists()
        writer = None
        try:
            writer = _open_diskcache(self.path)
            if rebuild:
                self._fill_from_folders(writer)
        except (OSError, sqlite3.DatabaseError) as exc:
            if writer is not None:
                writer.close()
            if fresh:
                # A half-made table would be taken for a damaged one next time,
                # and on a full disk it holds room the next task needs.
                remove_tree(self.path)
            if isinstance(exc, OSError):
                raise access_error("open the id table", self.path, exc) from None
            self._raise_if_access(exc, "create the id table")
            raise
        self._damaged = None
        self._writer = writer
        # The table we just opened (made, or rebuilt from the folders) is the
        # one the ids in memory agree with from now on.
        self._hold()
        return writer

    def _warn_rebuild(self) -> None:
        problem = self._damaged or "it is missing"
        warnings.warn(
            CacheCorruptionWarning(
                f"id table of {self.name} at {self.path} cannot be used ({problem}); "
                "rebuilding it from results/*/args.json with the same ids"
            ),
            stacklevel=5,
        )

    def _fill_from_folders(self, writer: diskcache.Cache) -> None:
        highest = -1
        with writer.transact(retry=True):
            for task_id, key in result_folders(self.results_dir):
                highest = max(highest, task_id)
                if key is None:
                    warnings.warn(
                        CacheCorruptionWarning(
                            f"{self.results_dir / str(task_id)} has no readable args.json (or is "
                            "not a folder); its result is not used and its task is recomputed"
                        ),
                        stacklevel=6,
                    )
                elif writer.get(key) is None:
                    writer.set(key, task_id)
                    self._ids[key] = task_id
            writer.set(NEXT_ID, max(highest + 1, int(writer.get(NEXT_ID, 0))))

    def _assign_in(self, table: diskcache.Cache, keys: list[str]) -> None:
        given: dict[str, int] = {}
        try:
            with table.transact(retry=True):
                next_id = int(table.get(NEXT_ID, 0))
                for key in keys:
                    found = table.get(key)
                    if found is None:
                        found = next_id
                        next_id += 1
                        table.set(key, found)
                    given[key] = int(found)
                table.set(NEXT_ID, next_id)
            # Only ids the table kept: a transaction rolled back (a full disk)
            # must not leave ids in memory that the table may give out again.
            self._ids.update(given)
        except OSError as exc:
            raise access_error("write the id table of", self.path, exc) from None

    def _close_connection(self) -> None:
        """Close this thread's connection to the table, keeping the table open for the next."""
        if self._writer is not None:
            self._writer.close()

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        with self._lock:
            self._close_writer()
            if self._held is not None:
                os.close(self._held)
                self._held = None
            self._identity = _UNSEEN


_UNSEEN = object()


def _identity(folder: str, database: str) -> tuple[int, int, int] | None:
    """(device, folder inode, database inode) of an id table; None when there is none."""
    try:
        outer = os.stat(folder)
        inner = os.stat(database)
    except OSError:
        return None
    return (outer.st_dev, outer.st_ino, inner.st_ino)


MISSING = "missing"

#: sqlite result codes that mean the file system, not the table, is at fault
_ACCESS_CODES = {
    3: "permission denied",  # SQLITE_PERM
    8: "the database is read-only",  # SQLITE_READONLY
    10: "disk I/O error",  # SQLITE_IOERR
    13: "No space left on device (database or disk is full)",  # SQLITE_FULL
    14: "unable to open the database file",  # SQLITE_CANTOPEN
}


def _access_problem(exc: sqlite3.DatabaseError) -> str | None:
    """What keeps sqlite from writing, if it is an access problem and not damage."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return _ACCESS_CODES.get(code & 0xFF)
    text = str(exc).lower()
    for words, reason in (
        ("disk is full", _ACCESS_CODES[13]),
        ("readonly", _ACCESS_CODES[8]),
        ("read-only", _ACCESS_CODES[8]),
        ("disk i/o", _ACCESS_CODES[10]),
        ("unable to open", _ACCESS_CODES[14]),
    ):
        if words in text:
            return reason
    return None


def _hint(reason: str) -> str:
    if "read-only" in reason or "permission" in reason:
        return " (is the cache directory read-only?)"
    if "No space" in reason:
        return " (free some space, or prune the cache: see taskproc-cache du)"
    return ""


def _file_problem(database: Path) -> str | None:
    """MISSING, "it is empty", or None when the database file is there to be read.

    It is opened once with ``os.open`` to tell a permission problem (an error to
    report) from damage (a table to rebuild): sqlite's own errors say neither.
    """
    try:
        size = os.stat(database).st_size
        os.close(os.open(database, os.O_RDONLY))
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        raise access_error("read the id table", database, exc) from None
    return "it is empty" if size == 0 else None


def _probe(database: Path) -> str | None:
    """What is wrong with the table's database file, or None if it reads fine."""
    problem = _file_problem(database)
    if problem is not None:
        return problem
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=60)
        ) as connection:
            connection.execute("SELECT count(*) FROM Cache").fetchone()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None


def _open_diskcache(path: Path) -> diskcache.Cache:
    import diskcache  # only to write: reading goes through sqlite3

    # Made in two steps so that a constructor that fails (a full disk while it
    # creates the tables) can still be closed: it has opened its connection by
    # then, and the exception's frames would keep it open until collected.
    table = diskcache.Cache.__new__(diskcache.Cache)
    try:
        table.__init__(
            str(path),
            eviction_policy="none",
            statistics=0,
            tag_index=0,
            timeout=60,
            sqlite_journal_mode="delete",
            # No fsync per transaction: a table lost in a crash is rebuilt from the
            # result folders with the same ids, so durability buys nothing here.
            sqlite_synchronous=0,
        )
        table.get(NEXT_ID)  # touches the database, so damage shows up here
    except BaseException:
        if hasattr(table, "_local"):  # set before the constructor connects
            table.close()
        raise
    return table


def result_folders(results_dir: Path) -> list[tuple[int, str | None]]:
    """``(task id, args.json text or None)`` of every result folder."""
    found: list[tuple[int, str | None]] = []
    for name in listed(results_dir):
        if not name.isdigit():
            continue
        key: str | None
        try:
            with open(os.path.join(results_dir, name, "args.json"), encoding="utf-8") as handle:
                key = handle.read()
        except (OSError, UnicodeDecodeError, NotADirectoryError):
            key = None
        found.append((int(name), key))
    return found
