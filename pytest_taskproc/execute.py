"""A run: a task graph planned once, then settled target by target, on any executor.

:class:`Run` is the one public face of a run, for ``run_graph`` (the
library's ``run_task_graph``) and for the pytest plugin alike: it plans the
graph once, ``settle`` computes what targets still need (recovering inside
from results that another process damaged or changed under it),
``invalidate`` drops a damaged result, and ``outcome`` says what became of
a task.  The pass over the graph itself is the private ``scheduler``.
"""

from __future__ import annotations

import enum
import time
import warnings
from collections.abc import Callable, Container, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import get_store
from .context import Context, cache_root
from .errors import (
    CacheCorruptionWarning,
    CorruptResultError,
    ResultMissingError,
    TaskprocError,
)
from .executors import InlineExecutor
from .freshness import Reason, TaskState, plan
from .graph import NodeKey, TaskGraph
from .inputs import persist_stat_cache
from .job import Outcome, RunSettings
from .ledger import forget_marker
from .ratelimit import ChannelLimiter
from .scheduler import GraphRun, Listener, assign_ids
from .source import contents_settled
from .spec import TaskObject, node_key
from .worker import REPLAN_ERRORS

#: How often one call may plan again after a damaged result or an upstream value
#: that another process changed under it.
MAX_RECOVERIES = 8

__all__ = [
    "InlineExecutor",
    "NodeKey",
    "Outcome",
    "Run",
    "RunSettings",
    "Settled",
    "TaskOutcome",
    "TaskState",
    "run_graph",
]


class Settled(enum.Enum):
    """What became of a task in a run, as far as the run knows now."""

    PENDING = "not settled yet: stale and not run (yet), or waiting to be recovered"
    FRESH = "its value is there: fresh when planned, or found fresh during the run"
    COMPUTED = "computed by this run"
    FAILED = "whatever ended its run_task ended it"
    BLOCKED = "an upstream task failed, or was withheld"


@dataclass(frozen=True)
class TaskOutcome:
    """One task in a run: its kind, its planned state, and what the kind needs."""

    kind: Settled
    state: TaskState
    #: FRESH or COMPUTED: how the value was found or made (None: fresh when planned)
    value: Outcome | None = None
    #: FAILED: what ended the task
    error: BaseException | None = None
    #: BLOCKED: the upstream task in the way, and its failure (None: it was withheld)
    culprit: NodeKey | None = None
    cause: BaseException | None = None


