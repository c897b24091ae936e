"""The walk from a task class through the user code it can reach, part by part.

Each part is named ``module.qualname`` (a class, a function, a method of
another task class) or ``module.NAME`` (a module-level name) and digested by
what it is:

- a class or function by its definition's source, found where the code in use
  was defined (not the first definition of that name in the file), parsed so
  that comments, docstrings and formatting do not count, without pytest marks
  (``@pytest.mark.*``, ``@mark.*``, ``pytestmark``); the names it reads,
  imports inside it included, are followed; its closure values are digested
  as values;
- a module-level name that is not a function or class by the top-level
  statements of its module that mention it (``OPS = {"double": double}``,
  ``STEPS.append(fit)``, ``MEMO = {}``), following the names they read: the
  source says what the value is made of, and stays the same while a memo
  dict fills up at run time;
- what has no source (a notebook's globals, a closure cell, code compiled
  from a string) by value (``valuedigest``), and code without source by its
  code object.

Installed packages and the standard library are not followed (their
versions are recorded instead).  Other task classes are not followed either,
as what a task reads from them is covered by their own records, except for
their methods and attributes that the code calls directly.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import importlib.util
import os
import sys
import types
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .sourcefiles import (
    SourceFile,
    compiled_digest,
    compiled_file,
    fingerprint,
    is_user_module,
    is_user_path,
    module_file,
    nested_codes,
    replaced_since_loaded,
    source_file,
    text_now_if_it_runs,
)
from .spec import is_task_class
from .valuedigest import Undigestable, ValueText, is_immutable, qualified, sha

#: class attributes that are not the user's code (set by Python or by TaskBase)
_NOT_CODE = frozenset(
    {
        "__module__",
        "__qualname__",
        "__doc__",
        "__dict__",
        "__weakref__",
        "__annotations__",
        "__firstlineno__",
        "__static_attributes__",
        "__orig_bases__",
        "__parameters__",
        "__abstractmethods__",
        "_abc_impl",
        "_tp_config",
        "_task_config",
        "task_name",
        "pytestmark",
    }
)
_NO_VALUE = object()


class Walker:
    """Collects the parts of one task class's code (``walk``), or of any user code (``follow``)."""

    def __init__(self, root: type | None = None) -> None:
        self.root = root
        self.parts: dict[str, str] = {}
        #: (mapping, key, value) of every name looked up: all still the same = digest still valid
        self.lookups: list[tuple[Any, str, Any]] = []
        #: (function, its code object) of every function digested: an autoreloader
        #: (IPython's ``%autoreload``) swaps the code of a function object in place
        self.codes: list[tuple[types.FunctionType, types.CodeType]] = []
        #: [value, digest of its text] of each value that can change in place and was
        #: digested by what it holds (a notebook's ``params`` dict): ``params["lr"] = 2``
        #: keeps the object
        self.contents: list[list[Any]] = []
        self.files: dict[int, SourceFile] = {}
        #: values that could not be digested at all, as "name (why)"
        self.undigestable: list[str] = []
        #: files whose kept text is not the code in memory
        self.stale_files: list[str] = []
        #: parts that import modules by computed names when they run (not followed)
        self.dynamic_imports: list[str] = []
        self._seen: set[int] = set()
        self._seen_names: set[tuple[int, str]] = set()
        self._values = ValueText(self._follow_value)

    def walk(self) -> None:
        assert self.root is not None
        self._seen.add(id(self.root))
        self._class(self.root)
        for base in self.root.__mro__[1:]:
            # Inherited methods are this task's code too, even from another task class.
            if self._is_user(base) and id(base) not in self._seen:
                self._seen.add(id(base))
                self._class(base)

    def follow(self, obj: Any) -> bool:
        """Digest a function or class met outside any task (a value names it); False when it
        is not the user's code."""
        return self._follow_value(obj)

    # -- what the walk meets -------------------------------------------------------------

    def _is_user(self, obj: Any) -> bool:
        module = getattr(obj, "__module__", None) or ""
        return module.split(".")[0] != "pytest_taskproc" and is_user_module(module)

    def _follow_value(self, obj: Any) -> bool:
        """A function or class met inside a value: digest its code when it is the user's."""
        if isinstance(obj, (types.FunctionType, type)) and _made_in_no_module(obj):
            # Made by exec or eval in a namespace of its own (sympy's lambdify, a code
            # generator): nothing says it is installed code, and the user's code reaches
            # it, so what it does counts.
            if id(obj) not in self._seen:
                self._seen.add(id(obj))
                # lambdify names all its functions alike: each keeps a part of its own
                name, copies = qualified(obj), 1
                while f"{name}#{copies}" in self.parts:
                    copies += 1
                if isinstance(obj, type):
                    self._class_without_source(f"{name}#{copies}", obj)
                else:
                    self._code_object(f"{name}#{copies}", obj)
                    self._closures(obj)
            return True
        if not self._is_user(obj) or is_task_class(obj):
            return False
        self._compiled(obj.__module__)
        if isinstance(obj, type):
            if id(obj) not in self._seen:
                self._seen.add(id(obj))
                self._class(obj)
        elif isinstance(obj, types.FunctionType):
            self._function(obj)
        else:
            return False
        return True

    def _function(self, func: types.FunctionType) -> None:
        if id(func) in self._seen or not self._is_user(func):
            return
        self._seen.add(id(func))
        name = qualified(func)
        code = func.__code__
        self.codes.append((func, code))
        kept = self._file(code.co_filename, func.__globals__, [code])
        nodes = _function_nodes(kept, code) if kept is not None else []
        if kept is None or not nodes:
            self._code_object(name, func)
        else:
            self._digest_source(name, kept, nodes, func.__globals__)
        self._closures(func)
        # What a wrapper holds besides its code: ``__wrapped__`` (``functools.wraps``), the
        # implementations ``@proc.register`` added to a ``functools.singledispatch`` function.
        self._follow_contents(list(vars(func).values()))

    def _class(self, cls: type) -> None:
        everything = [f for f in _methods(cls) if _defined_in(f, cls)]
        self.codes.extend((f, f.__code__) for f in everything)
        # Methods written in the class body, not those a decorator generated from it (a
        # dataclass's ``__init__`` compiled from a string, its ``__repr__`` wrapper from the
        # standard library): the class's text says what those do.
        own = [f for f in everything if _written(f.__code__.co_filename)] or everything
        # a class pickled by value (made in a function) may come back with a short __qualname__
        where = own[0].__qualname__.rsplit(".", 1)[0] if own else cls.__qualname__
        name = f"{cls.__module__}.{where}"
        scope = own[0].__globals__ if own else _module_dict(cls)
        filename = own[0].__code__.co_filename if own else scope.get("__file__")
        kept = self._file(filename, scope, [f.__code__ for f in own]) if filename else None
        nodes = _class_nodes(kept, cls, own) if kept is not None else []
        if kept is None or not nodes:
            self._class_without_source(name, cls)
        else:
            self._digest_source(name, kept, nodes, scope)
            # what the attributes hold now: ``Task.FACTOR = int(os.environ["F"])`` below the
            # class changes no text of it
            values = [
                f"{attr}={self._value_text(f'{name}.{attr}', value)}"
                for attr, value in sorted(vars(cls).items())
                if attr not in _NOT_CODE
                and not attr.startswith(("__", "_tp"))
                and is_immutable(value)
            ]
            if values:
                label = f"{name}.<attribute values>"
                source = "\n".join(kept.summary(n).text for n in nodes)
                text = without_location("\n".join(values), kept.filename, source)
                self.parts[label] = sha(text)
        # ``Models.table``, filled by a ``@Models.add`` decorator in any module
        self._follow_contents(
            [v for k, v in vars(cls).items() if k not in _NOT_CODE and isinstance(v, _CONTAINERS)]
        )
        for base in cls.__bases__:
            if not is_task_class(base):
                self._follow_value(base)
        for function in _methods(cls):
            if _defined_in(function, cls):
                self._closures(function)
            else:  # a function assigned in the class body from elsewhere
                self._follow_value(function)

    def _class_without_source(self, name: str, cls: type) -> None:
        """Built by ``exec`` or typed where no text is kept: its methods' code and attributes."""
        shown = [f"bases:{[qualified(b) for b in cls.__bases__]}"]
        for attr, value in vars(cls).items():
            if attr in _NOT_CODE or type(value).__name__ == "Req":
                continue
            shown.append(f"{attr}={self._value_text(f'{name}.{attr}', value)}")
        self.parts[name] = sha("\n".join(shown))

    def _code_object(self, name: str, func: types.FunctionType) -> None:
        """Code without source (compiled from a string): what it does, and what it reads."""
        defaults = (func.__defaults__, func.__kwdefaults__)
        shown = f"{fingerprint(func.__code__)!r}|{self._value_text(name, defaults)}"
        self.parts[name] = sha(shown)
        scope = func.__globals__
        own_namespace = _no_loaded_module(scope.get("__name__"))
        for global_name in sorted(_code_names(func.__code__)):
            if global_name not in scope:
                continue
            value = scope[global_name]
            if not own_namespace:
                self._resolve([global_name], scope, {})
            elif not isinstance(value, types.ModuleType):
                # no module's statements say what it is: the value it has now
                label = f"{name}.{global_name}"
                self.parts[label] = sha(self._value_text(label, value))

    def _compiled(self, module_name: str) -> None:
        """A module of the project built from C, C++, Cython or Rust (``build_ext
        --inplace``): no Python source says what it does; the bytes of its file do."""
        filename = compiled_file(sys.modules.get(module_name))
        label = f"{module_name}.<compiled>"
        if filename is not None and label not in self.parts:
            self.parts[label] = compiled_digest(filename)
            if replaced_since_loaded(filename):  # rebuilt under a running notebook
                self.stale_files.append(filename)

    def _follow_contents(
        self,
        values: list[Any],
        depth: int = 3,
        written: tuple[str, list[tuple[int, int]]] | None = None,
    ) -> None:
        """The user functions and classes these containers hold now, followed by their code.

        What a registry holds was put there by decorators or calls anywhere in
        the project (``@register`` in a models module), not by the statement
        that made it; its data is left alone (a memo dict fills up at run time).
        ``written``: a file and its line spans whose functions are digested already.
        """
        for value in values:
            if isinstance(value, _DATA):
                continue  # the bulk of a list of numbers, at the cost of one check each
            inner = _unwrap(value)
            if isinstance(inner, types.FunctionType) and written is not None:
                code = inner.__code__
                if code.co_filename == written[0] and any(
                    first <= code.co_firstlineno <= last for first, last in written[1]
                ):
                    continue
            if isinstance(inner, (types.FunctionType, type)):
                self._follow_value(inner)
            elif depth and isinstance(value, _MAPPINGS):
                self._follow_contents([*value.keys(), *value.values()], depth - 1, written)
            elif depth and isinstance(value, _SEQUENCES):
                self._follow_contents(list(value), depth - 1, written)

    def _closures(self, func: types.FunctionType) -> None:
        cells = func.__closure__ or ()
        for var, cell in zip(func.__code__.co_freevars, cells, strict=True):
            if var == "__class__":  # what ``super()`` uses: the class itself
                continue
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if self.root is not None and content is self.root:
                continue
            label = f"{qualified(func)}.<closure {var}>"
            self.parts[label] = sha(self._value_text(label, content))

    def _value_text(self, name: str, value: Any) -> str:
        try:
            text = self._values.text(value)
        except Undigestable as exc:
            self.undigestable.append(f"{name}: {exc}")
            return f"undigestable:{uuid.uuid4().hex}"
        if not is_immutable(value):
            self.contents.append([value, sha(text)])
        return text

    def content_digest(self, value: Any) -> str | None:
        """What ``value`` holds now, digested as the walk does; None: it cannot say."""
        try:
            return sha(self._values.text(value))
        except Undigestable:
            return None

    # -- names read by code --------------------------------------------------------------

    def _digest_source(
        self,
        name: str,
        kept: SourceFile,
        nodes: Sequence[ast.AST],
        scope: dict[str, Any],
        value: Any = _NO_VALUE,
    ) -> None:
        """A part made of definitions or statements of a file, and the names they read."""
        summaries = [kept.summary(n) for n in nodes]
        shown = [s.text for s in summaries]
        literal = _NO_VALUE
        if value is not _NO_VALUE:
            literal = _written_literal(nodes, name.rsplit(".", 1)[-1])
        if value is not _NO_VALUE and (
            is_immutable(value)
            or (_is_plain_data(value) and _computed(nodes))
            or (literal is not _NO_VALUE and literal != value)
        ):
            # also what it came out as: ``N = int(os.environ["N"])``, ``STARTED = time.time()``,
            # ``PARAMS = json.load(...)`` (a memo dict, made empty, is filled later: not that),
            # and ``PARAMS = {"lr": 1}`` no longer holding what it says (a notebook cell's
            # ``config.PARAMS["lr"] = 2``): a new process would make it as written
            text = self._value_text(name, value)
            shown.append(without_location(text, kept.filename, "\n".join(shown)))
        elif literal is not _NO_VALUE:
            self._value_text(name, value)  # not digested; kept, so a plan sees it changed
        self.parts[name] = sha("\n".join(shown))
        for summary in summaries:
            imports = dict(self._local_imports(summary.imports, scope))
            for path in summary.references:
                self._resolve(path, scope, imports)
            for module_name in summary.dynamic_imports:
                module = None if module_name is None else self._user_module(module_name)
                if module is not None:
                    self._whole_module(module)  # named by a constant: followed whole
                elif module_name is None and name not in self.dynamic_imports:
                    self.dynamic_imports.append(name)

    def _resolve(
        self, path: Sequence[str], scope: Any, imports: dict[str, tuple[Any, str, Any]]
    ) -> None:
        head = path[0]
        if head in imports:
            home, key, value = imports[head]
        elif head in scope:
            home, key, value = scope, head, scope[head]
        elif head == "globals" and len(path) == 1:
            # ``globals()[f"SCALE_{k}"]``: any name of the module may be read
            module_name = scope.get("__name__") if isinstance(scope, dict) else None
            if module_name is not None and is_user_module(module_name):
                self._whole_scope(scope)
            return
        else:
            return  # a builtin, a local or an attribute of self
        if home is not None:
            self.lookups.append((home, key, value))
            if isinstance(value, types.ModuleType) and is_user_module(value.__name__):
                self._module_changed_by(home, key)
        for attr in path[1:]:
            if isinstance(value, types.ModuleType) and is_user_module(value.__name__):
                members = vars(value)
                if attr not in members:  # set at run time, or a module __getattr__
                    self._whole_module(value)
                    return
                home, key, value = members, attr, members[attr]
                self.lookups.append((home, key, value))
            elif is_task_class(value) and self._is_user(value):
                self._task_attribute(value, attr)
                return
            else:
                break
        self._name(home, key, value)

    def _module_changed_by(self, home: Any, key: str) -> None:
        """What the statements of ``home``'s module do to the module it names ``key``:
        ``config.SETTINGS["lr"] = 2`` below ``import config`` changes what ``config.SETTINGS``
        holds, and no statement of ``config`` says so."""
        module_name = home.get("__name__") if isinstance(home, dict) else None
        if module_name is None or not is_user_module(module_name):
            return
        if (id(home), key) in self._seen_names:
            return
        self._seen_names.add((id(home), key))
        kept = module_file(_home_module(home))
        if kept is None:
            return
        statements = [s for s in kept.bindings(key) if _changes_name(s, key)]
        if statements:
            self._keep(kept, home)
            self._digest_source(f"{module_name}.{key}", kept, statements, home)

    def _task_attribute(self, cls: type, attr: str) -> None:
        """``Other.helper(x)``: that method of another task class, not the whole class."""
        owner = next((k for k in cls.__mro__ if attr in vars(k)), None)
        if owner is None or not self._is_user(owner) or (id(owner), attr) in self._seen_names:
            return
        self._seen_names.add((id(owner), attr))
        raw = vars(owner)[attr]
        self.lookups.append((vars(owner), attr, raw))
        if type(raw).__name__ == "Req":
            return
        inner = _unwrap(raw)
        if isinstance(inner, types.FunctionType):
            self._function(inner)
        else:
            label = f"{qualified(owner)}.{attr}"
            self.parts[label] = sha(self._value_text(label, raw))

    def _name(self, home: Any, key: str, value: Any) -> None:
        """A name of a module: a function or class by its code, anything else by its statements."""
        if isinstance(value, types.ModuleType):
            if is_user_module(value.__name__):
                self._whole_module(value)  # used as a value: any of its names may be read
            return
        if is_task_class(value):
            return
        if isinstance(value, (types.FunctionType, type)):
            self._follow_value(value)
            return
        module_name = home.get("__name__") if isinstance(home, dict) else None
        if module_name is None or not is_user_module(module_name):
            return  # a value of an installed package: its version is recorded
        if (id(home), key) in self._seen_names:
            return
        self._seen_names.add((id(home), key))
        self._compiled(module_name)
        label = f"{module_name}.{key}"
        kept = module_file(_home_module(home))
        statements = kept.bindings(key) if kept is not None else []
        if kept is not None:
            self._keep(kept, home)
        if statements and all(isinstance(s, ast.ImportFrom) for s in statements):
            imported = self._local_imports([statements[-1]], home)  # type: ignore[list-item]
            for local, (src_home, src_key, src_value) in imported:
                if local == key and src_home is not None:
                    self._name(src_home, src_key, src_value)
            return
        if statements and not all(isinstance(s, ast.Import) for s in statements):
            assert kept is not None
            self._digest_source(label, kept, statements, home, value)
            # a registry: ``MODELS = {}`` says nothing of what ``@register`` put in it
            # (lambdas written in the statements are digested with them already)
            lines = [(s.lineno, s.end_lineno or s.lineno) for s in statements]
            self._follow_contents([value], written=(kept.filename, lines))
            return
        # ``__file__`` and values set without a statement of their own: by value, but
        # not by where the project lies
        filename = kept.filename if kept is not None else str(home.get("__file__") or "")
        self.parts[label] = sha(without_location(self._value_text(label, value), filename))

    def _whole_module(self, module: types.ModuleType) -> None:
        """Every name a user module defines: code reads them by names it computes."""
        self._whole_scope(vars(module))

    def _whole_scope(self, members: dict[str, Any]) -> None:
        if id(members) in self._seen:
            return
        self._seen.add(id(members))
        for key in sorted(members):
            if not key.startswith("__") and key != "pytestmark":  # marks are not code
                self.lookups.append((members, key, members[key]))
                self._name(members, key, members[key])

    def _local_imports(
        self, statements: Iterable[ast.Import | ast.ImportFrom], scope: dict[str, Any]
    ) -> Iterator[tuple[str, tuple[Any, str, Any]]]:
        """Names bound by ``import`` statements, resolved to user modules' names."""
        package = scope.get("__package__") or ""
        for node in statements:
            if isinstance(node, ast.ImportFrom):
                base = _absolute(node.module, node.level, package)
                module = self._user_module(base) if base else None
                if module is None:
                    continue
                for alias in node.names:
                    members = vars(module)
                    local = alias.asname or alias.name
                    if alias.name in members:
                        yield local, (members, alias.name, members[alias.name])
                    elif (sub := self._user_module(f"{base}.{alias.name}")) is not None:
                        yield local, (None, local, sub)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    module = self._user_module(alias.name)
                    if module is not None and alias.asname:
                        yield alias.asname, (None, alias.asname, module)
                    elif module is not None:
                        top = sys.modules.get(alias.name.split(".")[0])
                        yield alias.name.split(".")[0], (None, alias.name, top)

    def _user_module(self, name: str) -> types.ModuleType | None:
        """A user module by name, imported now if the code imports it only when it runs."""
        module = sys.modules.get(name)
        if module is None:
            try:
                spec = importlib.util.find_spec(name)
                if spec is None or not spec.origin or not is_user_path(spec.origin):
                    return None
                module = importlib.import_module(name)
            except Exception:  # the code would fail the same way when it runs
                return None
        return module if is_user_module(module.__name__) else None

    def _keep(self, kept: SourceFile, scope: dict[str, Any]) -> None:
        """A file whose text the digest uses; the modules it imports only for what importing
        them does count whole, the first time the walk meets the file."""
        if id(kept) in self.files:
            return
        self.files[id(kept)] = kept
        package = scope.get("__package__") or ""
        used = kept.names()
        for node in _module_level_imports(kept.tree.body):
            plain = isinstance(node, ast.Import)
            for alias in node.names:
                bound = alias.asname or (alias.name.split(".")[0] if plain else alias.name)
                if alias.name == "*" or bound in used:
                    continue
                # Imported and never used: it is there for what running it does (a
                # ``@register`` filling a registry, an installed package's included), which
                # no name the code reads leads to.
                name = alias.name
                if isinstance(node, ast.ImportFrom):
                    # ``from . import models`` ran that module; ``from .models import x``
                    # ran ``models``
                    name = _absolute(node.module, node.level, package)
                    if f"{name}.{alias.name}" in sys.modules:
                        name = f"{name}.{alias.name}"
                # only what did run (not an import under ``if TYPE_CHECKING:``) did anything
                module = sys.modules.get(name)
                if module is not None and is_user_module(module.__name__):
                    self._whole_module(module)

    def _file(
        self, filename: str, scope: dict[str, Any], codes: Sequence[types.CodeType] = ()
    ) -> SourceFile | None:
        """The kept text of a file, ``codes`` its live code objects to compare it with: when
        neither the text imported nor the file's now compiles to them, nothing says what
        that code is (a method IPython 9's ``%autoreload`` compiled alone), and the file
        is named as stale."""
        kept = source_file(filename, scope)
        if kept is not None and any(not kept.runs(c) for c in codes):
            # Patched in place without running the module again (``%autoreload``'s way):
            # the file's text now may be the code that runs.
            fresh = text_now_if_it_runs(kept, codes)
            if fresh is None:
                self.stale_files.append(kept.filename)
            kept = fresh or kept
        if kept is not None:
            self._keep(kept, scope)
            self.lookups.append((scope, "__spec__", scope.get("__spec__")))
        return kept


