"""Stable texts for the values a task's code holds: closure cells, notebook globals, state.

A value is described by what it is: plain values by their ``repr``, containers
item by item (sets in sorted order, mappings in their order), arrays by their
bytes, wrappers by what they wrap (``functools.partial``, ``__wrapped__``,
``np.vectorize``'s ``pyfunc``), instances of the user's own classes by their
class and their state.  Functions and classes of the user's code are handed to
the caller's ``follow`` (which digests their code as parts of their own) and
appear here only by name; those of installed packages appear by name only.
What has no such description is pickled (``cloudpickle``) and the bytes are
hashed.  The texts never hold memory addresses or hash-seeded orders, so the
same value gives the same text in every process.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import hashlib
import pathlib
import re
import types
import uuid
from collections.abc import Callable
from typing import Any

#: plain kinds whose ``repr`` is exact and stable
_PLAIN = (int, float, complex, str, bytes, bool, type(None))
#: kinds of the standard library whose ``repr`` holds their whole content
_BY_REPR = (
    decimal.Decimal,
    fractions.Fraction,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.timezone,
    uuid.UUID,
    range,
    slice,
)
_MAX_DEPTH = 40


_IMMUTABLE = (*_PLAIN, *_BY_REPR, pathlib.PurePath, re.Pattern, enum.Enum)


def is_immutable(value: Any, depth: int = 0) -> bool:
    """Whether a value cannot change after it was made (so its content is worth digesting)."""
    if isinstance(value, _IMMUTABLE):
        return True
    if isinstance(value, (tuple, frozenset)) and depth < 5:
        return all(is_immutable(v, depth + 1) for v in value)
    return False


class Undigestable(Exception):
    """A value that has neither a content description nor pickled bytes."""


def sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', '?')}"


class ValueText:
    """Describes values; ``follow(obj)`` returns True when ``obj`` is user code it digests."""

    def __init__(self, follow: Callable[[Any], bool]) -> None:
        self.follow = follow
        self._active: set[int] = set()

    def text(self, value: Any, depth: int = 0) -> str:
        """The stable text of ``value``; raises Undigestable when there is none."""
        if isinstance(value, _PLAIN):
            return f"{type(value).__name__}:{value!r}"
        if depth > _MAX_DEPTH or id(value) in self._active:
            return f"<cycle {type(value).__qualname__}>"
        self._active.add(id(value))
        try:
            return self._text(value, depth + 1)
        finally:
            self._active.discard(id(value))

    def _text(self, value: Any, depth: int) -> str:
        if isinstance(value, (types.FunctionType, type, types.BuiltinFunctionType)):
            kind = "code" if self.follow(value) else "ref"
            return f"{kind}:{qualified(value)}"
        if isinstance(value, types.ModuleType):
            return f"module:{value.__name__}"
        if isinstance(value, types.MethodType):
            return f"method:{self.text(value.__func__, depth)}@{self.text(value.__self__, depth)}"
        if isinstance(value, (staticmethod, classmethod, property)):
            inner = value.fget if isinstance(value, property) else value.__func__
            return f"{type(value).__name__}:{self.text(inner, depth)}"
        if isinstance(value, (list, tuple)):
            items = ",".join(self.text(v, depth) for v in value)
            return f"{type(value).__qualname__}[{items}]"
        if isinstance(value, (set, frozenset)):
            members = ",".join(sorted(self.text(v, depth) for v in value))
            return f"{type(value).__qualname__}{{{members}}}"
        if isinstance(value, dict):
            pairs = ",".join(
                f"{self.text(k, depth)}:{self.text(v, depth)}" for k, v in value.items()
            )
            return f"{type(value).__qualname__}{{{pairs}}}"
        if isinstance(value, enum.Enum):
            return f"enum:{self.text(type(value), depth)}.{value.name}"
        if isinstance(value, functools.partial):
            keywords = self.text(dict(sorted(value.keywords.items())), depth)
            func = self.text(value.func, depth)
            return f"partial:{func}:{self.text(value.args, depth)}:{keywords}"
        if isinstance(value, pathlib.PurePath):
            return f"{type(value).__name__}:{value.as_posix()!r}"
        if isinstance(value, re.Pattern):
            return f"regex:{value.pattern!r}:{value.flags}"
        if isinstance(value, _BY_REPR):
            return f"{type(value).__qualname__}:{value!r}"
        if all(hasattr(value, a) for a in ("dtype", "shape", "tobytes")):
            return self._array(value)
        wrapped = getattr(value, "__wrapped__", None) or getattr(value, "pyfunc", None)
        if wrapped is not None and callable(wrapped) and wrapped is not value:
            return f"wraps:{qualified(type(value))}:{self.text(wrapped, depth)}"
        if self.follow(type(value)):
            return f"object:{qualified(type(value))}:{self._state(value, depth)}"
        return self._pickled(value)

    def _array(self, value: Any) -> str:
        try:
            data = value.tobytes()
        except Exception:
            return self._pickled(value)
        return f"array:{value.dtype}:{value.shape}:{sha(data)}"

    def _state(self, value: Any, depth: int) -> str:
        """An instance of a user class: its attributes, slots and any state it pickles."""
        state: dict[str, Any] = {}
        if dataclasses.is_dataclass(value):
            state.update((f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value))
        state.update(getattr(value, "__dict__", {}))
        for klass in type(value).__mro__:
            for slot in getattr(klass, "__slots__", ()):
                if isinstance(slot, str) and hasattr(value, slot):
                    state.setdefault(slot, getattr(value, slot))
        if not state and hasattr(value, "__reduce_ex__"):
            try:
                reduced = value.__reduce_ex__(4)
            except Exception:
                return self._pickled(value)
            if isinstance(reduced, tuple):
                return self.text(reduced[1:3], depth)
        return self.text(state, depth)

    def _pickled(self, value: Any) -> str:
        import cloudpickle  # type: ignore[import-untyped]

        try:
            data = cloudpickle.dumps(value, protocol=5)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            raise Undigestable(f"a {type(value).__qualname__} ({why})") from None
        return f"pickled:{qualified(type(value))}:{sha(data)}"
