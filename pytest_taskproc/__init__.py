"""Cached computational experiments as a DAG of tasks, run and reported by pytest."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .context import Context
from .errors import (
    CacheAccessError,
    CorruptResultError,
    JobPrefixError,
    RequirementTypeError,
    ResultMissingError,
    ResultNotPicklableError,
    TaskArgumentError,
    TaskCycleError,
    TaskFailedError,
    TaskprocError,
    UnsetRequirementError,
)
from .requires import Const, Req
from .task import (
    Requires,
    RequiresDict,
    RequiresList,
    Task,
    TaskBase,
    TaskType,
    infer_task_type,
)

try:
    __version__ = version("pytest-taskproc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

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
    "TaskFailedError",
    "TaskType",
    "TaskprocError",
    "UnsetRequirementError",
    "__version__",
    "infer_task_type",
]
