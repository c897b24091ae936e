"""The run's failure record: one marker per failed task, the kind of its end as a field.

A pytest run (all its xdist workers and pool processes) shares one folder
of markers, written under the task's lock: a process that waited for a task
another one saw fail learns of the failure instead of computing it again.
A ``.running`` marker sits next to it while a process computes the task; left
behind, it says that process died computing it.
"""

from __future__ import annotations

import contextlib
import enum
import os
from dataclasses import dataclass

from .atomic import write_text_atomic
from .errors import TaskFailedEarlierError

#: next to a failure marker while a process computes the task; left behind if it dies
RUNNING_SUFFIX = ".running"

__all__ = ["RUNNING_SUFFIX", "Failure", "Kind", "forget_marker", "marker_path", "summarize"]


class Kind(enum.Enum):
    """How the end of a task shows on its item (pytest's outcome exceptions included)."""

    FAILED = "failed"
    SKIPPED = "skipped"
    XFAILED = "xfailed"


#: pytest's outcome exceptions, by class name: the library never imports pytest
_KINDS = {"Skipped": Kind.SKIPPED, "XFailed": Kind.XFAILED}


@dataclass(frozen=True)
class Failure:
    """What ended a task: its kind and ``Type: first line of the message``."""

    kind: Kind
    summary: str

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        if isinstance(error, TaskFailedEarlierError):
            return cls(Kind(error.kind), error.summary)
        return cls(_KINDS.get(type(error).__name__, Kind.FAILED), summarize(error))

    @property
    def detail(self) -> str:
        """The reason of a skip or xfail (no type name); a failure's whole summary."""
        if self.kind is Kind.FAILED:
            return self.summary
        return self.summary.partition(": ")[2]

    def earlier(self, task: object) -> TaskFailedEarlierError:
        """The error of a later attempt at the task in the same run."""
        return TaskFailedEarlierError(
            f"{task!r} failed earlier in this run: {self.summary}", self.summary, self.kind.value
        )

    def write(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_text_atomic(path, f"{self.kind.value}\n{self.summary}")

    @classmethod
    def read(cls, path: str) -> Failure | None:
        try:
            with open(path, encoding="utf-8") as handle:
                kind, _, summary = handle.read().partition("\n")
        except FileNotFoundError:
            return None
        return cls(Kind(kind), summary)


def summarize(error: BaseException) -> str:
    """``Type: first line of the message``, for skip reasons and failure markers."""
    if isinstance(error, TaskFailedEarlierError):
        return error.summary
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def marker_path(failure_dir: str, store_name: str, task_id: int) -> str:
    """Where a failure of the task is recorded for the run."""
    return os.path.join(failure_dir, f"{store_name}.{task_id}")


def forget_marker(failure_dir: str, store_name: str, task_id: int) -> None:
    """A rerun of the task's item computes it afresh: its failure is no longer the run's."""
    marker = marker_path(failure_dir, store_name, task_id)
    for path in (marker, marker + RUNNING_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
