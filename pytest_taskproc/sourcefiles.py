"""The source text of the code that runs, and whether its file changed since.

A code digest must describe the code a process actually runs, not whatever
the file says now: a notebook or a long script may import a module, have its
file edited, and only then compute.  So the text of each user module is kept
as it was when the module was first seen by this library (when a task class
is defined, every user module already imported is read), and digests are made
from that text.  A file whose bytes differ from the kept text was edited after
it was imported: ``edited`` says so, and the digest stays that of the code in
memory.  A module run again by ``importlib.reload`` has a new ``__spec__``; its
text is read again.  Where the text may have been read too late (a module
imported before any task class, edited before the first digest), the
functions compiled from the kept text are compared with the live ones.

Interactive code (IPython cells) has no file on disk; its text is in
``linecache``, where IPython keeps every cell.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.util
import linecache
import os
import site
import sys
import sysconfig
import threading
import types
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .normalize import Summary, strip_in_place, summarize


@dataclass(eq=False)
class SourceFile:
    """One file's text as imported, parsed once."""

    filename: str
    text: str
    #: (mtime_ns, size) of the file when its text was read; None for linecache-only text
    stat: tuple[int, int] | None
    #: the module's ``__spec__`` then (``importlib.reload`` makes a new one)
    spec: Any = None
    #: whether functions compiled from the text may be compared with the live ones
    comparable: bool = False
    _tree: ast.Module | None = None
    _codes: dict[tuple[str, int], list[tuple[Any, ...]]] | None = None
    _bindings: dict[str, list[ast.stmt]] | None = None
    #: line -> definitions starting there (a decorator's line counts): found by code objects
    _defs: dict[int, list[ast.AST]] | None = None
    _classes: dict[str, list[ast.ClassDef]] | None = None
    #: every name the text reads or binds anywhere (marks included: they are in the text)
    _names: set[str] | None = None
    _summaries: dict[int, Summary] = field(default_factory=dict)
    edited: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def tree(self) -> ast.Module:
        if self._tree is None:
            try:
                tree = ast.parse(self.text, self.filename)
            except (SyntaxError, ValueError):  # then nothing is found in it: digested by value
                tree = ast.Module(body=[], type_ignores=[])
            self._index(tree)  # before marks go: a code object may start at a mark's line
            strip_in_place(tree)
            self._tree = tree
        return self._tree

    def definitions_at(self, line: int) -> list[ast.AST]:
        """Functions, lambdas and classes whose definition starts at ``line``."""
        self.tree  # noqa: B018 - parsed and indexed on first use
        return self._defs.get(line, []) if self._defs is not None else []

    def classes_named(self, name: str) -> list[ast.ClassDef]:
        self.tree  # noqa: B018 - parsed and indexed on first use
        return self._classes.get(name, []) if self._classes is not None else []

    def names(self) -> set[str]:
        """Every name used anywhere in the text (a name only in ``__all__`` is not)."""
        self.tree  # noqa: B018 - parsed and indexed on first use
        return self._names if self._names is not None else set()

    def _index(self, tree: ast.Module) -> None:
        defs: dict[int, list[ast.AST]] = {}
        classes: dict[str, list[ast.ClassDef]] = {}
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for line in {node.lineno, *(d.lineno for d in node.decorator_list)}:
                    defs.setdefault(line, []).append(node)
                if isinstance(node, ast.ClassDef):
                    classes.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.Lambda):
                defs.setdefault(node.lineno, []).append(node)
        self._defs, self._classes, self._names = defs, classes, names

    def summary(self, node: ast.AST) -> Summary:
        """The normalised text of a definition or statement of this file, made once."""
        found = self._summaries.get(id(node))
        if found is None:
            found = self._summaries[id(node)] = summarize(node)
        return found

    def bindings(self, name: str) -> list[ast.stmt]:
        """The top-level statements that mention ``name`` (outside function and class bodies)."""
        if self._bindings is None:
            found: dict[str, list[ast.stmt]] = {}
            for statement in self.tree.body:
                for mentioned in _mentioned(statement):
                    found.setdefault(mentioned, []).append(statement)
            self._bindings = found
        return self._bindings.get(name, [])

    def runs(self, code: types.CodeType) -> bool:
        """Whether ``code`` is what this text compiles to (False: the text is not what runs)."""
        if not self.comparable:
            return True
        if self._codes is None:
            try:
                compiled = compile(self.text, self.filename, "exec", dont_inherit=True)
            except (SyntaxError, ValueError):
                self._codes = {}
            else:
                codes = nested_codes(compiled)
                found: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
                for c in codes:  # several lambdas may share a line
                    found.setdefault((c.co_name, c.co_firstlineno), []).append(fingerprint(c))
                self._codes = found
        return fingerprint(code) in self._codes.get((code.co_name, code.co_firstlineno), [])


