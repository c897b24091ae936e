"""Declared inputs of a task (``Const`` values, ``InputFile`` paths) and their digests.

A ``Const`` is digested by its canonical JSON when it is plain data (stable
across processes), else by its pickled bytes.  A file is digested by its
SHA-256, a directory by the SHA-256 of every file in it by relative path.
Hashing a large file on every run would cost more than the run, so, as git's
index does, the digest is kept with the file's (size, mtime, inode, ctime)
when it was hashed, and the file is read again only when one of those
differs; a size that differs always means new content.  The table lives in
the cache root and is written only by runs that write (deciding freshness
writes nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .errors import TaskArgumentError
from .identity import _canonical, encode_key
from .record import InputRead
from .requires import Const, InputFile, slot_leaves
from .sourcefiles import is_user_module
from .valuedigest import ValueText, sha

STAT_CACHE_NAME = "stat-cache.json"
#: A file changed less than this long before it was hashed may change again
#: within the same timestamp (coarse file systems count whole seconds), so
#: its stat is not trusted later ("racily clean" in git's words).
RACY_SECONDS = 2.0
#: Entries kept at most; the oldest go first (a digest missing is only a re-read).
MAX_ENTRIES = 200_000
CHUNK = 1 << 20

Stat = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns


def stat_key(st: os.stat_result) -> Stat:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def const_digest(const: Const[Any]) -> str:
    """The digest of a ``Const`` value, computed once per ``Const`` object."""
    cached: str | None = const.__dict__.get("_tp_digest")
    if cached is None:
        try:
            canonical = _canonical(const.value, "Const", "value")
            # The canonical form sorts dict keys; a run_task iterating the dict sees its
            # order, so the order of every dict counts too.
            order = json.dumps(_key_orders(const.value), separators=(",", ":"))
            cached = "json:" + sha(encode_key({"v": canonical}) + "\0" + order)
        except (TaskArgumentError, RecursionError, ValueError):
            try:
                # the code digest's description: sets in one order and objects by their
                # state in every process, where pickled bytes follow the hash seed
                text = ValueText(_is_user_class).text(const.value)
                cached = "value:" + sha(text)
            except Exception:
                # Nothing says whether it is the value of last time: count it as
                # new in every process rather than trust it.
                cached = "unpicklable:" + uuid.uuid4().hex
        object.__setattr__(const, "_tp_digest", cached)
    return cached


def _is_user_class(value: Any) -> bool:
    """Objects of the user's classes are described by their state; others by their
    pickled bytes, functions by their name."""
    return isinstance(value, type) and is_user_module(value.__module__ or "")


def _key_orders(value: Any) -> list[Any]:
    """The keys of every dict inside ``value`` in insertion order, depth first."""
    orders: list[Any] = []
    if isinstance(value, dict):
        orders.append([repr(k) for k in value])
        items: Iterable[Any] = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return orders
    for item in items:
        orders.extend(_key_orders(item))
    return orders


class StatCache:
    """Digests of files by the stat they had when hashed, for one cache root."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, tuple[Stat, str]] = {}
        self.dirty = False
        self.lock = threading.Lock()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            for name, (size, mtime, inode, ctime, digest) in data.items():
                self.entries[name] = ((size, mtime, inode, ctime), digest)
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # no table yet, or a damaged one: files are hashed again

    def lookup(self, path: str, st: Stat) -> str | None:
        found = self.entries.get(path)
        return found[1] if found is not None and found[0] == st else None

    def remember(self, path: str, st: Stat, digest: str) -> None:
        if time.time() - st[1] / 1e9 < RACY_SECONDS:
            return
        with self.lock:
            if self.entries.get(path) != (st, digest):
                self.entries.pop(path, None)  # re-inserted last: the newest stay longest
                self.entries[path] = (st, digest)
                self.dirty = True

    def persist(self) -> None:
        """Write the table if it learned something; only runs allowed to write call this."""
        with self.lock:
            if not self.dirty:
                return
            entries = list(self.entries.items())[-MAX_ENTRIES:]
            self.dirty = False
        document = {name: [*st, digest] for name, (st, digest) in entries}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps(document, separators=(",", ":")))
        except OSError:
            pass  # a read-only or full cache: the files are only hashed again next time


