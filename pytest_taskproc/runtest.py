"""Running one task item: freshen its upstream, compute it if stale, say what happened.

Tasks run in the pytest process (or xdist worker) itself, through an inline
executor, so ``--pdb`` stops inside ``run_task`` and ``-s`` shows prints live.
Other processes are kept from computing the same task by the per-task locks;
a result made by another process during this run is reported as computed,
``cached`` being kept for results that existed before the run.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import CacheCorruptionWarning, CorruptResultError
from .execute import MAX_RECOVERIES, REPLAN_ERRORS, GraphRun, InlineExecutor, discard_corrupt
from .freshness import Reason, TaskState, plan
from .graph import NodeKey, TaskGraph, node_key
from .ratelimit import ChannelLimiter
from .report import REASON, SECONDS, STATUS, TASK_ID

if TYPE_CHECKING:
    from .session import TaskprocSession


class TaskItem(pytest.Item):
    """One task of the graph as a pytest item."""

    def __init__(self, *, task: Any, tp_session: TaskprocSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task = task
        self.tp_session = tp_session
        self.add_marker("taskproc")

    def runtest(self) -> None:
        run_item(self)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.task!r}"

    def _traceback_filter(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
        """Show the traceback from ``run_task`` on, not pytest's and our own frames."""
        traceback = excinfo.traceback
        code = getattr(type(self.task).run_task, "__code__", None)
        for index, entry in enumerate(traceback):
            if entry.frame.code.raw is code:
                return traceback[index:].filter(excinfo)
        # Not raised by run_task (a worker that died, a cache the worker cannot
        # see): cut pytest's own frames as pytest does for a test function.
        for index, entry in enumerate(traceback):
            if entry.frame.code.raw is TaskItem.runtest.__code__:
                return traceback[index:].filter(excinfo)
        return traceback.filter(excinfo)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        rendered = super().repr_failure(excinfo, style=style)
        header = self.tp_session.failure_header(self.task)
        if hasattr(rendered, "addsection"):
            rendered.addsection("taskproc", header)
            return rendered
        return header + "\n" + str(rendered)


def _output_sections(item: TaskItem, store: Any, task_id: int | None) -> None:
    if task_id is None:
        return
    for which, path in (
        ("stdout", store.stdout_path(task_id)),
        ("stderr", store.stderr_path(task_id)),
    ):
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        if text:
            item.add_report_section("call", which, text)


def _plan_item(tp: TaskprocSession, graph: TaskGraph, key: NodeKey) -> dict[NodeKey, TaskState]:
    # Cleared results were deleted before the loop started, so a cleared task is
    # stale until recomputed; naming it cleared for good would recompute it again
    # for every later item downstream of it.
    states = plan(graph, tp.cache_root, tp.detect_source_change)
    for cleared in tp.cleared.intersection(states):
        if states[cleared].reason is Reason.MISSING:
            states[cleared].reason = Reason.CLEARED
    own = states[key]
    if not own.stale and own.record is not None and own.task_id is not None:
        # "cached" promises a result that loads; check this item's own bytes.
        problem = own.store.verify_value(own.task_id, own.record)
        if problem is not None:
            warnings.warn(
                CacheCorruptionWarning(f"{problem}; recomputing {own.task!r}"), stacklevel=2
            )
            own.store.discard_result(own.task_id)
            return _plan_item(tp, graph, key)
    return states


def run_item(item: TaskItem) -> None:
    __tracebackhide__ = True
    tp = item.tp_session
    task = item.task
    key = node_key(task)
    graph = TaskGraph([task])
    for _ in range(MAX_RECOVERIES):
        states = _plan_item(tp, graph, key)
        state = states[key]
        for upstream in graph.order:
            if upstream == key or not states[upstream].stale:
                continue
            failure = tp.failure_of(upstream, states[upstream])
            if failure is not None:
                item.user_properties.append((STATUS, "skipped"))
                pytest.skip(f"upstream task {graph.tasks[upstream]!r} failed ({failure})")
        run = GraphRun(
            graph,
            states,
            tp.cache_root,
            tp.executor() or InlineExecutor(),
            ChannelLimiter(None),
            detect_source_change=tp.detect_source_change,
            lock=True,
            echo=tp.echo,
            slots=tp.slots,
            failure_dir=str(tp.failure_dir),
            run_id=tp.run_id,
        )
        start = time.perf_counter()
        try:
            run.run()
        except REPLAN_ERRORS as exc:
            # An upstream result was damaged (recompute it) or changed by another
            # process while this item ran: plan again from what the cache holds now.
            if isinstance(exc, CorruptResultError):
                discard_corrupt(tp.cache_root, exc)
            continue
        except Exception:
            _report_failure(item, graph, states, run)
            raise
        finally:
            elapsed = time.perf_counter() - start
        break
    else:
        raise CorruptResultError(f"{task!r}: upstream results kept coming back damaged")
    item.user_properties.append((TASK_ID, state.task_id))
    tp.computed_here.update(k for k, o in run.outcomes.items() if o.computed)
    outcome = run.outcomes.get(key)
    if outcome is not None and outcome.computed:
        item.user_properties.append((STATUS, "computed"))
        item.user_properties.append((REASON, state.describe()))
        item.user_properties.append((SECONDS, round(elapsed, 6)))
        _output_sections(item, state.store, state.task_id)
        return
    made_by = outcome.run if outcome is not None else _made_by(state)
    if made_by != tp.run_id:
        item.user_properties.append((STATUS, "cached"))
        return
    item.user_properties.append((STATUS, "computed"))
    where = (
        "by this process, as an upstream task" if key in tp.computed_here else "by another process"
    )
    item.user_properties.append((REASON, f"computed earlier in this run {where}"))
    item.user_properties.append((SECONDS, 0.0))


def _made_by(state: TaskState) -> str | None:
    run: str | None = state.record.made.get("run") if state.record is not None else None
    return run


def _report_failure(
    item: TaskItem, graph: TaskGraph, states: dict[NodeKey, TaskState], run: GraphRun
) -> None:
    """Record who failed; this item fails itself, or is skipped behind an upstream failure."""
    __tracebackhide__ = True
    tp = item.tp_session
    key = node_key(item.task)
    state = states[key]
    item.user_properties.append((TASK_ID, state.task_id))
    failed = {node: error for node, error in run.failures}
    for node, error in failed.items():
        tp.mark_failed(node, error)
    if key in failed:
        item.user_properties.append((STATUS, "failed"))
        item.user_properties.append((REASON, state.describe()))
        _output_sections(item, state.store, state.task_id)
        return
    culprit = next(iter(failed))
    item.user_properties.append((STATUS, "skipped"))
    pytest.skip(f"upstream task {graph.tasks[culprit]!r} failed ({tp.failed[culprit]})")
