"""Code digests: the user code a task's result depends on, normalised and hashed.

A task's code is its class's source plus everything of the user's own code
that the class refers to: module-level functions, classes and constants,
followed transitively, and the values its methods close over.  Sources are
compared after parsing (``ast``), so comments, docstrings and formatting never
count as changes.  Installed packages and the standard library are left out:
their versions are recorded with each result instead, and hashing them would
make every upgrade recompute everything.  Other task classes are left out too:
what a task reads from them is covered by their own records (the value
digests), which is what lets an edit that does not change a value stop there.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import site
import sys
import sysconfig
import textwrap
import threading
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .spec import is_task_class


@dataclass(frozen=True)
class CodeDigest:
    """The digest of a task class's code and of each part it is made of."""

    digest: str | None
    #: "module.qualname" of each part (the class, helpers, constants) -> its digest
    parts: dict[str, str]

    def changed_parts(self, recorded: dict[str, str]) -> list[str]:
        """The parts that differ from a recorded code digest: edited, added or gone."""
        names = sorted(set(self.parts) | set(recorded))
        return [n for n in names if self.parts.get(n) != recorded.get(n)]


def normalize_source(text: str) -> str:
    """Code with comments, formatting and docstrings removed."""
    return ast.unparse(_parse_without_docstrings(text))


def _parse_without_docstrings(text: str) -> ast.Module:
    tree = ast.parse(textwrap.dedent(text))
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


_digests: weakref.WeakKeyDictionary[type, CodeDigest] = weakref.WeakKeyDictionary()
_digests_lock = threading.Lock()


def code_digest(cls: type) -> CodeDigest:
    """The code digest of a task class, computed once per class object."""
    found = _digests.get(cls)
    if found is None:
        found = _Collector(cls).digest()
        with _digests_lock:
            _digests[cls] = found
    return found


class _Collector:
    """Walks from a task class through the user code it refers to."""

    def __init__(self, root: type) -> None:
        self.root = root
        self.parts: dict[str, str] = {}
        self.seen: set[int] = set()

    def digest(self) -> CodeDigest:
        tree = _source_tree(self.root)
        if tree is None:
            # Typed at a prompt or built by exec: no source to compare, so
            # such a class is never considered changed (as in taskproc).
            return CodeDigest(None, {})
        self.seen.add(id(self.root))
        self._add_code(_qualified(self.root), tree, _globals_of(self.root))
        self._closures(self.root)
        for base in self.root.__mro__[1:]:
            # Inherited methods are this task's code too, even from another task class.
            if _is_user_object(base) and not _is_library_class(base) and id(base) not in self.seen:
                self.seen.add(id(base))
                base_tree = _source_tree(base)
                if base_tree is not None:
                    self._add_code(_qualified(base), base_tree, _globals_of(base))
                self._closures(base)
        lines = "".join(f"{name}={value}\n" for name, value in sorted(self.parts.items()))
        return CodeDigest(_sha(lines), dict(sorted(self.parts.items())))

    def _add_code(self, name: str, tree: ast.AST, scope: dict[str, Any]) -> None:
        self.parts[name] = _sha(ast.unparse(tree))
        for path in _references(tree):
            self._resolve(path, scope)

    def _resolve(self, path: list[str], scope: dict[str, Any]) -> None:
        if path[0] not in scope:
            return  # a builtin, a local or an attribute of self
        value = scope[path[0]]
        name = f"{scope.get('__name__', '?')}.{path[0]}"
        for attr in path[1:]:
            if not isinstance(value, types.ModuleType) or not _is_user_module(value.__name__):
                break
            if attr not in vars(value):
                return
            name, value = f"{value.__name__}.{attr}", vars(value)[attr]
        self._visit(name, value)

    def _visit(self, name: str, value: Any) -> None:
        if id(value) in self.seen or isinstance(value, types.ModuleType):
            return
        self.seen.add(id(value))
        if is_task_class(value) or _is_library_class(value):
            return  # covered by that task's own record
        if isinstance(value, (types.FunctionType, type)):
            if not _is_user_object(value):
                return
            tree = _source_tree(value)
            qualified = _qualified(value)
            if tree is None:
                code = getattr(value, "__code__", None)
                self.parts[qualified] = _sha(repr(code.co_code if code else qualified))
            else:
                self._add_code(qualified, tree, _globals_of(value))
            self._closures(value)
            return
        shown = constant_repr(value)
        if shown is not None:
            self.parts[name] = _sha(shown)

    def _closures(self, obj: Any) -> None:
        functions = [obj] if isinstance(obj, types.FunctionType) else _methods(obj)
        for function in functions:
            for index, cell in enumerate(function.__closure__ or ()):
                try:
                    content = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                label = f"{_qualified(function)}.<closure {function.__code__.co_freevars[index]}>"
                if content is obj or id(content) in self.seen:
                    continue
                if isinstance(content, (types.FunctionType, type)):
                    self._visit(label, content)
                else:
                    shown = constant_repr(content)
                    self.parts[label] = _sha(shown if shown is not None else type(content).__name__)


