"""Source normalised for digests: no docstrings, no pytest metadata, one text per definition.

Comments and formatting vanish when the code is parsed and unparsed;
docstrings, ``@pytest.mark.*`` / ``@mark.*`` decorators and ``pytestmark``
assignments are removed, so they never count as code (and names used only
in them, such as ``GENS`` in ``parametrize("g", range(GENS))``, are not
followed).  A definition is summarised once per process: its text, the
dotted names it reads and the imports inside it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class Summary:
    """What the digest needs of one definition or statement."""

    text: str
    #: dotted names read: ``helper``, ``module.CONSTANT``, ``Other.method``
    references: tuple[tuple[str, ...], ...]
    #: ``import`` statements inside it (names imported where they are used)
    imports: tuple[ast.Import | ast.ImportFrom, ...]
    #: modules it imports by name when it runs (``importlib.import_module(...)``,
    #: ``__import__(...)``): the name when it is a constant, None when it is computed
    dynamic_imports: tuple[str | None, ...] = ()


def summarize(node: ast.AST) -> Summary:
    """The summary of a node of a tree that went through ``strip_in_place``."""
    stripped = node
    references = tuple(dict.fromkeys(tuple(p) for p in _references(stripped)))
    imports = tuple(n for n in ast.walk(stripped) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return Summary(ast.unparse(stripped), references, imports, tuple(_dynamic_imports(stripped)))


#: callables that import a module named by a string
_IMPORTERS = frozenset({"import_module", "__import__"})


def _dynamic_imports(tree: ast.AST) -> Iterator[str | None]:
    """The modules a call imports by name: the constant name, or None when it is computed."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called not in _IMPORTERS:
            continue
        first = node.args[0] if node.args else None
        relative = any(k.arg == "package" for k in node.keywords) or len(node.args) > 1
        if (
            isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and not first.value.startswith(".")
            and (called == "__import__" or not relative)
        ):
            yield first.value
        else:
            yield None


def _is_mark(decorator: ast.expr) -> bool:
    """``@pytest.mark.x``, ``@pytest.mark.x(...)``, ``@mark.x(...)``: pytest metadata."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    path: list[str] = []
    while isinstance(target, ast.Attribute):
        path.append(target.attr)
        target = target.value
    if not isinstance(target, ast.Name):
        return False
    path.append(target.id)
    path.reverse()
    return path[:2] == ["pytest", "mark"] or (path[0] == "mark" and len(path) > 1)


def _is_pytestmark(statement: ast.stmt) -> bool:
    targets: list[ast.expr] = []
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
        targets = [statement.target]
    return any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets)


def strip_in_place(node: ast.AST) -> None:
    """Remove docstrings and pytest metadata from a whole parsed file (once: no copies)."""
    for inner in ast.walk(node):
        if isinstance(inner, _DEFS):
            inner.decorator_list = [d for d in inner.decorator_list if not _is_mark(d)]
            body = [s for s in inner.body if not _is_pytestmark(s)]
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                body = body[1:]
            inner.body = body or [ast.Pass()]


def _references(tree: ast.AST) -> Iterator[list[str]]:
    """Dotted names read by the code: ``helper``, ``module.CONSTANT``, ``Other.method``."""
    # The name under ``module.attr`` is not read bare: a bare user module (passed to
    # ``getattr``, say) counts whole, one read by attributes only by what they reach.
    chain_bases: set[int] = set()
    for node in ast.walk(tree):  # breadth first: a chain before the name at its base
        if id(node) in chain_bases:
            continue  # a part of a longer chain, already yielded
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            path: list[str] = []
            inner: ast.expr = node
            while isinstance(inner, ast.Attribute):
                path.append(inner.attr)
                inner = inner.value
                chain_bases.add(id(inner))
            if isinstance(inner, ast.Name):
                yield [inner.id, *reversed(path)]
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            yield [node.id]