# -- finding the definition in use ---------------------------------------------------------


#: what makes a memo or a registry, empty, to be filled while the program runs
_EMPTY_MAKERS = frozenset({"dict", "list", "set", "defaultdict", "OrderedDict", "Counter", "deque"})


def _computed(nodes: Sequence[ast.AST]) -> bool:
    """Whether statements call something that may read data from outside (a file, the
    environment), not only make an empty container."""
    for node in nodes:
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call):
                callee = inner.func
                tail = callee.attr if isinstance(callee, ast.Attribute) else None
                if isinstance(callee, ast.Name):
                    tail = callee.id
                if tail not in _EMPTY_MAKERS:
                    return True
    return False


def _written_literal(nodes: Sequence[ast.AST], key: str) -> Any:
    """What the one statement setting ``key`` makes, when it is a literal list, dict or set
    with something in it (``PARAMS = {"lr": 1}``, a configuration; an empty one is a memo
    or a registry, filled while the program runs); ``_NO_VALUE`` otherwise (also when other
    statements change it: ``PARAMS.update(...)``)."""
    setting = [n for n in nodes if isinstance(n, ast.stmt) and _changes_name(n, key)]
    if len(setting) != 1:
        return _NO_VALUE
    node = setting[0]
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target, made = node.targets[0], node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        target, made = node.target, node.value
    else:
        return _NO_VALUE
    if not isinstance(target, ast.Name) or target.id != key:
        return _NO_VALUE
    if not (isinstance(made, ast.Dict) and made.keys) and not (
        isinstance(made, (ast.List, ast.Set)) and made.elts
    ):
        return _NO_VALUE
    try:
        return ast.literal_eval(made)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NO_VALUE