def _methods(cls: Any) -> Iterator[types.FunctionType]:
    for value in vars(cls).values() if isinstance(cls, type) else ():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if isinstance(value, types.FunctionType):
            yield value


def _references(tree: ast.AST) -> Iterator[list[str]]:
    """Dotted names read by the code: ``helper``, ``module.CONSTANT``, ..."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            path: list[str] = []
            inner: ast.expr = node
            while isinstance(inner, ast.Attribute):
                path.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name):
                yield [inner.id, *reversed(path)]
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            yield [node.id]


def _source_tree(obj: Any) -> ast.Module | None:
    try:
        text = inspect.getsource(obj)
    except (OSError, TypeError):
        return None
    try:
        return _parse_without_docstrings(text)
    except SyntaxError:  # e.g. a lambda cut out of the middle of a line
        return None


def _globals_of(obj: Any) -> dict[str, Any]:
    if isinstance(obj, types.FunctionType):
        return obj.__globals__
    module = sys.modules.get(getattr(obj, "__module__", ""))
    return vars(module) if module is not None else {}


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def _is_library_class(obj: Any) -> bool:
    return isinstance(obj, type) and obj.__module__.split(".")[0] == "pytest_taskproc"


def _is_user_object(obj: Any) -> bool:
    return _is_user_module(getattr(obj, "__module__", None) or "")


_user_modules: dict[str, bool] = {}


def _is_user_module(name: str) -> bool:
    """Whether a module is the user's own code: not installed, not the standard library."""
    found = _user_modules.get(name)
    if found is None:
        found = _classify_module(name)
        _user_modules[name] = found
    return found


def _installed_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    roots.add(site.getusersitepackages())
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


_INSTALLED = _installed_roots()


def _classify_module(name: str) -> bool:
    if not name or name.split(".")[0] in ("pytest_taskproc", "builtins"):
        return False
    module = sys.modules.get(name)
    filename = getattr(module, "__file__", None)
    if not filename:
        return name == "__main__"
    path = os.path.realpath(filename)
    return not path.startswith(_INSTALLED)


_SIMPLE = (int, float, complex, str, bytes, bool, type(None))


def constant_repr(value: Any, depth: int = 0) -> str | None:
    """A stable text for a module-level constant, or None when it has none.

    Plain values and containers of them, enums, dataclass instances and
    arrays (anything with ``dtype``, ``shape`` and ``tobytes``) qualify;
    other objects' reprs often hold memory addresses, so they are left out.
    """
    if depth > 20:
        return None
    if isinstance(value, _SIMPLE):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, (list, tuple)):
        items = [constant_repr(v, depth + 1) for v in value]
        return None if None in items else f"{type(value).__name__}[{','.join(items)}]"  # type: ignore[arg-type]
    if isinstance(value, (set, frozenset)):
        members = [constant_repr(v, depth + 1) for v in value]
        return None if None in members else f"set[{','.join(sorted(members))}]"  # type: ignore[arg-type]
    if isinstance(value, dict):
        pairs = [
            (constant_repr(k, depth + 1), constant_repr(v, depth + 1)) for k, v in value.items()
        ]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "dict{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    if all(hasattr(value, a) for a in ("dtype", "shape", "tobytes")):
        try:
            return f"array:{value.dtype}:{value.shape}:{_sha(value.tobytes())}"
        except Exception:
            return None
    import dataclasses
    import enum

    if isinstance(value, enum.Enum):
        return repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return repr(value)
    return None
