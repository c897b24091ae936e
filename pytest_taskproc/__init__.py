"""Cached computational experiments as a DAG of tasks, run and reported by pytest.

The public names are loaded on first use (PEP 562): pytest imports this
package for its ``pytest11`` entry point on every run, and a run without
``--taskproc`` must not pay for importing the library.  Each public name is
spelled once, in ``__init__.pyi`` (``from .module import Name as Name``):
type checkers read it there, and the first lookup here reads the same lines
into the table of where each name lives.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any


def _public_names() -> dict[str, str]:
    """Each public name and the module it lives in, from the stub's imports."""
    stub = Path(__file__).with_name("__init__.pyi").read_text(encoding="utf-8")
    return {
        alias.name: "." + (node.module or "")
        for node in ast.parse(stub).body
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }


_homes: dict[str, str] | None = None


def __getattr__(name: str) -> Any:
    global _homes
    if _homes is None:
        _homes = _public_names()
    if name == "__all__":
        value: Any = sorted([*_homes, "__version__"])
    elif name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("pytest-taskproc")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            value = "0+unknown"
    elif name in _homes:
        value = getattr(importlib.import_module(_homes[name], __name__), name)
    else:
        raise AttributeError(f"module 'pytest_taskproc' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    names: list[str] = __getattr__("__all__")
    return sorted({*globals(), *names})
