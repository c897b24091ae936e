"""Checks of a task class when it is defined: a missing ``run_task``, one without ``return``.

Both make a task that runs and caches ``None``, as in taskproc 0.11.2 (the
original's own examples aggregate upstream tasks in a ``Main`` without
``run_task``), so they are warnings naming the class, not errors: a misspelt
``run_task`` or a forgotten ``return`` is noticed before a day of results is
cached as ``None``.
"""

from __future__ import annotations

import abc
import ast
import difflib
import dis
import inspect
import sys
import textwrap
import warnings
from types import CodeType, FunctionType
from typing import Any

from .errors import TaskDefinitionError, TaskDefinitionWarning

_HERE = __name__.rpartition(".")[0]
#: where TaskBase is defined: a run_task from there is no run_task of the user's
_TASK_MODULE = f"{_HERE}.task"


def check_run_task(cls: type) -> None:
    """Give ``cls`` a ``run_task`` if it has none; warn when it will cache ``None`` unawares.

    A class without ``run_task`` is a base for other task classes when it
    derives from ``abc.ABC`` (or uses ``ABCMeta``) or defines neither
    ``build_task`` nor ``run_task`` (a class holding shared slots or
    helpers): it is not collected as a root, and running it is an error
    saying why.  One that defines ``build_task`` runs and caches ``None``.
    """
    owner = next(k for k in cls.__mro__ if "run_task" in k.__dict__)
    method = owner.__dict__["run_task"]
    if owner.__module__ != _TASK_MODULE and not getattr(method, "_tp_placeholder", False):
        if owner is cls and not _is_ours(cls.__module__) and _lacks_return(method):
            _warn(
                f"{cls.__qualname__}.run_task has no return statement, so {cls.__qualname__} "
                "caches None as its result; return the value it computes ('-> None' or an "
                "explicit 'return None' says None is meant)"
            )
        return
    user_classes = [k for k in cls.__mro__ if k.__module__ != _TASK_MODULE and k is not object]
    defines_build = any("build_task" in k.__dict__ for k in user_classes)
    if isinstance(cls, abc.ABCMeta) or not defines_build:
        setattr(cls, "run_task", _base_class_run_task)  # noqa: B010 - mypy: no such attribute
        return
    methods = [
        n for n, v in vars(cls).items() if callable(v) and n != "build_task" and n[:1] != "_"
    ]
    setattr(cls, "run_task", _no_run_task)  # noqa: B010
    close = difflib.get_close_matches("run_task", methods, n=1, cutoff=0.6)
    hint = f" ({close[0]!r} is defined: a misspelling?)" if close else ""
    _warn(
        f"{cls.__qualname__} defines build_task but no run_task{hint}, so it runs and caches "
        "None, as in taskproc; define run_task(self) returning its result (a base class "
        "meant only to be subclassed should derive from abc.ABC)"
    )


def _is_ours(module: str) -> bool:
    return module == _HERE or module.startswith(_HERE + ".")


def _warn(message: str) -> None:
    """A warning shown at the class statement, the first frame outside this package."""
    frame = sys._getframe(1)
    level = 2  # warn's stacklevel of that frame: 1 is this function
    while frame is not None and _is_ours(str(frame.f_globals.get("__name__", ""))):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, TaskDefinitionWarning, stacklevel=level)


def _base_class_run_task(self: Any) -> Any:
    raise TaskDefinitionError(
        f"{type(self).__qualname__} defines no run_task: it is a base class for other task "
        "classes, not a task to run"
    )


_base_class_run_task._tp_placeholder = True  # type: ignore[attr-defined]


def _no_run_task(self: Any) -> None:
    """The ``run_task`` of a class that defines ``build_task`` only: its result is None."""
    return None


# -- a run_task without return -------------------------------------------------------------
def _lacks_return(method: Any) -> bool:
    """Whether ``method`` computes something and has no ``return`` statement anywhere.

    Not for an explicit ``return None`` or a bare ``return``, a ``-> None``
    (or ``NoReturn``) annotation, a generator, an abstract method, a body that
    ends by raising (``raise``, ``pytest.skip(...)``, ``sys.exit(...)``) or is
    empty (``...``, ``pass``), or a function whose source cannot be read
    (nothing is claimed then).
    """
    function = inspect.unwrap(method) if callable(method) else None
    if not isinstance(function, FunctionType) or getattr(method, "__isabstractmethod__", False):
        return False
    returns = function.__annotations__.get("return", "")
    if returns in (None, type(None), "None") or _NO_RETURN.intersection(
        {getattr(returns, "__name__", None), str(returns).rpartition(".")[2]}
    ):
        return False  # ``-> None`` says None is meant; ``-> NoReturn``, that it never returns
    code = function.__code__
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        return False
    if _returns_a_value(code):
        return False  # the common case, decided without reading the source
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return False
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef):
        return False  # a lambda, or source that is not the def
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if all(_is_placeholder(statement) for statement in body):
        return False
    if isinstance(body[-1], ast.Raise) or _never_returns(body[-1]):
        return False
    return not any(isinstance(n, ast.Return) for n in _own_nodes(body))


def _returns_a_value(code: CodeType) -> bool:
    """A return of something other than the constant None, read from the bytecode."""
    previous = None
    for instruction in dis.get_instructions(code):
        if instruction.opname == "RETURN_VALUE" and not (
            previous is not None and previous.opname == "LOAD_CONST" and previous.argval is None
        ):
            return True
        previous = instruction
    return False


#: calls that end a function without returning: ``pytest.skip(...)``, ``sys.exit(...)``
_ENDINGS = frozenset({"fail", "skip", "xfail", "exit", "_exit", "abort", "quit"})
_NO_RETURN = frozenset({"NoReturn", "Never"})


def _never_returns(statement: ast.stmt) -> bool:
    """A last statement that ends the function without returning, as ``raise`` does."""
    if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
        return False
    function = statement.value.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    return name in _ENDINGS


def _is_placeholder(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and statement.value.value is Ellipsis
    )


def _own_nodes(body: list[ast.stmt]) -> list[ast.AST]:
    """Every node of a function body, without those of functions or classes nested in it."""
    found: list[ast.AST] = []
    nested = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    stack: list[ast.AST] = [n for n in body if not isinstance(n, nested)]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(n for n in ast.iter_child_nodes(node) if not isinstance(n, nested))
    return found
