"""Cached tasks of a ``--taskproc-verify`` run: recomputed aside, compared, never stored.

A selected task planned fresh is recomputed by ``provenance.verify_task`` in
a scratch folder, reading its upstream values from the cache, and the new
value is compared with the cached one; nothing is written in the cache, not
even a record or an id.  Stale tasks are computed as in any run and are not
verified: there is no earlier value to compare with.

Without an executor each item verifies its task in the pytest process (or
xdist worker) when it runs, so ``-n`` spreads verifications over workers.
With one, every fresh selected task is submitted to it when the run starts,
so they run side by side with the stale graph, and each item waits for its
own.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, TypeAlias

import pytest

from ..graph import NodeKey
from ..provenance import Status, verify_task_blob, verify_task_timed
from .collect import TaskItem
from .options import Options
from .plan import PLAN, RunPlan

#: what a pool sends back: status, difference, same bytes, seconds
Answer: TypeAlias = "tuple[str, str | None, bool, float]"


@dataclass(frozen=True)
class Checked:
    """What verifying one item's task found."""

    status: Status
    #: what differs (not reproducible), or why it could not be verified
    difference: str | None
    #: recomputed to the very bytes cached (else: an equal value, pickled differently)
    same_bytes: bool
    seconds: float

    @classmethod
    def from_answer(cls, answer: Answer) -> Checked:
        status, difference, same_bytes, seconds = answer
        return cls(Status(status), difference, same_bytes, seconds)


class Verifier:
    """Verifications of one pytest process: submitted up front to an executor, or made inline."""

    def __init__(self, config: pytest.Config, options: Options) -> None:
        self.options = options
        self.plan: RunPlan = config.stash[PLAN]
        self.pending: dict[NodeKey, Future[Answer]] = {}
        config.stash[VERIFIER] = self

    # Not tryfirst: the plan's own runtestloop hook (tryfirst) has planned by now.
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        plan = self.plan
        if plan.run is None or self.options.worker_id is not None:
            return  # no executor (planned at the first item), or an xdist worker
        executor = plan.executor()
        if executor is None:
            return
        for item in plan.collection.selected:
            state = plan.state(item.key)
            if state is None or state.stale or plan.mark_skip(item.key) is not None:
                continue
            self.pending[item.key] = _submit(executor, item.task, self.options)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """-x, --maxfail, Ctrl+C: verifications not yet started are dropped."""
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()

    def check(self, item: TaskItem) -> Checked:
        """Verify the item's task: its submitted verification, or one made now."""
        future = self.pending.pop(item.key, None)
        if future is None:
            executor = self.plan.executor()
            if executor is None:
                return Checked.from_answer(verify_task_timed(item.task, self.options.cache_root))
            future = _submit(executor, item.task, self.options)
        return Checked.from_answer(future.result())

    def discard(self, item: TaskItem) -> None:
        """The item's task is computed after all (its result was damaged): no verification."""
        future = self.pending.pop(item.key, None)
        if future is not None:
            future.cancel()


def _submit(executor: Executor, task: Any, options: Options) -> Future[Answer]:
    import cloudpickle  # type: ignore[import-untyped]

    # Pickled here, as the executor's jobs are, so that a process pool or a
    # Dask worker gets the task by value of its arguments and by reference
    # of its class; the answer comes back without the task.
    blob = cloudpickle.dumps(task)
    return executor.submit(verify_task_blob, blob, str(options.cache_root))


VERIFIER = pytest.StashKey[Verifier]()