class Run:
    """A task graph planned once, settled target by target on an executor.

    ``executor`` is called the first time a pass has work to submit (a run
    whose tasks are all fresh starts none); without it tasks run inline.
    ``rate_limits`` caps concurrent jobs per channel within this process.
    """

    def __init__(
        self,
        graph: TaskGraph,
        settings: RunSettings,
        *,
        executor: Callable[[], Executor] | None = None,
        rate_limits: Mapping[str, int] | None = None,
        cleared: frozenset[NodeKey] = frozenset(),
    ) -> None:
        self._settings = settings
        self._root = Path(settings.cache_root)
        self._make_executor = executor or InlineExecutor
        self._executor: Executor | None = None
        states = plan(graph, self._root, settings.detect_source_change, cleared)
        stale = [k for k, s in states.items() if s.stale]
        # A table that cannot grow fails its tasks when a pass reaches them.
        assign_ids(states, stale)
        #: how many tasks were stale when planned
        self.stale_count = len(stale)
        #: seconds spent in passes that had tasks to settle
        self.seconds = 0.0
        self._limiter = ChannelLimiter(rate_limits)
        self._pass = GraphRun(graph, states, self._lazy_executor, settings, self._limiter)

    # -- reading ----------------------------------------------------------------------------
    def state(self, node: NodeKey) -> TaskState:
        """The task's planned state (as recovered, if it was)."""
        return self._pass.states[node]

    def task(self, node: NodeKey) -> TaskObject:
        return self._pass.graph.tasks[node]

    def task_classes(self) -> set[type]:
        return {type(task) for task in self._pass.graph.tasks.values()}

    @property
    def todo(self) -> int:
        """How many tasks the latest pass set out to settle."""
        return self._pass.size

    def counts(self) -> dict[str, int]:
        """Tasks computed by this run, per class of the graph (0 for those it did not run)."""
        classes = sorted({name for name, _ in self._pass.graph.tasks})
        return {**dict.fromkeys(classes, 0), **self._pass.ran}

    def outcome(self, node: NodeKey) -> TaskOutcome:
        """What became of the task in this run so far."""
        sched = self._pass
        state = sched.states[node]
        value = sched.outcomes.get(node)
        if value is not None:
            kind = Settled.COMPUTED if value.computed else Settled.FRESH
            return TaskOutcome(kind, state, value=value)
        error = sched.failed.get(node)
        if error is not None:
            if isinstance(error, REPLAN_ERRORS):
                return TaskOutcome(Settled.PENDING, state)  # to be recovered
            return TaskOutcome(Settled.FAILED, state, error=error)
        culprit = sched.blocked.get(node)
        if culprit is not None:
            cause = sched.failed.get(culprit)
            if isinstance(cause, REPLAN_ERRORS):
                return TaskOutcome(Settled.PENDING, state)
            return TaskOutcome(Settled.BLOCKED, state, culprit=culprit, cause=cause)
        if not state.stale:
            return TaskOutcome(Settled.FRESH, state)
        return TaskOutcome(Settled.PENDING, state)

    # -- settling ---------------------------------------------------------------------------
    def settle(
        self,
        targets: Iterable[NodeKey] | None = None,
        *,
        keep_going: bool = False,
        withheld: Container[NodeKey] = (),
        listener: Listener | None = None,
    ) -> None:
        """Compute what ``targets`` (default: every task) still need; failures are recorded.

        Without ``keep_going`` the first failure stops submitting more.  Tasks
        in ``withheld``, and what is downstream of them, are not run.  A
        result that another process damaged or changed under this run is
        recovered from here: its part of the graph is planned again and run.
        What a task's failure was is read with ``outcome``; what this raises
        is the run's own breakdown (an executor that cannot start, say).
        """
        __tracebackhide__ = True
        wanted = None if targets is None else list(targets)
        self._timed(self._pass, wanted, keep_going, withheld, listener)
        for _ in range(MAX_RECOVERIES):
            broken = self._broken(wanted)
            if not broken:
                return
            self._recover(broken, keep_going, withheld, listener)
        names = ", ".join(repr(self.task(n)) for n in self._broken(wanted)[:3])
        raise CorruptResultError(
            f"{names}: cached results kept coming back damaged or changed by another process "
            f"after {MAX_RECOVERIES} attempts; is something else writing to the cache?"
        )

    def value(self, node: NodeKey) -> Any:
        """Settle the task and load its value; raises whatever ended it or its upstream."""
        __tracebackhide__ = True
        self.settle([node])
        self._raise_failure(node)
        state = self.state(node)
        assert state.task_id is not None
        try:
            return state.store.load_value(state.task_id, state.spec.key)[0]
        except CorruptResultError as exc:
            discard_corrupt(self._root, exc)
        except ResultMissingError:
            pass  # cleared by another process since: computed again, as clearing promises
        self.invalidate(node, None)
        self.settle([node])  # recovers again, if it has to
        self._raise_failure(node)
        state = self.state(node)
        assert state.task_id is not None
        return state.store.load_value(state.task_id, state.spec.key)[0]

    def cancel(self) -> None:
        """Stop the pass under way (from any thread): nothing more starts."""
        self._pass.cancel()

    def abandon(self, node: NodeKey, error: BaseException) -> bool:
        """Give up on the task's work under way (from any thread); False: it was settled.

        For a caller whose wait for the task was ended by ``error`` (a
        pytest-timeout timeout): the running tasks of its chain (or, if none
        runs, the task itself) fail with ``error`` at once, are stopped where
        they run, and keep nothing; what is downstream of them is blocked.
        """
        return self._pass.abandon(node, error)

    def end_stragglers(self) -> None:
        """End the pool processes of tasks given up on that did not stop when asked."""
        self._pass.end_stragglers()

    # -- damage and failures ---------------------------------------------------------------
    def damage(self, node: NodeKey) -> str | None:
        """What is wrong with a fresh task's stored bytes (None: they load as recorded)."""
        state = self.state(node)
        if state.record is None or state.task_id is None:
            return None
        problem: str | None = state.store.planned_value_problem(state.task_id, state.record)
        return problem

    def invalidate(self, node: NodeKey, problem: str | None) -> None:
        """Drop a damaged result (warning with ``problem``); what used it is judged again."""
        sched = self._pass
        state = sched.states[node]
        if problem is not None:
            warnings.warn(
                CacheCorruptionWarning(f"{problem}; recomputing {state.task!r}"), stacklevel=3
            )
            assert state.task_id is not None
            state.store.discard_result(state.task_id)
        state.reason, state.record = Reason.DAMAGED, None
        sched.forget_value(node)
        stack = [node]
        while stack:
            for down in sched.graph.downstream(stack.pop()):
                there = sched.states[down]
                outcome = sched.outcomes.get(down)
                if (there.stale and outcome is None) or (outcome is not None and outcome.computed):
                    continue  # to be computed anyway, or computed in this run from planned values
                there.reason = Reason.UPSTREAM_STALE
                sched.forget_value(down)
                stack.append(down)

    def forget_failure(self, node: NodeKey) -> None:
        """Let a failed task run again (a rerun of its item), in this process and the run's."""
        self._pass.forget(node)
        state = self.state(node)
        failure_dir = self._settings.failure_dir
        if state.task_id is not None and failure_dir is not None:
            forget_marker(failure_dir, state.store.name, state.task_id)

    def forget_failures_upstream(self, node: NodeKey) -> None:
        """A rerun of the task's item: it and its upstream tasks that failed (or were in
        the way) in this run are settled again, since another process may since have
        rerun them successfully; the run's markers of those failures go too."""
        sched = self._pass
        seen = {node}
        stack = [node]
        while stack:
            current = stack.pop()
            if current in sched.failed or current in sched.blocked:
                self.forget_failure(current)
                sched.forget_value(current)
            for up in sched.graph.upstream(current):
                if up not in seen:
                    seen.add(up)
                    stack.append(up)

    # -- inside ----------------------------------------------------------------------------
    def _lazy_executor(self) -> Executor:
        if self._executor is None:
            self._executor = self._make_executor()
        return self._executor

    def _timed(
        self,
        sched: GraphRun,
        targets: list[NodeKey] | None,
        keep_going: bool,
        withheld: Container[NodeKey],
        listener: Listener | None,
    ) -> None:
        __tracebackhide__ = True
        start = time.perf_counter()
        try:
            sched.run(targets, keep_going=keep_going, withheld=withheld, listener=listener)
        finally:
            if sched.size:
                self.seconds += time.perf_counter() - start

    def _broken(self, targets: list[NodeKey] | None) -> list[NodeKey]:
        """The targets held up by a result damaged or changed under this run."""
        sched = self._pass
        replan = {n for n, e in sched.failed.items() if isinstance(e, REPLAN_ERRORS)}
        if not replan:
            return []
        nodes = sched.graph.order if targets is None else targets
        return [n for n in nodes if n in replan or sched.blocked.get(n, None) in replan]

    def _recover(
        self,
        broken: list[NodeKey],
        keep_going: bool,
        withheld: Container[NodeKey],
        listener: Listener | None,
    ) -> None:
        """Plan the broken targets' graph afresh and run it; take what it found.

        Rare (another session recomputed or damaged an upstream result while
        this one ran), so planning that part of the graph again is affordable.
        """
        __tracebackhide__ = True
        sched = self._pass
        for node, error in list(sched.failed.items()):
            if isinstance(error, REPLAN_ERRORS):
                sched.forget(node)
                if isinstance(error, CorruptResultError):
                    discard_corrupt(self._root, error)
        graph = TaskGraph([self.task(n) for n in broken])
        states = plan(graph, self._root, self._settings.detect_source_change)
        part = GraphRun(graph, states, self._lazy_executor, self._settings, self._limiter)
        self._timed(part, None, keep_going, withheld, None)
        sched.adopt(part)
        if listener is not None:
            for node in graph.order:
                if self.outcome(node).kind is not Settled.PENDING:
                    listener(node)

    def _raise_failure(self, node: NodeKey) -> None:
        __tracebackhide__ = True
        outcome = self.outcome(node)
        failures = self._pass.failures
        if outcome.kind in (Settled.FAILED, Settled.BLOCKED) and failures:
            raise failures[0][1]  # the first of the pass, as it happened
        if outcome.error is not None:
            raise outcome.error
        if outcome.cause is not None:
            raise outcome.cause
        if outcome.kind is Settled.PENDING:
            raise TaskprocError(f"{self.task(node)!r} was not computed: the run was stopped")


