"""One task item: its task's verdict, turned into pytest's outcome by one protocol.

Without an executor (and under xdist) tasks run in the pytest process (or
xdist worker) itself, so ``--pdb`` stops inside ``run_task`` and ``-s`` shows
prints live.  Other processes are kept from computing the same task by the
per-task locks; a result made by another process during this run is reported
as computed, ``cached`` being kept for results that existed before the run.

Whatever ends ``run_task`` (an exception, ``pytest.fail``/``skip``/``xfail``,
``SystemExit``, a pytest-timeout timeout) takes one path: the worker records
it under the task's lock, :func:`report_verdict` turns it into pytest's own
outcome for the task's item, and every item downstream of it is skipped
naming it.  Only ``KeyboardInterrupt`` is left alone, so it stops the run as
in pytest.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import (
    NotReproducibleError,
    ResultNotPicklableError,
    TaskFailedEarlierError,
    TaskprocError,
)
from ..ledger import Failure, Kind, marker_path, read_traceback
from ..relay import carried_by, reissue
from .collect import PROTOCOL, TaskItem
from .options import Options
from .plan import PLAN, RunPlan
from .report import (
    REASON,
    REPORT_ATTR,
    SECONDS,
    STATUS,
    TASK_ID,
    UPSTREAM,
    status_line,
)
from .status import Status

if TYPE_CHECKING:
    from ..execute import TaskState
    from .verdict import Verdict
    from .verify import Checked

# ``verdict`` (and through it the scheduler and the cache) is imported when the
# first item runs, not when pytest configures the plugin: a run that collects
# no task item never needs it.

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

_FIXES = {
    ResultNotPicklableError: (
        "return plain data (numbers, strings, lists, dicts, arrays), or save the object "
        "under self.task_directory in run_task and return its path"
    ),
}


class ItemRunner:
    """Runs task items and reports them: the item protocol of a ``--taskproc`` run."""

    def __init__(self, config: pytest.Config, options: Options) -> None:
        self.options = options
        self.plan: RunPlan = config.stash[PLAN]
        config.stash[PROTOCOL] = self

    def run(self, item: TaskItem) -> None:
        __tracebackhide__ = True
        item.tp_attempts += 1
        item.tp_status = {}
        item.tp_earlier_traceback = None
        rerun = item.tp_attempts > 1 or getattr(item, "execution_count", 1) > 1
        from .verdict import decide

        report_verdict(item, decide(self.plan, item, rerun), self.plan)

    def repr_failure(
        self, item: TaskItem, excinfo: pytest.ExceptionInfo[BaseException], style: Any
    ) -> Any:
        error = excinfo.value
        not_reproducible = isinstance(error, NotReproducibleError)
        what = f"is {Status.NOT_REPRODUCIBLE.word}" if not_reproducible else "failed"
        header = failure_header(item, self.plan.state(item.key), what, self.options.started_ns)
        earlier = item.tp_earlier_traceback
        if isinstance(error, TaskFailedEarlierError) and earlier:
            # Computed first for another item (on another xdist worker, say): the
            # task's own item shows the traceback of run_task all the same.
            assert isinstance(error, TaskFailedEarlierError)
            return _short_repr(excinfo, header, earlier.rstrip().splitlines(), error.summary)
        if isinstance(error, TaskprocError) and not _raised_in_run_task(item, excinfo):
            # Our own errors outside run_task (an unpicklable result, a missing
            # item key, a failure on another worker) say all there is to say:
            # pytest's and our internal frames would only bury the message.
            return _short_repr(excinfo, header)
        rendered = super(TaskItem, item).repr_failure(excinfo, style=style)
        if hasattr(rendered, "addsection"):
            rendered.addsection("taskproc", header)
            return rendered
        return header + "\n" + str(rendered)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        outcome = yield
        if isinstance(item, TaskItem):
            describe_report(item, outcome.get_result(), self.options.junit_properties)


# -- the outcome protocol ---------------------------------------------------------
def report_verdict(item: TaskItem, verdict: Verdict, plan: RunPlan) -> None:
    """Turn what became of the item's task into the item's outcome, whatever it was."""
    __tracebackhide__ = True
    from .verdict import Fate

    status = item.tp_status
    state = verdict.state
    # What run_task warned in a pool process is this item's, as it would be inline.
    reissue(carried_by(verdict.error if verdict.error is not None else verdict.outcome))
    status[TASK_ID] = state.task_id
    if verdict.upstream[0]:
        status[UPSTREAM] = list(verdict.upstream)
    outcome = verdict.outcome
    if verdict.fate is Fate.COMPUTED:
        assert outcome is not None
        status.update(
            {STATUS: Status.COMPUTED.word, REASON: state.describe(), SECONDS: outcome.seconds}
        )
        _output_sections(item, state)
        return
    if verdict.fate is Fate.FRESH and verdict.verification is not None:
        _report_verification(item, verdict.verification)
        return
    if verdict.fate is Fate.FRESH:
        if verdict.made_before(plan.options.run_id):
            status[STATUS] = Status.CACHED.word
            return
        if outcome is not None and outcome.computed:
            where = "by this process, as an upstream task"
        else:
            where = "by another process"
        status.update(
            {
                STATUS: Status.COMPUTED.word,
                REASON: f"computed earlier in this run {where}",
                SECONDS: 0.0,
            }
        )
        return
    if verdict.fate is Fate.BLOCKED:
        culprit, cause = verdict.culprit_task, verdict.cause
        if cause is None:
            assert verdict.culprit is not None
            _skip(item, f"upstream task {culprit!r} is {plan.mark_skip(verdict.culprit)}")
        assert cause is not None
        failure = Failure.of(cause)
        reason = _upstream_reason(culprit, failure)
        if failure.kind is Kind.FAILED and plan.options.worker_id and _reruns_left(item):
            # Under xdist the culprit's own item may yet be rerun on another worker
            # and pass: a skip now would be final in an otherwise green run, while
            # a failure is rerun too, and the rerun settles the upstream again.
            status[STATUS] = "failed"
            pytest.fail(f"{reason}; rerun, since its own item may be rerun", pytrace=False)
        _skip(item, reason)
    error = verdict.error
    assert error is not None
    if isinstance(error, TaskFailedEarlierError):
        # Recorded by another worker, or by an earlier attempt that a process died in:
        # what it printed (until it died, too) is in the task's files, and the
        # traceback beside the run's record of the failure.
        _output_sections(item, state)
        failure_dir = plan.options.failure_dir
        if state.task_id is not None:
            marker = marker_path(str(failure_dir), state.store.name, state.task_id)
            item.tp_earlier_traceback = read_traceback(marker)
        _repeat_recorded(item, Failure.of(error))
    status[REASON] = state.describe()
    status[STATUS] = Status.of_kind(Failure.of(error).kind).word
    _output_sections(item, state, plan.options.started_ns)
    raise error  # with its own traceback from run_task


def _report_verification(item: TaskItem, checked: Checked) -> None:
    """Verified passes, not reproducible fails; one that could not be verified stays cached."""
    __tracebackhide__ = True
    from ..provenance import Status as Verified

    status = item.tp_status
    if checked.status is Verified.VERIFIED:
        how = "the same bytes" if checked.same_bytes else "an equal value, pickled differently"
        status.update(
            {STATUS: Status.VERIFIED.word, REASON: f"recomputed to {how}", SECONDS: checked.seconds}
        )
        return
    if checked.status is Verified.NOT_REPRODUCIBLE:
        word = Status.NOT_REPRODUCIBLE.word
        status.update({STATUS: word, REASON: checked.difference, SECONDS: checked.seconds})
        raise NotReproducibleError(f"{word}: {checked.difference}")
    # Changed under this run by another process, after it was planned fresh.
    status.update({STATUS: Status.CACHED.word, REASON: f"not verified: {checked.difference}"})


def _upstream_reason(task: Any, failure: Failure) -> str:
    detail = failure.detail
    if failure.kind is Kind.SKIPPED:
        return f"upstream task {task!r} was skipped ({detail})"
    if failure.kind is Kind.XFAILED:
        return f"upstream task {task!r} xfailed ({detail})"
    return f"upstream task {task!r} failed ({detail})"


def _reruns_left(item: TaskItem) -> bool:
    """Whether pytest-rerunfailures will run this item again if it fails now."""
    if not item.config.pluginmanager.hasplugin("rerunfailures"):
        return False  # not installed, or -p no:rerunfailures
    import importlib

    try:
        rerunfailures: Any = importlib.import_module("pytest_rerunfailures")
        count = rerunfailures.get_reruns_count(item) or 0
    except (ImportError, AttributeError, ValueError):  # another version's API
        return False
    return int(getattr(item, "execution_count", 1)) <= int(count)


def _skip(item: TaskItem, reason: str) -> None:
    __tracebackhide__ = True
    item.tp_status[STATUS] = Status.SKIPPED.word
    pytest.skip(reason)


def _repeat_recorded(item: TaskItem, failure: Failure) -> None:
    """The task of this item ended earlier in this run elsewhere: give the item that outcome."""
    __tracebackhide__ = True
    item.tp_status[STATUS] = Status.of_kind(failure.kind).word
    if failure.kind is Kind.SKIPPED:
        pytest.skip(failure.detail)
    if failure.kind is Kind.XFAILED:
        pytest.xfail(failure.detail)
    raise TaskFailedEarlierError(
        f"{failure.summary} (raised when {item.task!r} ran earlier in this run, for another item "
        "or on another xdist worker; its traceback is in that item's report)",
        failure.summary,
    )


#: How much older than the run's start an output file may look and still be this
#: run's: file times come from a coarse kernel clock that lags ``time.time_ns``.
_CLOCK_SLACK_NS = 50_000_000


def output_files(state: TaskState | None, since_ns: int = 0) -> list[tuple[str, str]]:
    """The task's stdout/stderr files written since ``since_ns`` (not a previous run's)."""
    if state is None or state.task_id is None:
        return []
    from ..cache import STDERR_NAME, STDOUT_NAME

    folder = state.store.folder(state.task_id)  # a string: two Path objects per item cost more
    found = []
    for which, name in (("stdout", STDOUT_NAME), ("stderr", STDERR_NAME)):
        path = f"{folder}{os.sep}{name}"
        try:
            written = os.stat(path).st_mtime_ns
        except OSError:
            continue
        if written >= since_ns - _CLOCK_SLACK_NS:
            found.append((which, path))
    return found


def _output_sections(item: TaskItem, state: TaskState, since_ns: int = 0) -> None:
    """Attach what the task printed; a task that failed before it ran printed nothing new."""
    for which, path in output_files(state, since_ns):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            continue
        if text:
            item.add_report_section("call", which, text)


# -- failures ----------------------------------------------------------------------------
def failure_header(
    item: TaskItem, state: TaskState | None, what: str = "failed", since_ns: int = 0
) -> str:
    """Class, arguments, task id and output files of a failed task (``what`` befell it).

    Output files older than ``since_ns`` are a previous run's and not named.
    """
    task = item.task
    lines = [
        f"task {task!r} {what}",
        f"  class:     {task.task_name}",
        f"  arguments: {item.key[1]}",
    ]
    task_id = None if state is None else state.task_id
    if state is None or task_id is None:
        lines.append("  task id:   none yet")
        lines.append("  output:    none (the task printed nothing)")
        return "\n".join(lines)
    lines.append(f"  task id:   {task_id}")
    # Output files exist only when the task printed something.
    for which, path in output_files(state, since_ns):
        lines.append(f"  {which}:    {path}")
    if len(lines) == 4:
        lines.append("  output:    none (the task printed nothing)")
    return "\n".join(lines)


def _short_repr(
    excinfo: pytest.ExceptionInfo[BaseException],
    header: str,
    lines: list[str] | None = None,
    crash: str | None = None,
) -> Any:
    """``Type: message``, the fix where there is one, and the task header; no traceback.

    Built from pytest's ``value`` style, so the report keeps its crash line
    (the message in the short summary, also on pytest 7 and through xdist).
    ``lines`` and ``crash`` replace the message and the crash line (a
    traceback recorded where the task was computed, and its last line).
    """
    error = excinfo.value
    # "not reproducible: ..." says it all; the class name would only repeat it.
    plain = isinstance(error, NotReproducibleError)
    if lines is None:
        lines = [str(error) if plain else f"{type(error).__name__}: {error}"]
        fix = next((f for kind, f in _FIXES.items() if isinstance(error, kind)), None)
        if fix is not None:
            lines.append(f"fix: {fix}")
    if plain:
        crash = lines[0]  # the short summary's words too
    try:
        rendered = excinfo.getrepr(style="value")
        rendered.reprtraceback.reprentries[-1].lines[:] = lines  # type: ignore[index]
        if crash is not None and rendered.reprcrash is not None:
            rendered.reprcrash.message = crash
    except (AttributeError, IndexError, TypeError, ValueError):  # pragma: no cover
        return "\n".join(lines) + "\n\n" + header
    rendered.addsection("taskproc", header)
    return rendered


def _raised_in_run_task(item: TaskItem, excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    code = getattr(type(item.task).run_task, "__code__", None)
    return any(entry.frame.code.raw is code for entry in excinfo.traceback)


# -- reports ------------------------------------------------------------------------
def describe_report(item: TaskItem, report: pytest.TestReport, properties: bool) -> None:
    """Put what became of the task on each of its item's reports.

    The status travels as a report attribute (it survives xdist's report
    serialisation); JUnit XML gets it as testcase properties where the family
    allows them (``xunit1``), and in every family as a line of the testcase's
    ``system-out``, which also keeps cached tasks from an empty output banner.
    """
    status = dict(item.tp_status)
    if report.when != "call":
        status.pop(UPSTREAM, None)  # counted once, with the call
        if report.skipped:
            status.setdefault(STATUS, Status.SKIPPED.word)  # skipped by a mark at setup
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
