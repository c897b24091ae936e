"""Cached computational experiments as a DAG of tasks, run and reported by pytest.

The names below are loaded on first use (PEP 562): pytest imports this
package for its ``pytest11`` entry point on every run, and a run without
``--taskproc`` must not pay for importing the library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the lazy names below, spelled out for type checkers
    from .context import Context as Context
    from .errors import CacheAccessError as CacheAccessError
    from .errors import CorruptResultError as CorruptResultError
    from .errors import JobPrefixError as JobPrefixError
    from .errors import RequirementTypeError as RequirementTypeError
    from .errors import ResultMissingError as ResultMissingError
    from .errors import ResultNotPicklableError as ResultNotPicklableError
    from .errors import TaskArgumentError as TaskArgumentError
    from .errors import TaskCycleError as TaskCycleError
    from .errors import TaskDefinitionWarning as TaskDefinitionWarning
    from .errors import TaskFailedError as TaskFailedError
    from .errors import TaskprocError as TaskprocError
    from .errors import UnsetRequirementError as UnsetRequirementError
    from .requires import Const as Const
    from .requires import Req as Req
    from .task import Requires as Requires
    from .task import RequiresDict as RequiresDict
    from .task import RequiresList as RequiresList
    from .task import Task as Task
    from .task import TaskBase as TaskBase
    from .task import TaskType as TaskType
    from .task import infer_task_type as infer_task_type
    from .taskgraph import task_graph as task_graph

    __version__: str

_HOMES = {
    "Context": ".context",
    "Const": ".requires",
    "Req": ".requires",
    "Requires": ".task",
    "RequiresDict": ".task",
    "RequiresList": ".task",
    "Task": ".task",
    "TaskBase": ".task",
    "TaskType": ".task",
    "infer_task_type": ".task",
    "task_graph": ".taskgraph",
    "CacheAccessError": ".errors",
    "CorruptResultError": ".errors",
    "JobPrefixError": ".errors",
    "RequirementTypeError": ".errors",
    "ResultMissingError": ".errors",
    "ResultNotPicklableError": ".errors",
    "TaskArgumentError": ".errors",
    "TaskCycleError": ".errors",
    "TaskDefinitionWarning": ".errors",
    "TaskFailedError": ".errors",
    "TaskprocError": ".errors",
    "UnsetRequirementError": ".errors",
}

__all__ = [
    "CacheAccessError",
    "Const",
    "Context",
    "CorruptResultError",
    "JobPrefixError",
    "Req",
    "RequirementTypeError",
    "Requires",
    "RequiresDict",
    "RequiresList",
    "ResultMissingError",
    "ResultNotPicklableError",
    "Task",
    "TaskArgumentError",
    "TaskBase",
    "TaskCycleError",
    "TaskDefinitionWarning",
    "TaskFailedError",
    "TaskType",
    "TaskprocError",
    "UnsetRequirementError",
    "__version__",
    "infer_task_type",
    "task_graph",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("pytest-taskproc")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            value = "0+unknown"
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    else:
        raise AttributeError(f"module 'pytest_taskproc' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
