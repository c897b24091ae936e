"""AST-normalised source of task classes.

Source-change detection must ignore edits that cannot change a result:
comments, blank lines, formatting and docstrings.  Parsing and unparsing the
class body removes all of those, so only the code itself is compared.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from functools import cache


def normalize_source(text: str) -> str:
    """Code with comments, formatting and docstrings removed."""
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
    return ast.unparse(tree)


@cache
def class_source(cls: type) -> str | None:
    """The normalised source of ``cls``, or None where Python cannot find it.

    Classes typed at an interactive prompt or rebuilt from a pickle have no
    source file; they are then never considered changed.
    """
    try:
        text = inspect.getsource(cls)
    except (OSError, TypeError):
        return None
    try:
        return normalize_source(text)
    except SyntaxError:
        return None


def source_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
