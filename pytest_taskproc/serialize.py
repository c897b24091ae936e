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
import zlib
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

RAW_NAME = "result.pkl"
GZIP_NAME = "result.pkl.gz"

#: Results smaller than this are stored raw: compressing them saves only bytes.
SMALL_RESULT = 64 * 1024
#: A sample must shrink at least this much for the whole result to be compressed.
WORTHWHILE_RATIO = 0.8
SAMPLE_SIZE = 64 * 1024
AUTO_LEVEL = 6
_GZIP_WBITS = 31


def dump_result(value: Any) -> bytes:
    data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def choose_encoding(data: bytes, compress_level: int | None) -> int:
    """The gzip level to store ``data`` at; 0 means raw.

    ``None`` asks for the automatic choice: compress at level 6 only when
    samples from the start, middle and end shrink by a fifth at level 1.
    Random floats, images and already-compressed blobs do not, and then
    skipping compression makes writing several times faster.
    """
    if compress_level is not None:
        return compress_level
    if len(data) < SMALL_RESULT:
        return 0
    view = memoryview(data)
    middle = len(data) // 2
    samples = [view[:SAMPLE_SIZE], view[middle : middle + SAMPLE_SIZE], view[-SAMPLE_SIZE:]]
    raw = sum(len(s) for s in samples)
    packed = sum(len(zlib.compress(s, 1)) for s in samples)
    return AUTO_LEVEL if packed <= raw * WORTHWHILE_RATIO else 0


def encode(data: bytes, level: int) -> tuple[str, bytes]:
    """The file name and the bytes to store for a pickled result."""
    if level == 0:
        return RAW_NAME, data
    packer = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    return GZIP_NAME, packer.compress(data) + packer.flush()


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


def decode(name: str, blob: bytes) -> Any:
    """The value stored in ``blob``; raises ``ValueError`` if it is damaged."""
    return unpickle(unpack(name, blob))
