"""One item's task: looked up in the run's plan, waited for or computed now; the verdict on it.

``decide`` is what an item runs.  A task planned fresh is checked (its
stored bytes must still load) and found fresh; otherwise the item waits for
the background pass, or computes what its task still needs now, through the
run's one pass over the planned graph.  Only when another process changed or
damaged an upstream result under this run is the item's own graph planned
again (``_alone``).
"""

from __future__ import annotations

import enum
import time
import warnings
from dataclasses import dataclass
from typing import Any

from .. import freshness
from ..errors import CacheCorruptionWarning, CorruptResultError, TaskprocError
from ..execute import MAX_RECOVERIES, InlineExecutor, discard_corrupt
from ..freshness import Reason, TaskState
from ..graph import NodeKey, TaskGraph
from ..ratelimit import ChannelLimiter
from ..scheduler import GraphRun
from ..worker import REPLAN_ERRORS, Outcome
from .collect import TaskItem
from .plan import RunPlan
from .report import ProgressLine
from .verify import VERIFIER, Checked

#: Seconds an item waits for its task before the progress line appears.
PROGRESS_AFTER_SECONDS = 0.5


class Fate(enum.Enum):
    """The four things that can become of an item's task; the value says what it means."""

    FRESH = "its result was there already (before the run, or made earlier in it)"
    COMPUTED = "computed for this item"
    FAILED = "whatever ended its run_task ended it"
    BLOCKED = "an upstream task failed, or is skipped by its marks"


@dataclass
class Verdict:
    """One item's task in this run, for ``runtest`` to turn into pytest's outcome."""

    fate: Fate
    state: TaskState
    #: FRESH or COMPUTED: how the value was found or made (None: fresh when planned)
    outcome: Outcome | None = None
    #: FAILED: what ended the task
    error: BaseException | None = None
    #: BLOCKED: the upstream task in the way, and its failure (None: skipped by its marks)
    culprit: NodeKey | None = None
    culprit_task: Any = None
    cause: BaseException | None = None
    #: an upstream value changed or damaged under this run: plan again, do not report
    replan: BaseException | None = None
    #: tasks computed only as upstream of the selection meanwhile: (count, seconds)
    upstream: tuple[int, float] = (0, 0.0)
    #: FRESH in a ``--taskproc-verify`` run: what recomputing the cached task found
    verification: Checked | None = None

    def made_before(self, run_id: str) -> bool:
        """FRESH: the result was there before this run (not made by it, here or elsewhere)."""
        outcome = self.outcome
        if outcome is not None:
            return not outcome.computed and outcome.run != run_id
        record = self.state.record
        return record is None or record.made.get("run") != run_id


def read_verdict(run: GraphRun, item: TaskItem, earlier: bool) -> Verdict:
    """The verdict on ``item`` from what ``run`` knows; ``earlier``: settled before this item."""
    key = item.key
    state = run.states[key]
    outcome = run.outcomes.get(key)
    if outcome is not None:
        fate = Fate.COMPUTED if outcome.computed and not earlier else Fate.FRESH
        return Verdict(fate, state, outcome=outcome)
    error = run.failed.get(key)
    if error is not None:
        if isinstance(error, REPLAN_ERRORS):
            return Verdict(Fate.FAILED, state, replan=error)
        return Verdict(Fate.FAILED, state, error=error)
    culprit = run.blocked.get(key)
    if culprit is not None:
        cause = run.failed.get(culprit)
        if isinstance(cause, REPLAN_ERRORS):
            return Verdict(Fate.BLOCKED, state, replan=cause)
        task = run.graph.tasks[culprit]
        return Verdict(Fate.BLOCKED, state, culprit=culprit, culprit_task=task, cause=cause)
    if not state.stale:
        return Verdict(Fate.FRESH, state)
    stopped = TaskprocError(f"{item.task!r} was not computed: the run was stopped before it")
    return Verdict(Fate.FAILED, state, error=stopped)


def decide(plan: RunPlan, item: TaskItem, rerun: bool) -> Verdict:
    """What became of the item's task; with ``--taskproc-verify``, whether it reproduces.

    A task whose result was there before this run is verified, also one
    planned stale only because an upstream task was, when recomputing that
    gave the same value (early cutoff); a task computed in this run is not.
    """
    __tracebackhide__ = True
    verdict = _settle(plan, item, rerun)
    verifier = plan.config.stash.get(VERIFIER, None)
    if verifier is not None:
        if verdict.fate is Fate.FRESH and verdict.made_before(plan.options.run_id):
            verdict.verification = verifier.check(item)
        else:
            verifier.discard(item)
    return verdict


def _settle(plan: RunPlan, item: TaskItem, rerun: bool) -> Verdict:
    """What became of the item's task: looked up, waited for or computed now."""
    __tracebackhide__ = True
    plan.ensure_planned()
    plan.reissue_warnings()
    key = item.key
    state = plan.states[key]
    if rerun:
        plan.stop(cancel=False)
        plan.forget_failure(key)
    if not state.stale:
        problem = _damage(state)
        if problem is None:
            return Verdict(Fate.FRESH, state)
        _invalidate(plan, key, problem)
    elif plan.background is not None:
        return _wait(plan, item)
    return _compute(plan, item)


