"""Running one task item: freshen its upstream, compute it if stale, say what happened.

Tasks run in the pytest process (or xdist worker) itself, through an inline
executor, so ``--pdb`` stops inside ``run_task`` and ``-s`` shows prints live.
Other processes are kept from computing the same task by the per-task locks;
a result made by another process during this run is reported as computed,
``cached`` being kept for results that existed before the run.

Whatever ends ``run_task`` (an exception, ``pytest.fail``/``skip``/``xfail``,
``SystemExit``, a pytest-timeout timeout) takes one path: the worker records
it under the task's lock, this module turns it into pytest's own outcome for
the task's item, and every item downstream of it is skipped naming it.
Only ``KeyboardInterrupt`` is left alone, so it stops the run as in pytest.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from .collect import class_marks, definition_line
from .errors import (
    CacheCorruptionWarning,
    CorruptResultError,
    ResultNotPicklableError,
    TaskFailedEarlierError,
    TaskprocError,
)
from .execute import MAX_RECOVERIES, GraphRun, InlineExecutor, discard_corrupt
from .freshness import Reason, TaskState, plan
from .graph import NodeKey, TaskGraph, node_key
from .ratelimit import ChannelLimiter
from .report import REASON, REPORT_ATTR, SECONDS, STATUS, TASK_ID, status_line
from .worker import REPLAN_ERRORS

if TYPE_CHECKING:
    from .session import TaskprocSession

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

_FIXES = {
    ResultNotPicklableError: (
        "return plain data (numbers, strings, lists, dicts, arrays), or save the object "
        "under self.task_directory in run_task and return its path"
    ),
}


class TaskItem(pytest.Item):
    """One task of the graph as a pytest item."""

    def __init__(
        self,
        *,
        task: Any,
        tp_session: TaskprocSession,
        marks: Any = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.task = task
        self.tp_session = tp_session
        #: what became of the task in the latest run of this item (see report.STATUS)
        self.tp_status: dict[str, Any] = {}
        self.tp_attempts = 0
        self.add_marker("taskproc")
        for mark in [*class_marks(type(task)), *marks]:
            mark = getattr(mark, "mark", mark)  # a MarkDecorator or the Mark it holds
            # What add_marker does for a MarkDecorator; it takes no bare Mark.
            self.keywords[mark.name] = mark
            self.own_markers.append(mark)

    def runtest(self) -> None:
        run_item(self)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        cls = type(self.task)
        module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        line = definition_line(cast(Hashable, cls))
        if module_file is None or line is None:
            return self.path, None, f"{self.task!r}"
        return Path(module_file), line, f"{self.task!r}"

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
        header = self.tp_session.failure_header(self.task)
        error = excinfo.value
        if isinstance(error, TaskprocError) and not _raised_in_run_task(self, excinfo):
            # Our own errors outside run_task (an unpicklable result, a missing
            # item key, a failure on another worker) say all there is to say:
            # pytest's and our internal frames would only bury the message.
            return _short_repr(excinfo, header)
        rendered = super().repr_failure(excinfo, style=style)
        if hasattr(rendered, "addsection"):
            rendered.addsection("taskproc", header)
            return rendered
        return header + "\n" + str(rendered)


def _short_repr(excinfo: pytest.ExceptionInfo[BaseException], header: str) -> Any:
    """``Type: message``, the fix where there is one, and the task header; no traceback.

    Built from pytest's ``value`` style, so the report keeps its crash line
    (the message in the short summary, also on pytest 7 and through xdist).
    """
    error = excinfo.value
    lines = [f"{type(error).__name__}: {error}"]
    fix = next((f for kind, f in _FIXES.items() if isinstance(error, kind)), None)
    if fix is not None:
        lines.append(f"fix: {fix}")
    try:
        rendered = excinfo.getrepr(style="value")
        rendered.reprtraceback.reprentries[-1].lines[:] = lines  # type: ignore[index]
    except (AttributeError, IndexError, TypeError, ValueError):  # pragma: no cover
        return "\n".join(lines) + "\n\n" + header
    rendered.addsection("taskproc", header)
    return rendered


def _raised_in_run_task(item: TaskItem, excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    code = getattr(type(item.task).run_task, "__code__", None)
    return any(entry.frame.code.raw is code for entry in excinfo.traceback)


def skip_by_marks(item: pytest.Item) -> str | None:
    """Why ``item`` is skipped by its marks before it runs, or None.

    pytest evaluates ``skip``/``skipif``/``xfail(run=False)`` at an item's
    setup; a downstream item needs the same verdict for its upstream tasks,
    which may run elsewhere or not at all (deselected), so it asks pytest's
    own evaluation here.
    """
    try:
        from _pytest.skipping import evaluate_skip_marks, evaluate_xfail_marks
    except ImportError:  # pragma: no cover - a pytest that moved them
        return None
    skipped = evaluate_skip_marks(item)
    if skipped is not None:
        return f"skipped by its mark: {skipped.reason}"
    if not item.config.option.runxfail:
        xfailed = evaluate_xfail_marks(item)
        if xfailed is not None and not xfailed.run:
            return f"marked xfail(run=False): {xfailed.reason}"
    return None


# -- the outcome protocol ---------------------------------------------------------
def _kind(summary: str) -> tuple[str, str]:
    """``("skipped" | "xfailed" | "failed", detail)`` of a recorded ``Type: message``."""
    name, _, detail = summary.partition(": ")
    if name == "Skipped":
        return "skipped", detail
    if name == "XFailed":
        return "xfailed", detail
    return "failed", summary


def _upstream_reason(task: Any, summary: str) -> str:
    kind, detail = _kind(summary)
    if kind == "skipped":
        return f"upstream task {task!r} was skipped ({detail})"
    if kind == "xfailed":
        return f"upstream task {task!r} xfailed ({detail})"
    return f"upstream task {task!r} failed ({detail})"


def _skip(item: TaskItem, reason: str) -> None:
    __tracebackhide__ = True
    item.tp_status[STATUS] = "skipped"
    pytest.skip(reason)


def _repeat_recorded(item: TaskItem, key: NodeKey, summary: str) -> None:
    """The task of this item ended earlier in this run: give the item that same outcome."""
    __tracebackhide__ = True
    tp = item.tp_session
    error = tp.failed_errors.get(key)
    kind, detail = _kind(summary)
    item.tp_status[STATUS] = kind
    if error is not None:
        raise error  # raised here, with its own traceback from run_task
    if kind == "skipped":
        pytest.skip(detail)
    if kind == "xfailed":
        pytest.xfail(detail)
    raise TaskFailedEarlierError(
        f"{summary} (raised when {item.task!r} ran earlier in this run, for another item or "
        "on another xdist worker; its traceback is in that item's report)",
        summary,
    )


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


def _check_upstream(item: TaskItem, graph: TaskGraph, states: dict[NodeKey, TaskState]) -> None:
    """Skip the item when a stale upstream task failed in this run or is skipped by its marks."""
    __tracebackhide__ = True
    tp = item.tp_session
    key = node_key(item.task)
    for upstream in graph.order:
        if upstream == key or not states[upstream].stale:
            continue  # a fresh upstream result serves, whatever its item does
        failure = tp.failure_of(upstream, states[upstream])
        if failure is not None:
            _skip(item, _upstream_reason(graph.tasks[upstream], failure))
        marked = tp.mark_skip(upstream)
        if marked is not None:
            _skip(item, f"upstream task {graph.tasks[upstream]!r} is {marked}")


def run_item(item: TaskItem) -> None:
    __tracebackhide__ = True
    tp = item.tp_session
    task = item.task
    key = node_key(task)
    graph = TaskGraph([task])
    item.tp_attempts += 1
    item.tp_status = {}
    rerun = item.tp_attempts > 1 or getattr(item, "execution_count", 1) > 1
    for _ in range(MAX_RECOVERIES):
        states = _plan_item(tp, graph, key)
        state = states[key]
        item.tp_status[TASK_ID] = state.task_id
        if rerun:
            tp.forget_failure(key, state)  # pytest-rerunfailures & co: really run it again
            rerun = False
        _check_upstream(item, graph, states)
        if state.stale:
            earlier = tp.failure_of(key, state)
            if earlier is not None:
                _repeat_recorded(item, key, earlier)
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
        error: BaseException | None = None
        try:
            run.run()
        except REPLAN_ERRORS as exc:
            # An upstream result was damaged (recompute it) or changed by another
            # process while this item ran: plan again from what the cache holds now.
            if isinstance(exc, CorruptResultError):
                discard_corrupt(tp.cache_root, exc)
            continue
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            error = exc
        elapsed = time.perf_counter() - start
        item.tp_status[TASK_ID] = state.task_id  # a new task got its id in the run
        if error is not None:
            # Raised outside the except clause, so the error is not chained to itself.
            _settle_failure(item, graph, states, run, error)
        break
    else:
        raise CorruptResultError(f"{task!r}: upstream results kept coming back damaged")
    tp.computed_here.update(k for k, o in run.outcomes.items() if o.computed)
    outcome = run.outcomes.get(key)
    if outcome is not None and outcome.computed:
        item.tp_status.update({STATUS: "computed", REASON: state.describe(), SECONDS: elapsed})
        _output_sections(item, state.store, state.task_id)
        return
    made_by = outcome.run if outcome is not None else _made_by(state)
    if made_by != tp.run_id:
        item.tp_status[STATUS] = "cached"
        return
    where = (
        "by this process, as an upstream task" if key in tp.computed_here else "by another process"
    )
    item.tp_status.update(
        {STATUS: "computed", REASON: f"computed earlier in this run {where}", SECONDS: 0.0}
    )


def _made_by(state: TaskState) -> str | None:
    run: str | None = state.record.made.get("run") if state.record is not None else None
    return run


def _settle_failure(
    item: TaskItem,
    graph: TaskGraph,
    states: dict[NodeKey, TaskState],
    run: GraphRun,
    error: BaseException,
) -> None:
    """Record who failed; this item fails (skips, xfails) itself, or is skipped behind it."""
    __tracebackhide__ = True
    tp = item.tp_session
    key = node_key(item.task)
    failed = dict(run.failures)
    for node, exc in failed.items():
        tp.mark_failed(node, exc)
    if key in failed:
        own = failed[key]
        if isinstance(own, TaskFailedEarlierError):
            # Another worker recorded it while this one waited for the lock.
            _repeat_recorded(item, key, own.summary)
        item.tp_status[REASON] = states[key].describe()
        item.tp_status[STATUS] = _kind(tp.failed[key])[0]
        _output_sections(item, states[key].store, states[key].task_id)
        raise own
    if failed:
        culprit = next(iter(failed))
        _skip(item, _upstream_reason(graph.tasks[culprit], tp.failed[culprit]))
    item.tp_status[STATUS] = "failed"
    raise error


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


# -- reports ------------------------------------------------------------------------
def describe_report(item: TaskItem, report: pytest.TestReport, properties: bool) -> None:
    """Put what became of the task on each of its item's reports.

    The status travels as a report attribute (it survives xdist's report
    serialisation); JUnit XML gets it as testcase properties where the family
    allows them (``xunit1``), and in every family as a line of the testcase's
    ``system-out``, which also keeps cached tasks from an empty output banner.
    """
    status = dict(item.tp_status)
    if report.when != "call" and report.skipped:
        status.setdefault(STATUS, "skipped")  # skipped by a mark at setup
    setattr(report, REPORT_ATTR, status)
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and _is_ours(longrepr[0]):
        # A skip raised by this plugin would name our line; name the task's class.
        path, line, _ = item.reportinfo()
        report.longrepr = (str(path), longrepr[1] if line is None else line + 1, longrepr[2])
    if properties and STATUS in status:
        names = (STATUS, REASON, TASK_ID, SECONDS)
        report.user_properties = [
            *report.user_properties,
            *((name, status[name]) for name in names if name in status),
        ]
    if report.when == "teardown" or report.skipped:
        text = status_line(status)
        if text:
            report.sections.append(("Captured stdout taskproc", text + "\n"))


def _is_ours(path: Any) -> bool:
    return str(path).startswith(_PACKAGE_DIR)
