"""One item's task: looked up in the run's plan, waited for or computed now; the verdict on it.

``decide`` is what an item runs.  A task planned fresh is checked (its
stored bytes must still load) and found fresh; otherwise the item waits for
the background pass, or computes what its task still needs now, through the
run's one ``execute.Run``, which also recovers when another process changed
or damaged an upstream result under this run.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

from ..errors import TaskprocError
from ..execute import NodeKey, Outcome, Run, Settled, TaskOutcome, TaskState
from .collect import TaskItem
from .plan import RunPlan
from .progress import StatusLine, duration
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


_FATES = {
    Settled.FRESH: Fate.FRESH,
    Settled.COMPUTED: Fate.COMPUTED,
    Settled.FAILED: Fate.FAILED,
    Settled.BLOCKED: Fate.BLOCKED,
}


def read_verdict(run: Run, item: TaskItem, earlier: bool) -> Verdict:
    """The verdict on ``item`` from what ``run`` knows; ``earlier``: settled before this item."""
    found: TaskOutcome = run.outcome(item.key)
    if found.kind is Settled.PENDING:
        stopped = TaskprocError(f"{item.task!r} was not computed: the run was stopped before it")
        return Verdict(Fate.FAILED, found.state, error=stopped)
    fate = _FATES[found.kind]
    if fate is Fate.COMPUTED and earlier:
        fate = Fate.FRESH
    culprit_task = None if found.culprit is None else run.task(found.culprit)
    return Verdict(
        fate,
        found.state,
        outcome=found.value,
        error=found.error,
        culprit=found.culprit,
        culprit_task=culprit_task,
        cause=found.cause,
    )


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
    run = plan.ensure_planned()
    plan.reissue_warnings()
    plan.raise_background_error()
    key = item.key
    if rerun:
        plan.stop(cancel=False)
        run.forget_failures_upstream(key)
    state = run.state(key)
    if not state.stale:
        problem = run.damage(key)
        if problem is None:
            return Verdict(Fate.FRESH, state)
        plan.item_run().invalidate(key, problem)
    elif plan.background is not None:
        return _wait(plan, item)
    return _compute(plan, item)


def _wait(plan: RunPlan, item: TaskItem) -> Verdict:
    """Wait for the background pass to settle the item's task, showing how far it is."""
    __tracebackhide__ = True
    run = plan.ensure_planned()
    key = item.key
    # Made only for a wait long enough to show: most items find their task done.
    status: StatusLine | None = None
    start = time.monotonic()
    try:
        with plan.changed:
            while run.outcome(key).kind is Settled.PENDING:
                thread = plan.background
                if thread is None or not thread.is_alive():
                    break
                plan.changed.wait(timeout=0.2)
                waited = time.monotonic() - start
                if waited > PROGRESS_AFTER_SECONDS:
                    if status is None:
                        status = StatusLine(plan.config)
                    status.update(_progress_text(plan, run, item, waited, status.live))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        # A pytest-timeout timeout ended the wait: it ends the task's work under
        # way, as it would inline (outside the lock, which the pass's report needs).
        if not run.abandon(key, exc):
            raise  # settled just now: the item still took too long
        _finish(status, plan, run, item, start)
        return _judged(plan, read_verdict(run, item, earlier=False))
    _finish(status, plan, run, item, start)
    plan.raise_background_error()
    if run.outcome(key).kind is Settled.PENDING:
        return _compute(plan, item)  # the pass ended without it (it was stopped)
    return _judged(plan, read_verdict(run, item, earlier=False))


def _finish(
    status: StatusLine | None, plan: RunPlan, run: Run, item: TaskItem, start: float
) -> None:
    """The progress line's last word, if the wait drew one."""
    if status is not None:
        status.finish(_progress_text(plan, run, item, time.monotonic() - start, False, done=True))


def _progress_text(
    plan: RunPlan, run: Run, item: TaskItem, waited: float, live: bool, done: bool = False
) -> str:
    """Short on a terminal (it shares the line with pytest's); whole in a log."""
    estimate = plan.estimate
    if estimate is not None:
        counted, left = estimate.counted(), estimate.left()
    else:
        counted, left = f"{plan.settled_count}/{plan.stale_count} stale tasks done", ""
    if live:
        return f"[taskproc: {counted}{', ' + left if left else ''}]"
    last = plan.last_settled
    named = "" if last is None else f"; last done: {run.task(last)!r}"
    what = _ended(run, item) if done else "waits for its task"
    return f"[taskproc] {counted}; {item.name} {what} ({waited:.1f} s){named}" + (
        f"; {left}" if left else ""
    )


def _ended(run: Run, item: TaskItem) -> str:
    """What the wait ended with, as the progress line's last word on it."""
    found = run.outcome(item.key)
    if found.kind is Settled.FAILED:
        return f"failed ({type(found.error).__name__})"
    if found.kind is Settled.BLOCKED:
        if found.culprit is None:
            return "is skipped by its marks"
        return f"is skipped: upstream task {run.task(found.culprit)!r} failed"
    if found.kind is Settled.PENDING:
        return "was not reached by the background pass; computing it here"
    return "has its result"


def _compute(plan: RunPlan, item: TaskItem) -> Verdict:
    """Compute what the item's task still needs, here (or on the executor), and see."""
    __tracebackhide__ = True
    run = plan.item_run()
    key = item.key
    if run.outcome(key).value is not None:  # done earlier, as another item's upstream
        return _judged(plan, read_verdict(run, item, earlier=True))
    # Made only once there is upstream work long enough to show (see settled).
    status: StatusLine | None = None
    start = time.monotonic()
    upstream_done = 0

    def settled(node: NodeKey) -> None:
        nonlocal upstream_done, status
        plan.on_settled(node)
        if node != key and node not in plan.selected:
            upstream_done += 1
            elapsed = time.monotonic() - start
            if elapsed < PROGRESS_AFTER_SECONDS:
                return  # quick work needs no word
            if status is None:
                status = StatusLine(plan.config)
            todo = run.todo - 1
            left = f"about {duration(elapsed * (todo - upstream_done) / upstream_done)} left"
            status.update(
                f"[taskproc: {upstream_done}/{todo} upstream tasks done, {left}]"
                if status.live
                else f"[taskproc] {item.name}: {upstream_done} upstream tasks done of {todo}; "
                f"last done: {run.task(node)!r}; {left}"
            )

    run.settle([key], withheld=plan.withheld, listener=settled)
    if status is not None:
        elapsed = time.monotonic() - start
        status.finish(
            f"[taskproc] {item.name}: {upstream_done} upstream tasks done in {elapsed:.1f} s"
        )
    return _judged(plan, read_verdict(run, item, earlier=False))


def _judged(plan: RunPlan, verdict: Verdict) -> Verdict:
    """The verdict, with the upstream tasks computed for it meanwhile."""
    verdict.upstream = plan.take_upstream()
    return verdict
