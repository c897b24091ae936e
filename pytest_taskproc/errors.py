"""Exception hierarchy of pytest-taskproc.

Every error derives from :class:`TaskprocError` and from the builtin it refines,
so ``except TypeError`` keeps working for callers that do not know this package.
All of them are picklable because they cross process pools and xdist workers:
each stores its message as its only argument.
"""

from __future__ import annotations


class TaskprocError(Exception):
    """Root of every error raised by pytest-taskproc."""


class TaskArgumentError(TaskprocError, TypeError):
    """An argument of ``build_task`` cannot be part of a task's identity."""


class UnsetRequirementError(TaskprocError, AttributeError):
    """A requirement slot was declared but ``build_task`` did not fill it."""


class RequirementTypeError(TaskprocError, TypeError):
    """A requirement slot holds something that is neither a task nor a ``Const``."""


class TaskDefinitionError(TaskprocError, TypeError):
    """A task class is defined in a way that cannot work (no ``run_task``, say)."""


class MissingItemError(TaskprocError, LookupError):
    """``task['key']`` names an item the upstream task's result does not have."""


class SlotReadInBuildError(TaskprocError, RuntimeError):
    """A requirement slot was read inside ``build_task``, before any result exists."""


class TaskCycleError(TaskprocError, RecursionError):
    """Tasks require each other in a circle, so none of them can ever run."""


class ResultNotPicklableError(TaskprocError, TypeError):
    """``run_task`` returned a value cloudpickle cannot serialise."""


class CorruptResultError(TaskprocError, ValueError):
    """A cached result could not be read back; it will be recomputed."""

    def __init__(self, message: str, task_name: str = "", task_key: str = "") -> None:
        super().__init__(message, task_name, task_key)
        self.task_name = task_name
        self.task_key = task_key

    def __str__(self) -> str:
        return str(self.args[0])


class CacheAccessError(TaskprocError, OSError):
    """The cache directory cannot be written or read."""


class JobPrefixError(TaskprocError, RuntimeError):
    """A task started through ``job_prefix`` did not come back with a result."""


class TaskFailedError(TaskprocError, RuntimeError):
    """Stands in for an exception from ``run_task`` that could not be pickled."""


class TaskFailedEarlierError(TaskprocError, RuntimeError):
    """A task already failed in this pytest run (perhaps on another worker); not retried."""

    def __init__(self, message: str, summary: str = "", kind: str = "failed") -> None:
        super().__init__(message, summary, kind)
        self.summary = summary
        #: how the item of the task ended: ``failed``, ``skipped`` or ``xfailed``
        self.kind = kind

    def __str__(self) -> str:
        return str(self.args[0])


class ResultMissingError(TaskprocError, FileNotFoundError):
    """A task's result was asked for but is not in the cache."""


class InputMissingError(TaskprocError, FileNotFoundError):
    """A file or directory declared as a task's ``InputFile`` does not exist."""


class UpstreamChangedError(TaskprocError, RuntimeError):
    """An upstream value changed (or vanished) between planning and reading it.

    Another process cleared or recomputed it; the scheduler plans again
    instead of computing from a value the plan did not name.
    """


class PlanMismatchError(TaskprocError, RuntimeError):
    """A worker rebuilt a task that differs from the one the driver planned."""


class ClassNameConflictError(TaskprocError, TypeError):
    """Two different task classes share one module and qualname, hence one cache folder."""


class NotReproducibleError(TaskprocError, AssertionError):
    """A cached task, recomputed from the same upstream values and code, gave another value."""


class RecordError(TaskprocError, ValueError):
    """A record file that is not a record of this format."""


# -- Dask (raised by ``dask_executor``) ------------------------------------------------------
class SchedulerUnreachableError(TaskprocError, ConnectionError):
    """No Dask scheduler answers at the address given."""


class CacheNotSharedError(TaskprocError, OSError):
    """A Dask worker does not see the driver's cache directory."""


class NotImportableError(TaskprocError, TypeError):
    """A task class lives in ``__main__``, which Dask workers cannot import."""


class WorkerLostError(TaskprocError, RuntimeError):
    """The Dask worker running a task died (killed, out of memory) and Dask gave up on it."""


class CacheCorruptionWarning(UserWarning):
    """A cache file was damaged; the affected result is recomputed."""


class TaskDefinitionWarning(UserWarning):
    """A task class that will run but probably not as meant: it caches ``None``.

    A ``UserWarning``, shown by default; turned into an error by ``-W error``
    or ``filterwarnings = error``, which makes the module defining the class
    fail to import, naming the class.
    """


class CodeDigestWarning(UserWarning):
    """Part of a task's code could not be digested: the task counts as changed."""


class SourceEditedWarning(CodeDigestWarning):
    """A file of a task's code was edited after it was imported, and the process does not run
    what it says now (the old code, or functions an autoreloader patched one by one)."""


class UndeclaredInputWarning(UserWarning):
    """A running task read a file that is not declared as its ``InputFile``."""


class TaskCancelled(BaseException):
    """Raised inside a running task that its run gave up on (a timeout ended the item
    waiting for it): the task stops and nothing of it is cached.

    The one exception here that is not a :class:`TaskprocError`: like
    ``asyncio.CancelledError`` it derives from ``BaseException``, so an
    ``except Exception`` in ``run_task`` does not swallow it.
    """
