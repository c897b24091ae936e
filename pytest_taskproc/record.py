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

import functools
import json
import json.encoder
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import RecordError
from .identity import encode_key

_quote = json.encoder.encode_basestring_ascii

FORMAT = "pytest-taskproc/record-1"
_NL = "\n"


def _fast_encoder() -> Any:
    """``json.dumps`` with its default options, minus its cost per call.

    ``json.dumps`` makes a new C encoder for every call, and a record takes
    about ten calls; this one is made once (no circular-reference check:
    records hold none).  None where the C encoder is missing or encodes
    otherwise than ``json.dumps``; records are then encoded by ``json.dumps``.
    """
    from json.encoder import JSONEncoder, encode_basestring_ascii

    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # not in the stubs
    if c_make_encoder is None:
        return None
    try:
        # markers, default, encoder, indent, key and item separators, sort_keys,
        # skipkeys, allow_nan: what json.dumps passes, without the markers
        default = JSONEncoder().default
        encoder = c_make_encoder(
            None, default, encode_basestring_ascii, None, ": ", ", ", False, False, True
        )
    except TypeError:  # another signature
        return None
    sample = {"a": [1, 2.5, None, True, "\u00e9\n"], "b": {"c": 10**20, "d": (1, 1e-05)}}
    try:
        if "".join(encoder(sample, 0)) != json.dumps(sample):
            return None
    except Exception:
        return None
    return encoder


_encoder = _fast_encoder()


def _encode(value: Any) -> str:
    """``json.dumps(value)``, byte for byte."""
    if isinstance(value, str):
        return _quote(value)  # what json.dumps does for a string
    if _encoder is None:
        return json.dumps(value)
    return "".join(_encoder(value, 0))


@functools.lru_cache(maxsize=8192)
def _args(key: str) -> str:
    """Canonical arguments as written in records: spaced like the rest of the record.

    Cached: a key is written again in the record of every task downstream of it.
    """
    return _encode(json.loads(key))


#: code digest -> (its parts, the record's "code" member): the same for every task of a class
_code_texts: dict[str | None, tuple[dict[str, str], str]] = {}
CODE_TEXTS = 1024


def _code_text(code: str | None, parts: dict[str, str]) -> str:
    known = _code_texts.get(code)
    if known is not None and known[0] == parts:
        return known[1]
    text = _encode({"digest": code, "parts": parts})
    if len(_code_texts) >= CODE_TEXTS:
        _code_texts.clear()
    _code_texts[code] = (dict(parts), text)
    return text


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
    #: where its slots put each upstream task (``TaskSpec.layout``); None: not recorded
    layout: str | None = None
    #: the code digest of each of the user's classes and functions the value names
    #: (``module:qualname``, a fitted model's class): None when it names none
    value_code: dict[str, str] | None = None

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
        if self.value_code is not None:
            value["code"] = self.value_code
        if self.written:
            value["written"] = {rel: [*st, sha] for rel, (st, sha) in self.written.items()}
        upstream = ",\n  ".join(u.json_text() for u in self.upstream)
        return (
            f'{{\n "format": "{FORMAT}",\n'
            f' "task": {_encode(self.name)},\n'
            f' "args": {_args(self.key)},\n'
            f' "code": {_code_text(self.code, self.code_parts)},\n'
            f' "upstream": [{f"{_NL}  {upstream}{_NL} " if upstream else ""}],\n'
            f' "inputs": {_encode([i.to_json() for i in self.inputs])},\n'
            + (f' "layout": {_encode(self.layout)},\n' if self.layout is not None else "")
            + f' "value": {_encode(value)},\n'
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
            # Records written before the layout was recorded compare by the set of
            # upstream tasks only, as they were made.
            layout=data.get("layout"),
            value_code=_value_code(value.get("code")),
        )
    except RecordError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"not a valid record ({type(exc).__name__}: {exc})") from None


def _value_code(data: Any) -> dict[str, str] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TypeError("value.code is not an object")
    return {str(name): str(digest) for name, digest in data.items()}


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
    """A new lineage: 128 random bits as 32 hex digits (as ``uuid4().hex``, at a third of
    the cost: one is made per computed task)."""
    return os.urandom(16).hex()


@functools.cache
def _environment() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": sys.platform,
    }


#: The part of ``made`` that is the same for every record of one class in one
#: run, by what it depends on (see ``_tail_key``).
_tails: dict[tuple[Any, ...], dict[str, Any]] = {}
MADE_TAILS = 256


def _tail_key(run: str | None, cls: type | None) -> tuple[Any, ...]:
    """What the environment of a class's records depends on, besides the run.

    The same inputs ``distributions_for`` caches on (the module, its number
    of globals, whether numpy is loaded), and the working directory where
    the class's folder depends on it (a module without an absolute file).
    """
    module = sys.modules.get(cls.__module__) if cls is not None else None
    file = getattr(module, "__file__", None)
    here = None if isinstance(file, str) and os.path.isabs(file) else os.getcwd()
    size = len(vars(module)) if module is not None else 0
    # the module itself, not id(): with a read audit on, every id() call is an audit event
    return (cls, run, module, size, "numpy" in sys.modules, here)


def _made_tail(run: str | None, cls: type | None) -> dict[str, Any]:
    key = _tail_key(run, cls)
    tail = _tails.get(key)
    if tail is None:
        from .environment import distributions_for, git_state, project_directory

        tail = {
            **_environment(),
            "packages": distributions_for(cls),
            "git": git_state(project_directory(cls), run),
            "run": run,
        }
        if len(_tails) >= MADE_TAILS:
            _tails.clear()
        _tails[key] = tail
    return tail


#: (second, its UTC text): records made within the same second share the text
_second: tuple[int, str] = (-1, "")


def _timestamp() -> str:
    """Now in UTC to the millisecond, ``2026-12-07T16:38:01.798Z`` (as ``datetime``'s
    ``isoformat(timespec="milliseconds")``, which also truncates), at a fifth of its cost."""
    global _second
    second, milli = divmod(time.time_ns() // 1_000_000, 1000)
    known, text = _second
    if second != known:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    return f"{text}.{milli:03d}Z"


def made_now(seconds: float, run: str | None, cls: type | None = None) -> dict[str, Any]:
    """The ``made`` part of a new record: when, how long, where, by which run and code.

    ``packages`` names the installed distributions the task class's modules
    import (see ``environment.distributions_for``);
    ``git`` the commit of the repository holding the class's file and whether
    tracked files differed from it (None outside a repository).  Both are
    worked out once per class and run (``_made_tail``): a record is written
    for every computed task.
    """
    made: dict[str, Any] = {
        "at": _timestamp(),
        "seconds": round(seconds, 6),
        "pid": os.getpid(),
    }
    # Shared with the other records of the class and run: records are not changed once made.
    made.update(_made_tail(run, cls))
    return made
