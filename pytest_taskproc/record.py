"""The record of a result: what it was made from, as JSON next to it.

Freshness is decided from records only (see ``freshness.py``): a result is
fresh when its record names the task's arguments and code and, for each
upstream task, the value it read, and every one of those is still what the
cache holds.  The record also says when, how long, where and by which run
the result was made, for people and for provenance tools.

An upstream value is named by two things: the digest of its pickled bytes,
and its *lineage*.  A recomputation that yields byte-identical bytes keeps the
lineage (so downstream stays fresh: early cutoff); a result made after the
task was cleared, or made for the first time, starts a new lineage, so a
cleared task's downstream is recomputed, as clearing promises.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import socket
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import RecordError
from .identity import encode_key

FORMAT = "pytest-taskproc/record-1"
_NL = "\n"
#: json.dumps with default options reuses one C encoder
_encode = json.dumps


@functools.lru_cache(maxsize=8192)
def _args(key: str) -> str:
    """Canonical arguments as written in records: spaced like the rest of the record.

    Cached: a key is written again in the record of every task downstream of it.
    """
    return _encode(json.loads(key))


@dataclass(frozen=True)
class UpstreamRead:
    """One upstream value a result was computed from."""

    name: str
    key: str
    digest: str
    lineage: str

    def json_text(self) -> str:
        return (
            f'{{"task": {_encode(self.name)}, "args": {_args(self.key)}, '
            f'"digest": {_encode(self.digest)}, "lineage": {_encode(self.lineage)}}}'
        )


@dataclass(frozen=True)
class InputRead:
    """One declared input a result was computed from: a ``Const`` value or an ``InputFile``.

    ``slot`` names where it stood (``data``, ``files[2]``, ``grid['a']``);
    ``path`` is the file's path as written in ``build_task`` (None for a
    ``Const``), so a project moved elsewhere names the same inputs.
    """

    slot: str
    path: str | None
    digest: str | None

    @property
    def ident(self) -> tuple[str, str | None]:
        return (self.slot, self.path)

    def to_json(self) -> dict[str, Any]:
        if self.path is None:
            return {"slot": self.slot, "const": self.digest}
        return {"slot": self.slot, "file": self.path, "digest": self.digest}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputRead:
        if "file" in data:
            return cls(str(data["slot"]), str(data["file"]), data["digest"])
        return cls(str(data["slot"]), None, data["const"])


@dataclass(frozen=True)
class Record:
    """Everything a result was made from, and where it came from."""

    name: str
    key: str
    code: str | None
    code_parts: dict[str, str]
    upstream: tuple[UpstreamRead, ...]
    digest: str
    size: int
    file: str
    stored_size: int
    lineage: str
    made: dict[str, Any] = field(default_factory=dict)
    #: the ``Const`` values and input files it was computed from
    inputs: tuple[InputRead, ...] = ()
    #: digest of what the task wrote into its task_directory (None: nothing)
    files: str | None = None
    #: (mtime_ns, inode, ctime_ns) of the value file as its writer left it
    stat: tuple[int, int, int] | None = None
    #: each written file by relative path: its (size, mtime_ns, inode, ctime_ns) as the
    #: writer left it and its SHA-256, so planning re-reads only files changed since
    written: dict[str, tuple[tuple[int, int, int, int], str]] = field(default_factory=dict)

    def to_json(self) -> str:
        # One member per line for people, each encoded by json's C encoder
        # (``indent`` forces the pure-Python one, several times slower).
        value = {
            "digest": self.digest,
            "size": self.size,
            "file": self.file,
            "stored_size": self.stored_size,
            "lineage": self.lineage,
            "files": self.files,
            "stat": None if self.stat is None else list(self.stat),
        }
        if self.written:
            value["written"] = {rel: [*st, sha] for rel, (st, sha) in self.written.items()}
        upstream = ",\n  ".join(u.json_text() for u in self.upstream)
        return (
            f'{{\n "format": "{FORMAT}",\n'
            f' "task": {_encode(self.name)},\n'
            f' "args": {_args(self.key)},\n'
            f' "code": {_encode({"digest": self.code, "parts": self.code_parts})},\n'
            f' "upstream": [{f"{_NL}  {upstream}{_NL} " if upstream else ""}],\n'
            f' "inputs": {_encode([i.to_json() for i in self.inputs])},\n'
            f' "value": {_encode(value)},\n'
            f' "made": {_encode(self.made)}\n}}\n'
        )

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON data (what ``task_record`` returns)."""
        document: dict[str, Any] = json.loads(self.to_json())
        return document


def parse_record(text: str | bytes) -> Record:
    """A record from its JSON text; ``RecordError`` when it is not one."""
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise RecordError(f"unknown record format {data.get('format')!r}")
        code = data["code"]
        value = data["value"]
        upstream = tuple(
            UpstreamRead(u["task"], encode_key(u["args"]), u["digest"], u["lineage"])
            for u in data["upstream"]
        )
        return Record(
            name=data["task"],
            key=encode_key(data["args"]),
            code=code["digest"],
            code_parts=dict(code["parts"]),
            upstream=upstream,
            digest=value["digest"],
            size=int(value["size"]),
            file=value["file"],
            stored_size=int(value["stored_size"]),
            lineage=value["lineage"],
            made=dict(data.get("made") or {}),
            # Records written before inputs and files were recorded read as
            # naming none: a task with inputs is then stale once, as it should.
            inputs=tuple(InputRead.from_json(i) for i in data.get("inputs") or ()),
            files=value.get("files"),
            stat=_stat(value.get("stat")),
            written=_written(value.get("written")),
        )
    except RecordError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"not a valid record ({type(exc).__name__}: {exc})") from None


def _stat(data: Any) -> tuple[int, int, int] | None:
    if data is None:
        return None
    mtime, inode, ctime = data
    return (int(mtime), int(inode), int(ctime))


def _written(data: Any) -> dict[str, tuple[tuple[int, int, int, int], str]]:
    if not data:
        return {}
    return {
        str(rel): ((int(size), int(mtime), int(inode), int(ctime)), str(sha))
        for rel, (size, mtime, inode, ctime, sha) in data.items()
    }


def new_lineage() -> str:
    return uuid.uuid4().hex


@functools.cache
def _environment() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": sys.platform,
    }


def made_now(seconds: float, run: str | None, cls: type | None = None) -> dict[str, Any]:
    """The ``made`` part of a new record: when, how long, where, by which run and code.

    ``packages`` names the installed distributions the task class's modules
    import (see ``environment.distributions_for``);
    ``git`` the commit of the repository holding the class's file and whether
    tracked files differed from it (None outside a repository).
    """
    from .environment import distributions_for, git_state, project_directory

    now = datetime.datetime.now(datetime.timezone.utc)
    made: dict[str, Any] = {
        "at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "seconds": round(seconds, 6),
        "pid": os.getpid(),
    }
    made.update(_environment())
    made["packages"] = distributions_for(cls)
    made["git"] = git_state(project_directory(cls), run)
    made["run"] = run
    return made