_tables: dict[tuple[int, str], StatCache] = {}
_tables_lock = threading.Lock()


def stat_cache(root: Path) -> StatCache:
    """The table of one cache root, loaded once per process."""
    marker = (os.getpid(), str(root))
    table = _tables.get(marker)
    if table is None:
        with _tables_lock:
            table = _tables.get(marker)
            if table is None:
                table = _tables[marker] = StatCache(root / "taskproc" / STAT_CACHE_NAME)
    return table


def persist_stat_cache(root: Path) -> None:
    table = _tables.get((os.getpid(), str(root)))
    if table is not None:
        table.persist()


def hash_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str, table: StatCache | None) -> str:
    """The SHA-256 of a file's bytes, read only when its stat is not the one last hashed."""
    st = stat_key(os.stat(path))
    if table is not None:
        known = table.lookup(path, st)
        if known is not None:
            return known
    digest = hash_file(path)
    if table is not None and stat_key(os.stat(path)) == st:  # unchanged while it was read
        table.remember(path, st, digest)
    return digest


def walk_files(top: str, follow_links: bool = False) -> Iterator[str]:
    """Every file under ``top`` by relative path (``/`` separated); with ``follow_links``
    also those in linked folders (``data/current -> runs/v2``), each link followed
    unless it leads back to a folder the walk is inside."""
    # Without links followed the walk cannot loop: no realpath (a stat per path
    # component) per folder, which every computed task's task_directory pays.
    chains = {top: (os.path.realpath(top),)} if follow_links else {}
    for here, dirs, files in os.walk(top, followlinks=follow_links):
        if follow_links:
            chain = chains.pop(here, ())
            kept = []
            for name in sorted(dirs):
                real = os.path.realpath(os.path.join(here, name))
                if real not in chain:
                    kept.append(name)
                    chains[os.path.join(here, name)] = (*chain, real)
            dirs[:] = kept
        else:
            dirs.sort()
        rel = os.path.relpath(here, top)
        for name in sorted(files):
            yield name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")


def tree_digest(top: str, table: StatCache | None, follow_links: bool = False) -> str:
    """The digest of a directory: every file's relative path and SHA-256."""
    # one order for every walk, whatever the file system's
    names = sorted(walk_files(top, follow_links))
    return _combine((rel, file_digest(os.path.join(top, rel), table)) for rel in names)


def _combine(files: Iterable[tuple[str, str]]) -> str:
    digest = hashlib.sha256(b"dir\n")
    for rel, file in files:
        digest.update(f"{rel}\0{file}\n".encode())
    return "dir:" + digest.hexdigest()


def written_digest_of(files: dict[str, str]) -> str | None:
    """:func:`written_digest` of files already hashed (by relative path)."""
    return _combine(sorted(files.items())) if files else None


def file_digests(top: Path) -> dict[str, str]:
    """Each file under ``top`` by relative path, with its SHA-256 (empty when there is none)."""
    if not os.path.isdir(top):
        return {}
    return {rel: hash_file(os.path.join(top, rel)) for rel in walk_files(str(top))}


def written_digest(directory: str | Path) -> str | None:
    """The digest of the files a task wrote into its task_directory; None when it wrote none."""
    top = str(directory)
    if not os.path.isdir(top) or next(walk_files(top), None) is None:
        return None
    return tree_digest(top, None)


WrittenFiles = dict[str, tuple[Stat, str]]