def _changes_name(statement: ast.stmt, name: str) -> bool:
    """Whether a top-level statement may change what ``name`` holds (not only read it):
    a call (``config.setup()``), an assignment into it (``config.LR = 2``), a block."""
    if isinstance(
        statement,
        (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef),
    ):
        return False
    if isinstance(statement, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return any(_root_name(t) == name for t in targets) or any(
            isinstance(n, ast.Call) for n in ast.walk(statement)
        )
    return True


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_plain_data(value: Any, depth: int = 0) -> bool:
    """Lists, tuples and dicts of plain scalars, NumPy arrays, and the user's objects holding
    those: a loaded config or weights, stable in every process (unlike a random generator's
    state or a logger)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    if depth > 20:
        return False
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return bool(value.dtype != object)
    kind = type(value)
    if is_user_module(getattr(kind, "__module__", "") or "") and hasattr(value, "__dict__"):
        return not isinstance(value, type) and _is_plain_data(vars(value), depth + 1)
    if isinstance(value, (list, tuple)):
        return all(_is_plain_data(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(
            isinstance(k, (str, int, float, bool, type(None))) and _is_plain_data(v, depth + 1)
            for k, v in value.items()
        )
    return False


def _function_nodes(kept: SourceFile, code: types.CodeType) -> list[ast.AST]:
    found = kept.definitions_at(code.co_firstlineno)
    if code.co_name == "<lambda>":  # several lambdas on one line all count
        return [n for n in found if isinstance(n, ast.Lambda)]
    return [
        n
        for n in found
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == code.co_name
    ]


def _class_nodes(kept: SourceFile, cls: type, own: list[types.FunctionType]) -> list[ast.ClassDef]:
    named = kept.classes_named(cls.__name__)
    first = getattr(cls, "__firstlineno__", None)  # Python 3.13+
    found = list(named)  # no way to tell them apart: all of them count
    if first is not None:
        found = [n for n in named if first in (n.lineno, *(d.lineno for d in n.decorator_list))]
    elif own:
        line = min(f.__code__.co_firstlineno for f in own)
        found = [n for n in named if n.lineno <= line <= (n.end_lineno or n.lineno)][-1:]
    return found


def _written(filename: str) -> bool:
    """Whether code compiled from ``filename`` was written by the user in a file (or cell)."""
    return not filename.startswith("<") and is_user_path(filename)


def _defined_in(function: types.FunctionType, cls: type) -> bool:
    """Whether a function of the class's namespace was written in its body."""
    owner = function.__qualname__.rsplit(".", 1)[0]
    return owner == cls.__qualname__ or owner.endswith("." + cls.__qualname__)


def _methods(cls: type) -> Iterator[types.FunctionType]:
    for value in vars(cls).values():
        inner = _unwrap(value)
        if isinstance(inner, types.FunctionType):
            yield inner


def _unwrap(value: Any) -> Any:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    for _ in range(20):
        wrapped = getattr(value, "__wrapped__", None)
        if wrapped is None or isinstance(value, types.FunctionType):
            break
        value = wrapped
    return value


def _module_dict(cls: type) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    return vars(module) if module is not None else {}


def _home_module(home: dict[str, Any]) -> types.ModuleType | None:
    module = sys.modules.get(home.get("__name__", ""))
    if module is not None and vars(module) is home:
        return module
    fake = types.ModuleType(home.get("__name__", "?"))  # a reloaded module's old globals
    fake.__file__ = home.get("__file__")
    fake.__spec__ = home.get("__spec__")
    return fake


def _module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements run with the module: at its top, or in its ``if`` or ``try``."""
    for statement in body:
        if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
            continue
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            yield statement
        elif isinstance(statement, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "handlers", "finalbody"):
                for inner in getattr(statement, block, []):
                    if isinstance(inner, ast.ExceptHandler):
                        yield from _module_level_imports(inner.body)
                    else:
                        yield from _module_level_imports([inner])


def _absolute(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return ""
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


_MAPPINGS = (dict, types.MappingProxyType)
_SEQUENCES = (list, tuple, set, frozenset)
_CONTAINERS = (*_MAPPINGS, *_SEQUENCES)
_DATA = (str, bytes, int, float, complex, type(None))


def _made_in_no_module(obj: types.FunctionType | type) -> bool:
    """Whether no loaded module holds what made the function or class: a class made
    where no ``__name__`` was set says it is of ``builtins``."""
    if _no_loaded_module(obj.__module__):
        return True
    return obj.__module__ == "builtins" and getattr(builtins, obj.__qualname__, None) is not obj


def _no_loaded_module(name: str | None) -> bool:
    """Whether no loaded module has this name: a function's ``__module__`` is the
    ``__name__`` of the globals it was made in, whatever (or if ever) they set it to."""
    return sys.modules.get(name or "") is None


def _code_names(code: types.CodeType) -> set[str]:
    return {name for nested in nested_codes(code) for name in nested.co_names}


#: Files that mark a project's top folder, looked for above a task module's folder.
_PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", "pytest.ini", "tox.ini", ".git")


@functools.lru_cache(maxsize=256)
def _locations(filename: str) -> tuple[tuple[str, str], ...]:
    """The module's folder and its project's top folder, each with the word that replaces it."""
    if not os.path.isabs(filename):
        return ()
    here = os.path.dirname(filename)
    found = [(here, "<module folder>")]
    folder = here
    while True:
        if any(os.path.exists(os.path.join(folder, m)) for m in _PROJECT_MARKERS):
            if folder != here:
                found.append((folder, "<project folder>"))
            break
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    with_real = [(os.path.realpath(p), word) for p, word in found]
    # longest first, so a module folder is replaced before the project folder holding it
    return tuple(sorted({*found, *with_real}, key=lambda pw: -len(pw[0])))


def without_location(text: str, filename: str, source: str = "") -> str:
    """``text`` with the module's and the project's folders replaced by words.

    ``HERE = Path(__file__).parent`` is a value worth digesting (a path from an
    environment variable is not code), but its text names where the project
    lies: a clone in another folder, a moved checkout or a CI runner must not
    find every task that reads it changed.  A folder written literally in the
    ``source`` stays: the source counts it already, and a Dask worker, which
    runs the same file from another folder, must describe the value the same.
    """
    for path, word in _locations(filename):
        if len(path) > 1 and path not in source:
            text = text.replace(path, word)
    return text