def run_graph(
    task: TaskObject,
    *,
    executor: Executor | None,
    max_workers: int | None,
    rate_limits: Mapping[str, int] | None,
    detect_source_change: bool | None,
    show_progress: bool,
) -> tuple[Any, dict[str, Any]]:
    """Make ``task`` and its upstream fresh; return its result and per-class run counts."""
    if executor is not None and max_workers is not None:
        raise ValueError("run_graph: give either executor or max_workers, not both")
    detect = Context.detect_source_change if detect_source_change is None else detect_source_change
    own: list[Executor] = []

    def start() -> Executor:
        if executor is not None:
            return executor
        own.append(Context.get_executor(max_workers))
        return own[0]

    settings = RunSettings(
        str(cache_root()), detect_source_change=detect, show_progress=show_progress
    )
    run = Run(TaskGraph([task]), settings, executor=start, rate_limits=rate_limits)
    try:
        result = run.value(node_key(task))
    finally:
        for pool in own:
            pool.shutdown(wait=True, cancel_futures=True)
        persist_stat_cache(Path(settings.cache_root))  # what planning hashed is kept
        # what the run's own tasks put into digested values is not an edit for the next
        contents_settled(run.task_classes())
    return result, {"stats": run.counts(), "seconds": run.seconds}


def discard_corrupt(cache_root: Path, exc: CorruptResultError) -> None:
    """Warn about a damaged result and drop it, so the next plan recomputes it."""
    warnings.warn(CacheCorruptionWarning(f"{exc}; recomputing it"), stacklevel=3)
    store = get_store(cache_root, exc.task_name)
    task_id = store.known_id(exc.task_key)
    if task_id is not None:
        store.discard_result(task_id)