def written_files(directory: str) -> tuple[str | None, WrittenFiles]:
    """:func:`written_digest` of a task_directory, and each file in it by relative path with
    its stat as the writer left it and its SHA-256 (what planning compares, see
    :func:`written_changes`)."""
    files: WrittenFiles = {}
    if not os.path.isdir(directory):
        return None, files  # most tasks write nothing: one stat, not a walk
    for rel in walk_files(directory):
        path = os.path.join(directory, rel)
        st = stat_key(os.stat(path))
        files[rel] = (st, hash_file(path))
    return written_digest_of({rel: sha for rel, (_, sha) in files.items()}), files


def written_changes(
    directory: str, digest: str | None, recorded: WrittenFiles, table: StatCache
) -> list[str]:
    """The files of a task_directory that are not what its record names (changed, deleted or
    added since), by relative path; empty when all are.

    As for the value file, a file whose stat is its writer's, or whose bytes were hashed at
    this stat before (``table``), is not read, so a copied or touched cache is read once,
    not every run.  A record naming no files costs no file system call.
    """
    if digest is None and not recorded:
        return []
    now: dict[str, str] = {}
    unreadable: set[str] = set()  # gone or unreadable meanwhile: not what was written
    for rel in walk_files(directory):  # nothing for a folder deleted or never made
        path = os.path.join(directory, rel)
        try:
            st = stat_key(os.stat(path))
            known = recorded.get(rel)
            now[rel] = (
                known[1] if known is not None and known[0] == st else file_digest(path, table)
            )
        except OSError:
            unreadable.add(rel)
    if recorded:
        changed = {
            rel for rel, sha in now.items() if rel not in recorded or recorded[rel][1] != sha
        }
        return sorted(changed | unreadable | (recorded.keys() - now.keys()))
    # a record from before per-file stats: only the digest of the whole folder to compare
    if not unreadable and written_digest_of(now) == digest:
        return []
    return sorted(now.keys() | unreadable) or ["(every file deleted)"]


def _empty_folders(top: str) -> list[str]:
    """The folders under ``top`` holding nothing, by relative path (``/`` separated)."""
    found = []
    for here, dirs, files in os.walk(top):
        if here != top and not dirs and not files:
            found.append(os.path.relpath(here, top).replace(os.sep, "/"))
    return sorted(found)


def path_digest(path: Path, table: StatCache | None) -> str | None:
    """The digest of a file or directory; None when there is none."""
    text = str(path)
    try:
        if os.path.isdir(text):
            # a task reads through a linked folder as through any other
            digest = tree_digest(text, table, follow_links=True)
            empty = _empty_folders(text)
            # a task listing the directory sees an empty folder too; a tree without one
            # keeps the digest it always had
            return "dir:" + sha(f"{digest}\0{json.dumps(empty)}") if empty else digest
        return file_digest(text, table)
    except (FileNotFoundError, NotADirectoryError):
        return None


def collect_inputs(owner: Any, slots: Any) -> tuple[tuple[str, Any, Any], ...]:
    """The ``Const`` values and input files a task's slots hold, with where they stand."""
    return tuple(
        (label, leaf, leaf.resolve(owner) if isinstance(leaf, InputFile) else None)
        for label, leaf in slot_leaves(owner, slots)
        if isinstance(leaf, (Const, InputFile))
    )


def input_reads(spec: Any, root: Path | None) -> tuple[InputRead, ...]:
    """What a task's declared inputs hold now (a missing file has digest None)."""
    if not spec.inputs:
        return ()
    table = None if root is None else stat_cache(root)
    reads = []
    for label, value, path in spec.inputs:
        if path is None:
            reads.append(InputRead(label, None, const_digest(value)))
        else:
            reads.append(InputRead(label, value.path, path_digest(path, table)))
    return tuple(reads)


def missing_inputs(spec: Any, reads: tuple[InputRead, ...]) -> list[Path]:
    """The absolute paths of declared input files that do not exist."""
    return [
        path
        for (_, _, path), read in zip(spec.inputs, reads, strict=True)
        if path is not None and read.digest is None
    ]
