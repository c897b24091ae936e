"""Whole files: replaced atomically, and read in one go.

A reader of the cache must see a whole old file, a whole new file, or none;
never a prefix.  Writing a temporary file in the same directory and renaming
it over the target gives exactly that on POSIX and Windows, and a process
killed half-way leaves only a temporary file that no reader ever opens.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

TMP_MARK = ".tmp-"


def temporary_sibling(path: str | Path) -> str:
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}{TMP_MARK}{os.getpid()}-{os.urandom(4).hex()}")


def write_atomic(path: str | Path, chunks: Iterable[bytes | memoryview]) -> None:
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "xb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes) -> os.stat_result:
    """``write_atomic`` of one small blob through bare file descriptors; returns the
    temporary file's stat, taken once written (its inode is the new file's at ``path``).

    A file object costs more than the write of a record-sized file: this is
    written once per computed task.
    """
    tmp = temporary_sibling(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return st


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, [text.encode()])


def remove_tree(path: Path) -> None:
    """Remove a directory so no reader ever sees it half-deleted.

    The directory is first renamed to a hidden sibling, which is atomic, and
    only then deleted file by file.
    """
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


#: Files at least this large are read by ``FileIO.readall``, which grows one buffer.
ONE_READ_LIMIT = 1 << 20


def read_to_end(fd: int, size_hint: int) -> bytes:
    """The rest of an open file, in one read when it has the size its ``fstat`` gave.

    Otherwise read until the end, as ``FileIO.readall`` does: a file that
    grew meanwhile is read whole.  Large files go to ``readall`` itself, which
    never holds more than the file's bytes and one spare buffer.
    """
    if size_hint >= ONE_READ_LIMIT:
        with io.FileIO(fd, "rb", closefd=False) as raw:
            return raw.readall()
    chunks = [os.read(fd, size_hint + 1)]
    if len(chunks[0]) == size_hint:
        # Exactly the size ``fstat`` gave, one byte short of what was asked: the
        # end, without a second call to see it.  A shorter read (a network or
        # FUSE file may give one mid-file) still reads on.
        return chunks[0]
    while chunks[-1]:
        chunks.append(os.read(fd, max(size_hint, 1 << 16)))
    return chunks[0] if len(chunks) == 2 else b"".join(chunks)
