"""Turning results into bytes and back, with compression only where it pays.

A result is a cloudpickle stream, stored raw as ``result.pkl`` or as a gzip
stream in ``result.pkl.gz``: the file name says how it was written, so a reader
never guesses and a user can open either with the standard library.  Both
decoders insist on consuming the whole file, so truncation or appended garbage
is reported as corruption instead of being half-read.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
import types
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

import cloudpickle  # type: ignore[import-untyped]

RAW_NAME = "result.pkl"
GZIP_NAME = "result.pkl.gz"

#: Results smaller than this are stored raw: compressing them saves only bytes.
SMALL_RESULT = 64 * 1024
#: A sample must shrink at least this much for the whole result to be compressed.
WORTHWHILE_RATIO = 0.8
#: At most this many bytes are compressed to judge a result.
SAMPLE_BUDGET = 192 * 1024
#: Size of each piece a streamed result's compressibility is judged from.
PIECE_SIZE = 16 * 1024
#: A first piece shrinking less than this is taken as incompressible at once.
#: Random float64 shrinks to ~0.95 at level 1, float32 noise to ~0.93: judged
#: by one piece, not four.  What shrinks this little is not worth gzip anyway.
HOPELESS_RATIO = 0.9
AUTO_LEVEL = 6
_GZIP_WBITS = 31


def dump_result(value: Any) -> bytes:
    data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def _pieces(chunks: list[memoryview]) -> list[memoryview]:
    """Up to ``PIECE_SIZE`` bytes from the start, middle and end of each chunk, largest first."""
    pieces: list[memoryview] = []
    for chunk in sorted(chunks, key=len, reverse=True):
        size = len(chunk)
        if size <= 3 * PIECE_SIZE:
            pieces.append(chunk)
            continue
        middle = (size - PIECE_SIZE) // 2
        pieces.append(chunk[middle : middle + PIECE_SIZE])
        pieces.append(chunk[:PIECE_SIZE])
        pieces.append(chunk[-PIECE_SIZE:])
    return pieces


def sampled_level(chunks: list[memoryview]) -> int:
    """The gzip level for a result whose first bytes are ``chunks``: 6 if they compress, else 0.

    Pieces of each chunk are compressed at level 1, from the largest chunk (a
    big array's bytes) on, until ``SAMPLE_BUDGET`` bytes were tried.
    A first piece that hardly shrinks (random floats, images, compressed
    blobs) settles it at once, so incompressible data costs one small sample.
    """
    raw = packed = 0
    for piece in _pieces(chunks):
        raw += len(piece)
        packed += len(zlib.compress(piece, 1))
        if packed > raw * HOPELESS_RATIO or raw >= SAMPLE_BUDGET:
            break
    return AUTO_LEVEL if packed <= raw * WORTHWHILE_RATIO else 0


class ValueWriter:
    """A file-like object a pickler streams a result into, in one pass over its bytes.

    Every byte is hashed once (the digest of the pickle, as ``value_digest``
    of ``dump_result``'s bytes gives) and written once, raw or through gzip:
    the first ``SMALL_RESULT`` bytes are held back (as references, not
    copies) until a sample of them decides which, and the file is opened
    only then, since its name says how it was written.  A pickler at
    protocol 5 hands a NumPy array's memory over as one buffer, which goes
    to the hash and the file without a copy.
    """

    def __init__(self, open_file: Callable[[str], BinaryIO], compress_level: int | None) -> None:
        self._open = open_file
        self._level = compress_level
        self._hasher = hashlib.sha256()
        self._pending: list[memoryview] = []
        self._pending_size = 0
        self._out: BinaryIO | None = None
        self._packer: Any = None
        self.name: str | None = None
        self.size = 0
        self.stored_size = 0
        #: the error writing the file raised, to tell it from a pickling error
        self.write_error: OSError | None = None

    def write(self, chunk: Any) -> int:
        view = chunk.raw() if isinstance(chunk, pickle.PickleBuffer) else memoryview(chunk)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self._hasher.update(view)
        self.size += len(view)
        if self.name is not None:
            self._emit(view)
        else:
            self._pending.append(view)
            self._pending_size += len(view)
            if self._pending_size >= SMALL_RESULT:
                self._start()
        return len(view)

    def _start(self) -> None:
        level = self._level
        if level is None:
            level = sampled_level(self._pending) if self._pending_size >= SMALL_RESULT else 0
        self.name = GZIP_NAME if level else RAW_NAME
        if level:
            self._packer = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        try:
            self._out = self._open(self.name)
        except OSError as exc:
            self.write_error = exc
            raise
        pending, self._pending = self._pending, []
        if len(pending) > 1 and self._pending_size < SMALL_RESULT:
            pending = [memoryview(b"".join(pending))]  # a small result: one write
        for view in pending:
            self._emit(view)

    def _emit(self, data: Any) -> None:
        if self._packer is not None:
            data = self._packer.compress(data)
            if not data:
                return
        assert self._out is not None
        view = memoryview(data)
        try:
            while view:  # an unbuffered file may take part of it
                view = view[self._out.write(view) :]
        except OSError as exc:
            self.write_error = exc
            raise
        self.stored_size += len(data)

    def fileno(self) -> int:
        assert self._out is not None
        return self._out.fileno()

    def finish(self) -> str:
        """Write what is held back and the end of the gzip stream; returns the digest."""
        if self.name is None:
            self._start()
        if self._packer is not None:
            self._emit_tail(self._packer.flush())
        assert self._out is not None
        try:
            self._out.flush()
        except OSError as exc:
            self.write_error = exc
            raise
        return self._hasher.hexdigest()

    def _emit_tail(self, data: bytes) -> None:
        self._packer = None
        self._emit(data)


class _NamingPickler(cloudpickle.CloudPickler):  # type: ignore[misc]
    """A cloudpickler that notes every class and function it meets (``named``, by id).

    Those of importable modules go into the pickle by name only: the bytes stay
    the same when their code changes, although the value now behaves otherwise
    (a fitted model whose ``predict`` was edited).
    """

    def __init__(self, file: Any, named: dict[int, Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.named = named

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)):
            self.named[id(obj)] = obj
        return super().reducer_override(obj)


def stream_result(
    value: Any, writer: ValueWriter | Any, named: dict[int, Any] | None = None
) -> None:
    """Pickle ``value`` into ``writer`` exactly as ``dump_result`` would, without the copy.

    ``named`` receives the classes and functions the value holds, by id.
    """
    if named is None:
        cloudpickle.CloudPickler(writer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    else:
        _NamingPickler(writer, named).dump(value)


class _Hasher:
    """A pickler's file that only hashes."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()

    def write(self, chunk: Any) -> None:
        view = chunk.raw() if isinstance(chunk, pickle.PickleBuffer) else memoryview(chunk)
        self.hasher.update(view if view.ndim == 1 and view.format == "B" else view.cast("B"))


def result_digest(value: Any) -> str:
    """``value_digest(dump_result(value))`` without holding the pickle in memory."""
    sink = _Hasher()
    stream_result(value, sink)
    return sink.hasher.hexdigest()


def value_digest(data: bytes) -> str:
    """The digest naming a pickled value in records (SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


def unpack(name: str, blob: bytes) -> bytes:
    """The pickle bytes stored in ``blob``; raises ``ValueError`` if the container is damaged."""
    if name != GZIP_NAME:
        return blob
    unpacker = zlib.decompressobj(_GZIP_WBITS)
    try:
        data = unpacker.decompress(blob)
    except zlib.error as exc:
        raise ValueError(f"gzip stream is damaged ({exc})") from None
    if not unpacker.eof:
        raise ValueError("gzip stream is truncated")
    if unpacker.unused_data:
        raise ValueError("unexpected bytes after the gzip stream")
    return data


#: Above this size the digest is computed in a second thread while the value
#: is unpickled: hashlib releases the GIL, so checking costs almost no time.
PARALLEL_DIGEST = 4 * 1024 * 1024


def verified_load(data: bytes, digest: str) -> tuple[Any, bool]:
    """Unpickle ``data`` and tell whether it has ``digest``; raises ``ValueError`` if undecodable.

    The value is only handed out when the digest matches; unpickling first
    (while the digest is computed alongside) keeps large results fast.
    """
    if len(data) < PARALLEL_DIGEST:
        if value_digest(data) != digest:
            return None, False
        return unpickle(data), True
    found: list[str] = []
    hasher = threading.Thread(target=lambda: found.append(value_digest(data)))
    hasher.start()
    try:
        value = unpickle(data)
    finally:
        hasher.join()
    if found[0] != digest:
        return None, False
    return value, True


def unpickle(data: bytes) -> Any:
    """The value pickled in ``data``; raises ``ValueError`` if it cannot be loaded whole."""
    stream = io.BytesIO(data)
    try:
        value = pickle.Unpickler(stream).load()
    except Exception as exc:
        raise ValueError(f"pickle cannot be loaded ({type(exc).__name__}: {exc})") from None
    if stream.tell() != len(data):
        raise ValueError("unexpected bytes after the pickle")
    return value


def load_file(name: str, handle: BinaryIO) -> Any:
    """The value stored in the open file ``handle`` (at its start), read to its end.

    A raw pickle is unpickled straight from the file: a large array's bytes
    go from the file into the array, with no second copy of the whole file
    in memory.  Raises ``ValueError`` if the file is damaged; an error
    reading the file propagates as the ``OSError`` it is.
    """
    if name == GZIP_NAME:
        return decode(name, handle.read())
    try:
        value = pickle.Unpickler(handle).load()
    except OSError:
        raise
    except Exception as exc:
        raise ValueError(f"pickle cannot be loaded ({type(exc).__name__}: {exc})") from None
    if handle.read(1):
        raise ValueError("unexpected bytes after the pickle")
    return value


def decode(name: str, blob: bytes) -> Any:
    """The value stored in ``blob``; raises ``ValueError`` if it is damaged."""
    return unpickle(unpack(name, blob))
