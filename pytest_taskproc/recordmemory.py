"""What a process knows of records without reading their files again.

Three memories, each bounded and each checked against the file before use:
records parsed lately (by their exact bytes), records this process committed
(by path, with the file's stamp right after the rename), and :class:`Handed`,
the part of a record a job hands to its downstream jobs in other processes.
A stamp is (device, inode, size, mtime_ns, ctime_ns): any write, replacement
or removal of the file changes it, and no user can set a ctime, so a record
is taken from memory only while the file is provably that very record.
"""

from __future__ import annotations

import os
import threading
from typing import NamedTuple

from .record import Record, parse_record

__all__ = [
    "PARSED_RECORD_SIZE",
    "Handed",
    "committed_entry",
    "committed_record",
    "file_stamp",
    "parsed_record",
    "remember_committed",
]

#: Records parsed lately, by their exact bytes: a computed task's record is read
#: again by each of its downstream tasks.  Parsing is a function of the bytes
#: alone, so the same bytes always give an equal record.
_records: dict[bytes, Record] = {}
_records_lock = threading.Lock()
PARSED_RECORDS = 4096
PARSED_RECORD_SIZE = 16 * 1024


def parsed_record(text: bytes) -> Record:
    """The record of these bytes, parsed once while they are read again and again."""
    record = _records.get(text)
    if record is None:
        record = parse_record(text)
        if len(text) > PARSED_RECORD_SIZE:
            return record  # a large fan-in's record: kept out, to bound the memory held
        with _records_lock:
            if len(_records) >= PARSED_RECORDS:
                del _records[next(iter(_records))]
            _records[text] = record
    return record


#: Records this process committed, by path: the record file's stamp right after
#: the rename put it there, its text and the record.  A downstream task computed
#: in the same process reads its upstream's record from here instead of the
#: file, while the file's stamp is unchanged: any write, replacement or removal
#: of the file changes it (a new inode, or new mtime and ctime, which no user
#: can set).  The value's bytes are checked against the record's digest as
#: before, so even a stamp that lied could not serve a wrong value.
_committed: dict[str, tuple[tuple[int, int, int, int, int], bytes, Record]] = {}
_committed_lock = threading.Lock()


def file_stamp(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """(device, inode, size, mtime_ns, ctime_ns): what a rewritten or replaced file changes."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remember_committed(path: str, written: os.stat_result, text: bytes, record: Record) -> None:
    """Keep the record this process just committed at ``path`` (renamed there as ``written``)."""
    if len(text) > PARSED_RECORD_SIZE:
        return  # a large fan-in's record: kept out, to bound the memory held
    try:
        st = os.stat(path)
    except OSError:
        return
    if (st.st_dev, st.st_ino) != (written.st_dev, written.st_ino):
        return  # replaced by another writer already: not ours to vouch for
    with _committed_lock:
        if len(_committed) >= PARSED_RECORDS:
            del _committed[next(iter(_committed))]
        _committed[path] = (file_stamp(st), text, record)


def committed_record(path: str) -> tuple[bytes, Record] | None:
    """The text and record this process committed at ``path``, if the file is still that one."""
    known = _committed.get(path)
    if known is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or file_stamp(st) != known[0]:
        with _committed_lock:
            if _committed.get(path) is known:
                del _committed[path]
        return None
    return known[1], known[2]


def committed_entry(path: str) -> tuple[tuple[int, int, int, int, int], bytes, Record] | None:
    """What is kept of the record committed at ``path``: (stamp, text, record), unchecked."""
    return _committed.get(path)


class Handed(NamedTuple):
    """An upstream's record as its writer left it, handed to the downstream task in its job.

    The writer took the record file's stamp right after the rename; a reader in
    any process that finds the same stamp at the path knows the file is that
    very record, unchanged, so it need not read and parse it again.  Only what
    reading the value needs is carried: the digest and lineage are the
    planned read's (the scheduler hands both on from the same outcome).
    """

    stamp: tuple[int, int, int, int, int]
    file: str
    stored_size: int
    #: the value file's writer stat, so a large value is trusted by it as with the record
    stat: tuple[int, int, int] | None = None

    def record(self, name: str, key: str, digest: str, lineage: str) -> Record:
        """The part of the record reading the value needs (the rest stays on disk)."""
        return Record(
            name,
            key,
            None,
            {},
            (),
            digest,
            -1,
            self.file,
            self.stored_size,
            lineage,
            stat=self.stat,
        )
