"""The environment a record names: installed distributions a task imports, and the git commit.

A reviewer asking "which code made this number?" needs more than the task's
code digest: the versions of the libraries its code calls, and the commit of
the project it lives in.  Both are found cheaply and cached for the life of
the process: the distributions from ``sys.modules`` and the table of
installed distributions (``installed``, read once), the commit from
one ``git status`` per repository and run.  Each process that computes a task names
its own environment, so a Dask worker on another machine records the
versions and the checkout that really ran the task.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .installed import installed, version_of
from .sourcefiles import nested_codes

#: Always recorded: what wrote the record and what pickled the value.
ALWAYS = ("pytest-taskproc", "cloudpickle")
#: A task module's imports are followed through at most this many user modules.
MAX_USER_MODULES = 200
GIT_TIMEOUT = 10.0

_lock = threading.Lock()


def _top(name: object) -> str | None:
    return name.partition(".")[0] if isinstance(name, str) and name else None


def _names_used_by(value: Any) -> Iterator[str]:
    """Module names a module-level value or class attribute points into."""
    if isinstance(value, types.ModuleType):
        yield value.__name__
        return
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    module = getattr(value, "__module__", None)
    if not isinstance(module, str):
        module = type(value).__module__
    yield module
    code = getattr(value, "__code__", None)
    if isinstance(code, types.CodeType):
        # names its code uses, nested functions included (``import x`` inside it too)
        for nested in nested_codes(code):
            yield from nested.co_names


def _is_user_module(name: str) -> bool:
    """A module of the project: not built in, not the standard library, not installed."""
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return False
    return top not in installed().tops


def _imports_of_module(name: str) -> frozenset[str]:
    """Top-level names of the installed packages a user module and the user modules it
    uses import (followed transitively, at most ``MAX_USER_MODULES`` of them).

    Cached while the module keeps its number of globals: a notebook cell that
    imports something more in ``__main__`` is seen by the next record.
    """
    module = sys.modules.get(name)
    size = len(vars(module)) if module is not None else 0
    # The module itself in the key, not its id(): with a read audit on, every id() call is an
    # audit event, and a module object compares by identity all the same.
    return _imports_of_module_cached(name, module, size)


@functools.lru_cache(maxsize=1024)
def _imports_of_module_cached(name: str, _module: object, _size: int) -> frozenset[str]:
    found: set[str] = set()
    seen: set[str] = set()
    todo = [name]
    while todo and len(seen) < MAX_USER_MODULES:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        module = sys.modules.get(current)
        if module is None:
            continue
        for value in list(vars(module).values()):
            values = [value]
            if isinstance(value, type) and getattr(value, "__module__", None) == current:
                values += list(vars(value).values())  # a class's methods import too
            for item in values:
                for used in _names_used_by(item):
                    top = _top(used)
                    if top is None or top == "builtins":
                        continue
                    if _is_user_module(used):
                        # A user module reached by name is followed as a whole.
                        if used in sys.modules and used not in seen:
                            todo.append(used)
                    elif top in installed().tops and top in sys.modules:
                        found.add(top)
    return frozenset(found)


def distributions_for(cls: type | None) -> dict[str, str | None]:
    """Versions of the installed distributions a task class's modules import.

    Found from the class's module and the user modules it reaches: modules
    imported at module level, classes and functions imported from packages,
    and modules imported inside functions and methods; numpy whenever it is
    loaded, since pickled values depend on it.  Sorted by name.
    """
    # Asked for every record: worked out once per class while its module keeps
    # its number of globals (as _imports_of_module is) and numpy stays as loaded.
    module = sys.modules.get(cls.__module__) if cls is not None else None
    size = len(vars(module)) if module is not None else 0
    return dict(_distributions_for(cls, module, size, "numpy" in sys.modules))


@functools.lru_cache(maxsize=1024)
def _distributions_for(
    cls: type | None, _module: object, _size: int, _numpy: bool
) -> tuple[tuple[str, str | None], ...]:
    packages: dict[str, str | None] = {name: version_of(name) for name in ALWAYS}
    if "numpy" in sys.modules:
        packages["numpy"] = version_of("numpy")
    if cls is not None:
        tops = set(_imports_of_module(cls.__module__))
        for value in vars(cls).values():
            for used in _names_used_by(value):
                top = _top(used)
                if top and not _is_user_module(used) and top in sys.modules:
                    tops.add(top)
        table = installed().tops
        for top in tops:
            for distribution in table.get(top, ()):
                packages[distribution] = version_of(distribution)
    return tuple(sorted(packages.items(), key=lambda kv: kv[0].lower()))


# -- git ---------------------------------------------------------------------------------------
def _repository_of(directory: Path) -> Path | None:
    """The top of the git working tree holding ``directory``, None outside one."""
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():  # a directory, or a file in a worktree
            return candidate
    return None


_git_states: dict[tuple[Path, str | None], dict[str, Any] | None] = {}
_directory_states: dict[tuple[str, str | None], dict[str, Any] | None] = {}


def git_state(directory: str | os.PathLike[str], run: str | None = None) -> dict[str, Any] | None:
    """``{"commit": SHA, "dirty": bool}`` of the repository holding ``directory``.

    One ``git status`` per repository, run and process (a notebook's next run
    sees a new commit); None when the directory is in no repository, git is
    missing or fails.  ``dirty`` means a tracked file differs from the commit
    (untracked files do not count, as for ``git describe --dirty``: a data
    folder beside the code must not make every record dirty).
    """
    # Asked for every record: the folder's repository is looked up once per run.
    asked = (os.fspath(directory), run)
    with _lock:
        if asked in _directory_states:
            return _directory_states[asked]
    repository = _repository_of(Path(directory).resolve())
    state = None if repository is None else _repository_state(repository, run)
    with _lock:
        for old in [k for k in _directory_states if k[1] != run]:
            del _directory_states[old]
        _directory_states[asked] = state
    return state


def _repository_state(repository: Path, run: str | None) -> dict[str, Any] | None:
    key = (repository, run)
    with _lock:
        if key in _git_states:
            return _git_states[key]
    state = _ask_git(repository)
    with _lock:
        for old in [k for k in _git_states if k[1] != run]:
            del _git_states[old]  # an earlier run's answer may be out of date
        _git_states[key] = state
    return state


def _ask_git(repository: Path) -> dict[str, Any] | None:
    # GIT_OPTIONAL_LOCKS=0: status must not take index.lock and fight the user's own git.
    environment = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=repository,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            env=environment,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    commit = None
    dirty = False
    for line in done.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split()[2]
            commit = None if oid == "(initial)" else oid
        elif line and not line.startswith("#"):
            dirty = True
    return {"commit": commit, "dirty": dirty}


def project_directory(cls: type | None) -> str:
    """Where a task class's code lives: its module's folder, else the working directory."""
    module = sys.modules.get(cls.__module__) if cls is not None else None
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return os.getcwd()
    if not os.path.isabs(file):
        return os.path.dirname(os.path.abspath(file))  # depends on the working directory
    return _folder_of(file)


@functools.lru_cache(maxsize=1024)
def _folder_of(file: str) -> str:
    # Asked for every record; normpath, not the file system, so caching it is exact.
    return os.path.dirname(os.path.normpath(file))


def run_environment(directory: str | os.PathLike[str], records: list[Any]) -> dict[str, Any]:
    """The environment of a run, shown once at the top of its manifest.

    The interpreter, the git state of the repository holding ``directory``,
    and the versions installed now of every distribution any of ``records``
    names (each record keeps the versions it was made with).
    """
    import platform

    names: set[str] = set(ALWAYS)
    for record in records:
        made = record.get("made") if isinstance(record, dict) else None
        packages = made.get("packages") if isinstance(made, dict) else None
        if isinstance(packages, dict):
            names.update(name for name in packages if isinstance(name, str))
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": sys.platform,
        "git": git_state(directory),
        "packages": {name: version_of(name) for name in sorted(names, key=str.lower)},
    }
