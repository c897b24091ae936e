"""Where a recomputed value first differs from the cached one, in a few words.

Two pickles of equal values may differ byte for byte: a set of strings is
pickled in its iteration order, which depends on the interpreter's hash seed;
a dict built in another order, or a NumPy array in Fortran order, too.  So a
recomputed value whose bytes differ is compared by value: exactly (floats
and array elements by ``==``, a NaN equal only to a NaN in the same place),
types, shapes and dtypes included, containers item by item.  The answer
names the first difference: ``value['fit'][2]: cached 0.25, recomputed 0.5``.
"""

from __future__ import annotations

import math
import sys
import types
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from .serialize import dump_result

__all__ = ["first_difference"]

#: Longest representation of a value shown in a difference.
SHOWN = 60


def first_difference(cached: Any, recomputed: Any) -> str | None:
    """The first place where two values differ and how; None when they are equal."""
    try:
        return _difference(cached, recomputed, "value", set())
    except RecursionError:
        return "value: too deeply nested to compare by value"


def _difference(a: Any, b: Any, where: str, seen: set[tuple[int, int]]) -> str | None:
    kind = type(a)
    if kind is not type(b):
        return f"{where}: type differs: cached {_type(a)}, recomputed {_type(b)}"
    # Values that contain themselves are compared once.
    pair = (id(a), id(b))
    if pair in seen:
        return None
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(a, numpy.ndarray):
        return _array_difference(numpy, a, b, where, seen)
    if isinstance(a, (float, complex)) or (numpy is not None and isinstance(a, numpy.generic)):
        return None if _same_number(a, b) else _leaf(where, a, b)
    if isinstance(a, (str, bytes, bytearray)):
        return None if a == b else _text_difference(a, b, where)
    if isinstance(a, (int, bool, type(None), range, types.FunctionType, type)):
        return None if a == b or _same_pickle(a, b) else _leaf(where, a, b)
    if isinstance(a, PurePath):
        # By value: its slots are caches that depend on how it was built
        # (Python 3.13 keeps the raw parts a path was joined from).
        return None if a == b else _leaf(where, a, b)
    seen.add(pair)
    if isinstance(a, dict):
        return _dict_difference(a, b, where, seen)
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length differs: cached {len(a)}, recomputed {len(b)}"
        return _first(
            _difference(x, y, f"{where}[{i}]", seen)
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
    if isinstance(a, (set, frozenset)):
        return None if a == b else _set_difference(a, b, where)
    return _object_difference(a, b, where, seen)


def _first(found: Iterable[str | None]) -> str | None:
    return next((f for f in found if f is not None), None)


def _dict_difference(a: dict[Any, Any], b: dict[Any, Any], where: str, seen: Any) -> str | None:
    # Equal dicts built in another order pickle differently; the order of a plain
    # dict is not compared, that of an ordered mapping (OrderedDict) is part of it.
    if isinstance(a, OrderedDict) and a.keys() == b.keys() and list(a) != list(b):
        at = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        return (
            f"{where}: key order differs from position {at} on: cached {_show(list(a)[at])}, "
            f"recomputed {_show(list(b)[at])}"
        )
    only_cached = [k for k in a if k not in b]
    if only_cached:
        return f"{where}: key {_show(only_cached[0])} only in the cached value" + _more(only_cached)
    only_new = [k for k in b if k not in a]
    if only_new:
        return f"{where}: key {_show(only_new[0])} only in the recomputed value" + _more(only_new)
    return _first(_difference(a[k], b[k], f"{where}[{_show(k)}]", seen) for k in a)


def _set_difference(a: Any, b: Any, where: str) -> str:
    only_cached, only_new = a - b, b - a
    parts = []
    if only_cached:
        example = _show(_smallest(only_cached))
        parts.append(f"{example} only in the cached value{_more(only_cached)}")
    if only_new:
        example = _show(_smallest(only_new))
        parts.append(f"{example} only in the recomputed value{_more(only_new)}")
    return f"{where}: set differs: " + "; ".join(parts)


def _smallest(items: Any) -> Any:
    """A reproducible example of a set's elements (sets iterate in hash order)."""
    try:
        return min(items)
    except TypeError:
        return min(items, key=repr)


def _more(items: Any) -> str:
    return f" ({len(items)} such)" if len(items) > 1 else ""


def _object_difference(a: Any, b: Any, where: str, seen: set[tuple[int, int]]) -> str | None:
    """Objects of one class: by their attributes, else their own ``==``, else their pickles.

    Attributes come first: a dataclass holding a NaN or an array has an
    ``==`` that says "different" or raises, while its fields compare fine.
    """
    equals = getattr(a, "equals", None)  # pandas objects: exact, NaN equal to NaN
    if callable(equals):
        try:
            return None if bool(equals(b)) else _leaf(where, a, b)
        except Exception:
            pass
    if _has_state(a):
        return _state_difference(a, b, where, seen)
    if type(a).__eq__ is not object.__eq__:  # type: ignore[comparison-overlap]
        try:
            return None if bool(a == b) else _leaf(where, a, b)
        except Exception:
            pass  # an array-like whose == is elementwise
    return None if _same_pickle(a, b) else _leaf(where, a, b)


def _has_state(value: Any) -> bool:
    return bool(getattr(value, "__dict__", None)) or bool(_slot_names(type(value)))


def _slot_names(kind: type) -> list[str]:
    names: list[str] = []
    for klass in kind.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [s for s in slots if s != "__dict__"]
    return names


def _state_difference(a: Any, b: Any, where: str, seen: set[tuple[int, int]]) -> str | None:
    """The first difference in the attributes of two objects of one class."""
    state_a: dict[str, Any] = dict(getattr(a, "__dict__", {}))
    state_b: dict[str, Any] = dict(getattr(b, "__dict__", {}))
    for name in _slot_names(type(a)):
        missing = object()
        state_a[name] = getattr(a, name, missing)
        state_b[name] = getattr(b, name, missing)
    for name in state_a:
        if name not in state_b:
            return f"{where}: attribute {name} only in the cached value"
    for name in state_b:
        if name not in state_a:
            return f"{where}: attribute {name} only in the recomputed value"
    return _first(_difference(state_a[n], state_b[n], f"{where}.{n}", seen) for n in state_a)


def _array_difference(numpy: Any, a: Any, b: Any, where: str, seen: Any) -> str | None:
    if a.shape != b.shape:
        return f"{where}: shape differs: cached {a.shape}, recomputed {b.shape}"
    if a.dtype != b.dtype:
        return f"{where}: dtype differs: cached {a.dtype}, recomputed {b.dtype}"
    if a.dtype.hasobject:
        return _first(
            _difference(a[i], b[i], f"{where}[{', '.join(map(str, i))}]", seen)
            for i in numpy.ndindex(a.shape)
        )
    same = numpy.asarray(a == b)
    if a.dtype.kind == "f":
        same &= numpy.signbit(a) == numpy.signbit(b)  # -0.0 is not 0.0
        same |= numpy.isnan(a) & numpy.isnan(b)
    elif a.dtype.kind == "c":
        same &= (numpy.signbit(a.real) == numpy.signbit(b.real)) & (
            numpy.signbit(a.imag) == numpy.signbit(b.imag)
        )
        same |= numpy.isnan(a) & numpy.isnan(b)
    elif a.dtype.kind in "mM":
        same |= numpy.isnat(a) & numpy.isnat(b)
    if same.shape != a.shape:  # a dtype whose == is not elementwise
        return None if bool(same.all()) else f"{where}: arrays differ"
    differing = ~same
    count = int(differing.sum())
    if count == 0:
        return None
    index = numpy.unravel_index(int(differing.argmax()), a.shape)
    element = tuple(int(i) for i in index)
    shown = f"{where}[{', '.join(map(str, element))}]" if element else where
    return (
        f"{shown}: cached {_show(a[element])}, recomputed {_show(b[element])} "
        f"({count} of {a.size} elements differ)"
    )


def _same_number(a: Any, b: Any) -> bool:
    """Bit for bit, as far as a reader can tell: a NaN matches a NaN, -0.0 is not 0.0."""
    try:
        if isinstance(a, complex) or getattr(getattr(a, "dtype", None), "kind", "") == "c":
            return _same_number(a.real, b.real) and _same_number(a.imag, b.imag)
        if a == b:
            return bool(a) or math.copysign(1.0, a) == math.copysign(1.0, b)
        return math.isnan(a) and math.isnan(b)
    except (TypeError, ValueError):
        return bool(a == b)


def _same_pickle(a: Any, b: Any) -> bool:
    try:
        return dump_result(a) == dump_result(b)
    except Exception:
        return False


def _text_difference(a: str | bytes | bytearray, b: Any, where: str) -> str:
    if len(a) <= SHOWN and len(b) <= SHOWN:
        return _leaf(where, a, b)
    common = min(len(a), len(b))
    at = next((i for i in range(common) if a[i] != b[i]), common)
    return (
        f"{where}: differs from position {at} on (cached length {len(a)}, recomputed "
        f"{len(b)}): cached {_show(a[at : at + 20])}, recomputed {_show(b[at : at + 20])}"
    )


def _leaf(where: str, a: Any, b: Any) -> str:
    return f"{where}: cached {_show(a)}, recomputed {_show(b)}"


def _type(value: Any) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _show(value: Any) -> str:
    item = getattr(value, "item", None)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic) and callable(item):
        value = item()  # 0.5, not np.float64(0.5)
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."
