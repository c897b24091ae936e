"""What a cache holds, read from its folders and records alone: no value is ever unpickled.

Used by the cache tool (``python -m pytest_taskproc.cache``), by
``--taskproc-prune`` and by ``task_graph``.  One ``scandir`` and one record
read per result keep listing 100,000 results within seconds; a result is
called *whole* when its record names the arguments of its folder and its
value file has the size the record says (the digest is checked only when the
value is loaded, as everywhere else).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .identity import encode_key
from .idtable import access_error, listed
from .record import FORMAT

__all__ = ["Entry", "class_names", "folder_size", "scan_class"]

RESULT_FILES = ("result.pkl", "result.pkl.gz")
WHOLE = "whole"


@dataclass(frozen=True)
class Entry:
    """One result folder of a class: what it is for, how big, when and how it was made."""

    name: str
    task_id: int
    folder: str
    key: str | None  # the canonical arguments (args.json), None when unreadable
    size: int  # bytes of everything in the folder, data/ included
    state: str  # WHOLE, or what is wrong ("no record", "damaged record", ...)
    at: str | None = None  # when the result was made (UTC, ISO 8601)
    seconds: float | None = None  # how long run_task took
    parsed: Any = None  # the arguments as read from the record, when it has them

    @property
    def args(self) -> Any:
        if self.parsed is not None:
            return self.parsed
        return None if self.key is None else json.loads(self.key)

    def as_json(self) -> dict[str, Any]:
        return {
            "class": self.name,
            "id": self.task_id,
            "args": self.args,
            "size": self.size,
            "computed_at": self.at,
            "seconds": self.seconds,
            "record": self.state,
            "folder": self.folder,
        }


def class_names(root: Path) -> list[str]:
    """The task classes with a folder under the cache root, sorted."""
    top = root / "taskproc"
    return sorted(n for n in listed(top) if not n.startswith(".") and os.path.isdir(top / n))


def scan_class(root: Path, name: str) -> list[Entry]:
    """Every result folder of one class, in id order."""
    results = root / "taskproc" / name / "results"
    ids = sorted(int(n) for n in listed(results) if n.isdigit())
    prefix = f"{results}{os.sep}"
    return [_entry(name, task_id, f"{prefix}{task_id}") for task_id in ids]


def _entry(name: str, task_id: int, folder: str) -> Entry:
    # The hot loop of listing a large cache: os-level calls, the two small
    # files read as bytes (their sizes are the lengths read), one stat for
    # each other file.
    texts: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    size = 0
    try:
        with os.scandir(folder) as found:
            for item in found:
                if item.name in _SMALL_FILES:
                    texts[item.name] = _read_bytes(item.path)
                elif item.is_dir(follow_symlinks=False):
                    size += folder_size(item.path)
                else:
                    sizes[item.name] = item.stat(follow_symlinks=False).st_size
    except NotADirectoryError:
        return Entry(name, task_id, folder, None, os.path.getsize(folder), "not a folder")
    except OSError as exc:
        raise access_error("read", folder, exc) from None
    size += sum(sizes.values()) + sum(len(t) for t in texts.values())
    raw_key = texts.get("args.json")
    key = None
    if raw_key is not None:
        try:
            key = raw_key.decode()
        except UnicodeDecodeError:
            key = None
    if "record.json" not in texts:
        return Entry(name, task_id, folder, key, size, "no record")
    state, at, seconds, args = _judge(name, texts["record.json"], key, sizes)
    if key is None and args is not None:
        key = encode_key(args)
    parsed = args if state == WHOLE else None
    return Entry(name, task_id, folder, key, size, state, at, seconds, parsed)


_SMALL_FILES = frozenset(("args.json", "record.json"))


def _judge(
    name: str, text: bytes, key: str | None, sizes: dict[str, int]
) -> tuple[str, str | None, float | None, Any]:
    """(state, made at, seconds, the record's arguments), without reading the value."""
    try:
        record = _decode(text.decode())
        made = record.get("made") or {}
        at, seconds = made.get("at"), made.get("seconds")
        value = record["value"]
        args = record["args"]
        if record.get("format") != FORMAT:
            return "damaged record (unknown format)", at, seconds, None
        same = key is None or encode_key(args) == key  # args.json is canonical
    except (ValueError, KeyError, TypeError, AttributeError):
        return "damaged record", None, None, None
    if record.get("task") != name or not same:
        return "record of another task", at, seconds, args
    stored = sizes.get(str(value.get("file")))
    if stored is None:
        return "value missing", at, seconds, args
    if stored != value.get("stored_size"):
        return "value damaged (size)", at, seconds, args
    return WHOLE, at, seconds, args


_decode = json.JSONDecoder().decode


def _read_bytes(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise access_error("read", path, exc) from None
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, _CHUNK)
            chunks.append(chunk)
            if len(chunk) < _CHUNK:  # a short read is the end of a file nobody writes
                return b"".join(chunks)
    finally:
        os.close(fd)


_CHUNK = 1 << 16


def folder_size(path: str | Path) -> int:
    """Bytes of the files under ``path`` (symbolic links not followed)."""
    total = 0
    try:
        with os.scandir(path) as found:
            for item in found:
                if item.is_dir(follow_symlinks=False):
                    total += folder_size(item.path)
                else:
                    total += item.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise access_error("read", path, exc) from None
    return total