def _mentioned(statement: ast.AST) -> set[str]:
    """Names a statement run at module level binds or reads (not inside functions or classes)."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, ast.Name):
        return {statement.id}
    if isinstance(statement, ast.alias):
        return {(statement.asname or statement.name).split(".")[0]}
    names: set[str] = set()
    for child in ast.iter_child_nodes(statement):
        names |= _mentioned(child)
    return names


def nested_codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and the code objects of the functions, lambdas and classes inside it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from nested_codes(const)


def fingerprint(code: types.CodeType) -> tuple[Any, ...]:
    """What a code object does, without its line numbers: equal in every process of one Python."""
    consts = tuple(_const(c) for c in code.co_consts)
    return (
        code.co_name,
        code.co_code,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        consts,
    )


#: (file name, id of the module's ``__spec__``) -> its text; the spec is kept alive by the entry
def _const(value: Any) -> Any:
    if isinstance(value, types.CodeType):
        return fingerprint(value)
    if isinstance(value, frozenset):  # ``x in {"a", "b"}``: iteration order follows hash seeds
        return ("frozenset", tuple(sorted(repr(_const(v)) for v in value)))
    if isinstance(value, tuple):
        return ("tuple", tuple(_const(v) for v in value))
    return (type(value).__name__, repr(value))


_files: dict[tuple[str, int], SourceFile] = {}
_files_lock = threading.Lock()
_scanned: set[str] = set()


def _stat(filename: str) -> tuple[int, int] | None:
    try:
        found = os.stat(filename)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size


def _read(filename: str) -> str | None:
    try:
        with open(filename, "rb") as handle:
            return importlib.util.decode_source(handle.read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _take(filename: str, spec: Any, loader: Any) -> SourceFile | None:
    stat = _stat(filename)
    text = _read(filename) if stat is not None else None
    if text is not None:
        # only Python's own loader compiles the text as it is (pytest's assertion rewriting
        # and instrumenting loaders change the code)
        comparable = type(loader) is importlib.machinery.SourceFileLoader
        return SourceFile(filename, text, stat, spec, comparable)
    entry: Any = linecache.cache.get(filename)
    if entry is not None and len(entry) > 2 and entry[2]:
        # IPython keeps each cell's text here, never on disk
        return SourceFile(filename, "".join(entry[2]), None, spec)
    return None


def source_file(filename: str, scope: dict[str, Any] | None = None) -> SourceFile | None:
    """The kept text of ``filename``; ``scope`` is the globals of the code read from it."""
    spec = scope.get("__spec__") if scope is not None else None
    loader = scope.get("__loader__") if scope is not None else None
    key = (filename, id(spec))
    kept = _files.get(key)
    if kept is not None:
        return kept
    with _files_lock:
        kept = _files.get(key)
        if kept is None:
            kept = _take(filename, spec, loader)
            if kept is not None:
                _files[key] = kept
        return kept


def text_now_if_it_runs(kept: SourceFile, codes: Iterable[types.CodeType]) -> SourceFile | None:
    """The file's text now, kept from now on in place of ``kept``, when it is what ``codes``
    were compiled from: functions patched in place, the module not run again (IPython's
    ``%autoreload``).  None when it is not (the file was edited, nothing loaded it)."""
    if not kept.comparable or kept.stat is None:
        return None
    stat = _stat(kept.filename)
    text = _read(kept.filename) if stat is not None else None
    if stat is None or text is None or text == kept.text:
        return None
    fresh = SourceFile(kept.filename, text, stat, kept.spec, comparable=True)
    if not all(fresh.runs(c) for c in codes):
        return None
    with _files_lock:
        _files[(kept.filename, id(kept.spec))] = fresh
    return fresh


def module_file(module: types.ModuleType | None) -> SourceFile | None:
    """The kept text of a module that has a source file (not a notebook's ``__main__``)."""
    filename = getattr(module, "__file__", None)
    if module is None or not filename or not filename.endswith(".py"):
        return None
    return source_file(filename, vars(module))


def note_modules(is_user_module: Any) -> None:
    """Keep the text of every user module imported so far (called as task classes are defined)."""
    new = sys.modules.keys() - _scanned
    if not new:
        return
    _scanned.update(new)
    for name in new:
        module = sys.modules.get(name)
        if module is not None and is_user_module(name):
            module_file(module)


def edited(kept: SourceFile) -> bool:
    """Whether the file's bytes now differ from the text the process runs (noted once)."""
    if kept.stat is None or kept.edited:
        return kept.edited
    stat = _stat(kept.filename)
    if stat == kept.stat:
        return False
    text = _read(kept.filename)
    with kept.lock:
        if text == kept.text:
            kept.stat = stat or kept.stat  # touched or copied, same bytes
        else:
            kept.edited = True
    return kept.edited


_user_modules: dict[str, bool] = {}


#: path of a compiled extension module -> SHA-256 of its bytes, as first read in this process
_compiled: dict[str, str] = {}


def compiled_file(module: types.ModuleType | None) -> str | None:
    """The file of a module built from C, C++, Cython or Rust (a shared library), if it is one."""
    file = getattr(module, "__file__", None)
    if isinstance(file, str) and file.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return file
    return None


def compiled_digest(filename: str) -> str:
    """The SHA-256 of an extension module's file, read once per process: the code that
    was loaded is what the bytes were then, and a library cannot be loaded twice."""
    found = _compiled.get(filename)
    if found is None:
        digest = hashlib.sha256()
        try:
            with open(filename, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            found = digest.hexdigest()
        except OSError:
            # gone or unreadable: nothing says it is what was used last time
            found = "unreadable:" + uuid.uuid4().hex
        _compiled[filename] = found
    return found


def replaced_since_loaded(filename: str) -> bool:
    """Whether the shared library at ``filename`` is not the file this process loaded:
    rebuilt since (a linker writes a new file, so the mapping names the old one
    as deleted, or another inode).  Known on Linux only; elsewhere False."""
    try:
        current = os.stat(filename).st_ino
        path = os.path.realpath(filename)
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.rstrip("\n").split(maxsplit=5)
                if len(fields) < 6:
                    continue
                if fields[5] == f"{path} (deleted)":
                    return True
                if fields[5] == path:
                    return int(fields[4]) != current
    except (OSError, ValueError):
        pass
    return False


def is_user_module(name: str) -> bool:
    """Whether a module is the user's own code: not installed, not the standard library."""
    found = _user_modules.get(name)
    if found is None:
        found = _classify_module(name)
        if name in sys.modules:
            _user_modules[name] = found
    return found


def _installed_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    roots.add(site.getusersitepackages())
    found = {os.path.realpath(r) + os.sep for r in roots if r}
    return tuple(found | {os.path.abspath(r) + os.sep for r in roots if r})


#: the standard library and site-packages, each as written and with links resolved
INSTALLED = _installed_roots()


def is_user_path(path: str) -> bool:
    """Whether a source file is the user's: outside the standard library and site-packages."""
    # most modules are installed ones, told apart without resolving links
    return not path.startswith(INSTALLED) and not os.path.realpath(path).startswith(INSTALLED)


def _classify_module(name: str) -> bool:
    if not name or name.split(".")[0] in ("pytest_taskproc", "builtins"):
        return False
    module = sys.modules.get(name)
    filename = getattr(module, "__file__", None)
    if not filename:
        return name == "__main__"
    return is_user_path(filename)