def _wait(plan: RunPlan, item: TaskItem) -> Verdict:
    """Wait for the background pass to settle the item's task, showing how far it is."""
    __tracebackhide__ = True
    run = plan.run
    assert run is not None
    key = item.key
    progress = ProgressLine(plan.config)
    start = time.monotonic()
    with plan.changed:
        while not run.settled(key):
            thread = plan.background
            if thread is None or not thread.is_alive():
                break
            plan.changed.wait(timeout=0.2)
            waited = time.monotonic() - start
            if waited > PROGRESS_AFTER_SECONDS:
                progress.update(_progress_text(plan, run, item, waited))
    progress.finish(_progress_text(plan, run, item, time.monotonic() - start, done=True))
    if not run.settled(key):
        return _compute(plan, item)  # the pass ended without it (it broke, or was stopped)
    return _judged(plan, item, read_verdict(run, item, earlier=False))


def _progress_text(
    plan: RunPlan, run: GraphRun, item: TaskItem, waited: float, done: bool = False
) -> str:
    last = plan.last_settled
    named = "" if last is None else f"; last done: {run.graph.tasks[last]!r}"
    what = "has its result" if done else "waits for its task"
    return (
        f"[taskproc] {plan.settled_count}/{plan.stale_count} stale tasks done; "
        f"{item.name} {what} ({waited:.1f} s){named}"
    )


def _compute(plan: RunPlan, item: TaskItem) -> Verdict:
    """Compute what the item's task still needs, here (or on the executor), and see."""
    __tracebackhide__ = True
    run = plan.item_run()
    key = item.key
    if key in run.outcomes:  # done earlier, as another item's upstream
        return _judged(plan, item, read_verdict(run, item, earlier=True))
    progress = ProgressLine(plan.config)
    start = time.monotonic()
    upstream_done = 0

    def settled(node: NodeKey) -> None:
        nonlocal upstream_done
        plan.on_settled(node)
        if node != key and node not in plan.selected:
            upstream_done += 1
            if time.monotonic() - start < PROGRESS_AFTER_SECONDS:
                return  # quick work needs no word
            progress.update(
                f"[taskproc] {item.name}: {upstream_done} upstream tasks done of "
                f"{run.size - 1}; last done: {run.graph.tasks[node]!r}"
            )

    run.on_settled = settled
    try:
        run.run([key], withheld=plan.withheld)
    except KeyboardInterrupt:
        raise
    except BaseException:
        pass  # recorded in run.failed: the verdict reads it from there
    finally:
        run.on_settled = plan.on_settled
    elapsed = time.monotonic() - start
    progress.finish(
        f"[taskproc] {item.name}: {upstream_done} upstream tasks done in {elapsed:.1f} s"
    )
    return _judged(plan, item, read_verdict(run, item, earlier=False))


def _judged(plan: RunPlan, item: TaskItem, verdict: Verdict) -> Verdict:
    """The verdict, unless a changed or damaged upstream value calls for a fresh plan."""
    __tracebackhide__ = True
    if verdict.replan is not None:
        verdict = _alone(plan, item, verdict.replan)
    verdict.upstream = plan.take_upstream()
    return verdict


def _alone(plan: RunPlan, item: TaskItem, error: BaseException) -> Verdict:
    """Plan the item's own graph afresh and run it: another process changed a result under us.

    Rare (another session recomputed or damaged an upstream result while this
    one ran), so planning this item's graph alone is affordable.
    """
    __tracebackhide__ = True
    shared = plan.item_run()
    for node, failure in list(shared.failed.items()):
        if isinstance(failure, REPLAN_ERRORS):
            shared.forget(node)
    graph = TaskGraph([item.task])
    options = plan.options
    for _ in range(MAX_RECOVERIES):
        if isinstance(error, CorruptResultError):
            discard_corrupt(options.cache_root, error)
        states = freshness.plan(graph, options.cache_root, options.detect_source_change)
        run = GraphRun(
            graph,
            states,
            options.cache_root,
            plan.executor() or InlineExecutor(),
            ChannelLimiter(None),
            detect_source_change=options.detect_source_change,
            echo=options.echo,
            slots=plan.slots,
            failure_dir=str(options.failure_dir),
            run_id=options.run_id,
        )
        try:
            run.run(withheld=plan.withheld)
        except KeyboardInterrupt:
            raise
        except BaseException:
            pass
        verdict = read_verdict(run, item, earlier=False)
        if verdict.replan is None:
            for node, outcome in run.outcomes.items():
                shared.learn(node, outcome)
            plan.states[item.key].task_id = states[item.key].task_id
            return verdict
        error = verdict.replan
    raise CorruptResultError(f"{item.task!r}: upstream results kept coming back damaged")


# -- damaged results ------------------------------------------------------------------------
def _damage(state: TaskState) -> str | None:
    """What is wrong with a fresh task's stored bytes: ``cached`` promises a value that loads."""
    if state.record is None or state.task_id is None:
        return None
    problem: str | None = state.store.verify_value(state.task_id, state.record)
    return problem


def _invalidate(plan: RunPlan, key: NodeKey, problem: str) -> None:
    """Drop a damaged result; the tasks planned fresh downstream of it are judged again."""
    run = plan.item_run()
    state = plan.states[key]
    warnings.warn(CacheCorruptionWarning(f"{problem}; recomputing {state.task!r}"), stacklevel=3)
    assert state.task_id is not None
    state.store.discard_result(state.task_id)
    state.reason, state.record = Reason.DAMAGED, None
    run.forget_value(key)
    stack = [key]
    while stack:
        for down in run.graph.downstream(stack.pop()):
            there = plan.states[down]
            outcome = run.outcomes.get(down)
            if (there.stale and outcome is None) or (outcome is not None and outcome.computed):
                continue  # to be computed anyway, or computed in this run from the plan's values
            there.reason = Reason.UPSTREAM_STALE
            run.forget_value(down)
            stack.append(down)
