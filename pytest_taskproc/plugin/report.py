"""What the run reports: own statuses, the ``taskproc:`` line, progress, the graph file.

:class:`TaskprocReporter` is registered in every process of a ``--taskproc``
run, including the xdist controller, which only reports; so this module
imports nothing of the library beyond what reporting needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from .options import Options
from .status import EXTRA_COUNTS, MAIN_COUNTS, OWN_CATEGORIES, Status

#: keys of a task item's status: a dict on each of its reports (``report.taskproc``),
#: and JUnit XML properties under ``junit_family = xunit1``
REPORT_ATTR = "taskproc"
STATUS = "taskproc"
REASON = "taskproc_reason"
SECONDS = "taskproc_seconds"
TASK_ID = "taskproc_task_id"
#: tasks computed only as upstream of the selection, while this item ran or waited:
#: ``[count, seconds]`` (on the item's call report, so xdist carries it to the controller)
UPSTREAM = "taskproc_upstream"

GRAPH_FILE = "graph.json"
#: what --taskproc-clear cleared, written once per run by the process that cleared
CLEARED_FILE = "cleared"

#: node ids of task classes that need arguments, are not parametrized and that no
#: collected task requires: they never run, which the summary says in one line
UNREACHED = pytest.StashKey[list[str]]()


def _status(report: Any) -> dict[str, Any]:
    status = getattr(report, REPORT_ATTR, None)
    return status if isinstance(status, dict) else {}


def status_line(status: dict[str, Any]) -> str:
    """The task's status as one line, for JUnit XML's ``system-out``.

    e.g. ``taskproc: computed; why: no result yet; task id 3; 0.012 s``.
    """
    if STATUS not in status:
        return ""
    parts = [f"taskproc: {status[STATUS]}"]
    if status.get(REASON):
        parts.append(f"why: {status[REASON]}")
    if TASK_ID in status:
        parts.append(f"task id {status[TASK_ID]}")
    if SECONDS in status:
        parts.append(f"{float(status[SECONDS]):.3f} s")
    return "; ".join(parts)


def is_task_file(config: pytest.Config, nodeid: str) -> bool:
    """Whether a node id lies in a task file (every item of which is a task item)."""
    path = PurePosixPath(nodeid.split("::", 1)[0])
    return any(path.match(pattern) for pattern in config.getini("taskproc_files"))


def teststatus(report: Any, config: pytest.Config, plain: bool = False) -> Any:
    """``cached`` (letter ``c``) for fresh tasks, ``verified`` (``v``) for reproduced ones.

    Computed tasks pass and say why in ``-v``.

    ``plain`` gives the word without markup, for pytest 7's short summary,
    which prints the word as it gets it.
    """
    if report.when != "call" or hasattr(report, "wasxfail"):
        return None  # xfail and xpass are pytest's to report
    status = _status(report)
    kind = Status.of(status.get(STATUS))
    if kind in OWN_CATEGORIES and report.passed:
        assert kind is not None
        return kind.word, kind.letter, kind.markup(plain)
    if kind is Status.COMPUTED and report.passed:
        if plain:
            return "passed", ".", "PASSED"
        return (
            "passed",
            ".",
            ("PASSED", {"green": True})
            if config.option.verbose < 1
            else (
                f"PASSED (computed: {status.get(REASON, '')})",
                {"green": True},
            ),
        )
    return None


def count_of(report: Any) -> Status | None:
    """Which count of the summary line a report of a task item adds to, like pytest's own.

    pytest counts each report by its outcome: a passing call is ``passed``
    (here ``computed``, ``cached`` or ``verified``), a failing setup or teardown an
    ``error``, xfail marks turn outcomes into ``xfailed``/``xpassed``, and
    pytest-rerunfailures reports each retry as ``rerun``.
    """
    outcome = report.outcome  # pytest's word
    if outcome == "passed":
        # Most reports: a passing setup or teardown counts for nothing (checked
        # first, since asking a report for a missing wasxfail costs an exception).
        if report.when != "call":
            return None
        if hasattr(report, "wasxfail"):
            return Status.XPASSED
        kind = Status.of(_status(report).get(STATUS))
        return kind if kind in OWN_CATEGORIES else Status.COMPUTED
    if outcome == "rerun":
        return Status.RERUN
    if outcome == "skipped":
        return Status.XFAILED if hasattr(report, "wasxfail") else Status.SKIPPED
    if outcome == "failed":
        return Status.ERRORS if report.when in ("setup", "teardown") else Status.FAILED
    return None


@dataclass
class Tally:
    """Counts per outcome of task items' reports, for the summary line."""

    counts: dict[Status, int] = field(
        default_factory=lambda: dict.fromkeys((Status.VERIFIED, *MAIN_COUNTS, *EXTRA_COUNTS), 0)
    )
    seconds: float = 0.0
    #: failed items whose task was recomputed to another value (counted in ``failed`` too)
    not_reproducible: int = 0
    verify_seconds: float = 0.0
    #: tasks computed only as upstream of the selection (deselected with -k/-m)
    upstream: int = 0
    #: results saved by this run whose reports an interrupt (Ctrl+C) cut off
    unreported: int = 0
    status_by_nodeid: dict[str, str] = field(default_factory=dict)

    def add(self, report: Any) -> None:
        which = count_of(report)
        if which is None:
            return
        self.counts[which] += 1
        if report.when == "call":
            status = _status(report)
            kind = Status.of(status.get(STATUS))
            if kind in (Status.VERIFIED, Status.NOT_REPRODUCIBLE):
                self.verify_seconds += float(status.get(SECONDS, 0.0))
                if kind is Status.NOT_REPRODUCIBLE and which is Status.FAILED:
                    self.not_reproducible += 1
            else:
                self.seconds += float(status.get(SECONDS, 0.0))
            count, seconds = status.get(UPSTREAM, (0, 0.0))
            self.add_upstream(int(count), float(seconds))
        if which is not Status.RERUN:
            self.status_by_nodeid[report.nodeid] = which.drawn.word

    def add_upstream(self, count: int, seconds: float) -> None:
        self.upstream += count
        self.seconds += seconds

    def summary_line(self, cache_root: Path, verify: bool = False, wall: float = 0.0) -> str:
        """``taskproc: 3 computed (+2 upstream), 5 cached, 0 failed, 0 skipped; ...``.

        Task time is summed over the tasks, so with an executor or xdist it
        can exceed the run's own (wall) time: the line gives both, in words
        that say which is which.

        A ``--taskproc-verify`` run leads with the verified tasks, says that
        the computed ones (stale, so not verified) were not, and how many of
        the failed ones are not reproducible.
        """
        c = self.counts
        shown = [f"{c[k]} {k.word}" for k in MAIN_COUNTS]
        notes = [f"+{self.upstream} upstream"] if self.upstream else []
        if self.unreported:
            notes.append(f"+{self.unreported} saved before the interrupt, not reported")
        if verify:
            notes.append("not verified")
            shown[2] += f" ({self.not_reproducible} {Status.NOT_REPRODUCIBLE.word})"
            shown.insert(0, f"{c[Status.VERIFIED]} {Status.VERIFIED.word}")
        if notes:
            shown[1 if verify else 0] += f" ({'; '.join(notes)})"
        # pytest's words: "1 error", "2 errors"
        shown += [f"{c[k]} {k.singular if c[k] == 1 else k.word}" for k in EXTRA_COUNTS if c[k]]
        timing = f"{self.seconds:.2f} s of task time"
        if verify:
            timing += f", {self.verify_seconds:.2f} s verifying"
        timing += f" in a {wall:.2f} s run"
        return f"taskproc: {', '.join(shown)}; {timing}; cache: {cache_root}"


class CachedInShortSummary:
    """``-rp``/``-rA`` list cached and verified items too, as ``CACHED nodeid`` lines.

    pytest lists passed reports from its ``passed`` statistics only, and a
    cached item is counted under its own ``cached`` status (a verified one
    under ``verified``).  For the span of the summary, those reports join
    ``passed`` (pytest renders them with their own word, from the teststatus
    hook), and leave it before pytest counts outcomes for its last line.
    Words come without markup meanwhile: pytest 7 prints the word of a
    short-summary line as it gets it.
    """

    def __init__(self, reporter: TaskprocReporter) -> None:
        self.reporter = reporter

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> Any:
        stats = getattr(terminalreporter, "stats", None)
        chars = getattr(terminalreporter, "reportchars", "")
        cached = (
            [r for kind in OWN_CATEGORIES for r in stats.get(kind.word, [])]
            if isinstance(stats, dict)
            else []
        )
        listed = bool(cached) and "p" in chars
        if listed:
            passed = stats.setdefault("passed", [])  # type: ignore[union-attr]
            passed.extend(cached)
        self.reporter.plain_words = True
        try:
            yield
        finally:
            self.reporter.plain_words = False
            if listed:
                for report in cached:
                    passed.remove(report)
                if not passed:
                    del stats["passed"]  # type: ignore[union-attr]


class TaskprocReporter:
    """Statuses, the summary line and the graph file, in whichever process reports."""

    def __init__(self, config: pytest.Config, options: Options) -> None:
        self.config = config
        self.cache_root = options.cache_root
        self.run_dir = options.run_dir
        self.is_worker = options.worker_id is not None
        self.verify = options.verify
        self.clear = options.clear
        #: when the run started (the xdist controller's start, in its workers too)
        self.started_ns = options.started_ns
        self.tally = Tally()
        #: what a --collect-only run would compute (set by the plan in this process)
        self.dry_run: dict[str, Any] | None = None
        self.plain_words = False
        #: Ctrl+C: reports under way are lost, results saved meanwhile are counted apart
        self.interrupted = False

    def pytest_report_teststatus(self, report: Any, config: pytest.Config) -> Any:
        return teststatus(report, config, self.plain_words)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if getattr(report, REPORT_ATTR, None) is not None or is_task_file(
            self.config, report.nodeid
        ):
            self.tally.add(report)

    def pytest_collectreport(self, report: Any) -> None:
        # A root whose build_task raised (a collection error in pytest's line).
        if report.failed and is_task_file(self.config, report.nodeid):
            self.tally.counts[Status.ERRORS] += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        unreached = self.config.stash.get(UNREACHED, [])
        if unreached:
            terminalreporter.write_line(unreached_line(unreached), yellow=True)
        dry_run = self.dry_run
        if dry_run is not None:
            tr = terminalreporter
            stale = dry_run["stale"]
            tr.write_sep("-", "taskproc dry run")
            tr.write_line(f"taskproc: {len(stale)} of {dry_run['total']} tasks would be computed")
            for nodeid, reason in stale:
                tr.write_line(f"  {nodeid}: {reason}")
            return
        cleared = self._cleared()
        if cleared:
            terminalreporter.write_line(cleared)
        if self.interrupted:
            self.tally.unreported = max(0, saved_in_run(self.run_dir) - self.reported_saves())
        wall = (time.time_ns() - self.started_ns) / 1e9
        terminalreporter.write_line(self.tally.summary_line(self.cache_root, self.verify, wall))

    def pytest_keyboard_interrupt(self) -> None:
        self.interrupted = True

    def reported_saves(self) -> int:
        return self.tally.counts[Status.COMPUTED] + self.tally.upstream

    def _cleared(self) -> str | None:
        """``--taskproc-clear``: how many results of how many classes were cleared."""
        if not self.clear:
            return None
        try:
            counts = json.loads((self.run_dir / CLEARED_FILE).read_text())
        except (OSError, ValueError):
            return None  # nothing was selected, or collection failed before clearing
        results, classes = counts["results"], counts["classes"]
        return (
            f"taskproc clear: cleared {results} cached result{'s' * (results != 1)} of "
            f"{classes} task class{'es' * (classes != 1)} "
            f"({counts['selected']} task{'s' * (counts['selected'] != 1)} selected)"
        )

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        target = self.config.getoption("taskproc_graph")
        if target is None or self.is_worker:
            return
        from ..atomic import write_text_atomic
        from ..export import render_graph

        try:
            structure = json.loads((self.run_dir / GRAPH_FILE).read_text())
        except FileNotFoundError:
            return
        out = Path(self.config.invocation_params.dir, target)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, render_graph(structure, self.tally.status_by_nodeid, out.suffix))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not self.is_worker:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(self.run_dir.parent)  # only when no other run is going on


def saved_in_run(run_dir: Path) -> int:
    """How many results this run saved, in any process (``worker.note_computed``)."""
    from ..worker import COMPUTED_LOG

    try:
        text = (run_dir / COMPUTED_LOG).read_text(encoding="utf-8")
    except OSError:
        return 0
    return len(set(text.splitlines()))


def unreached_line(nodeids: list[str]) -> str:
    """One line naming the task classes that took no part in the run, and what to do.

    Not a ``taskproc:`` line: that prefix is the summary line's, which tools read.
    """
    one = len(nodeids) == 1
    verb, it = ("needs", "it") if one else ("need", "them")
    return (
        f"taskproc note: {', '.join(nodeids)} {verb} arguments, "
        f"{'is' if one else 'are'} not parametrized and no collected task requires {it}, "
        f"so {'it' if one else 'they'} never {'runs' if one else 'run'} (parametrize {it} "
        f"with @pytest.mark.parametrize or require {it} from a task that runs)"
    )


def outside_capture(config: pytest.Config) -> contextlib.AbstractContextManager[Any]:
    """pytest's output capture suspended: for terminal lines and processes started mid-item.

    While an item runs, pytest captures file descriptors 1 and 2; a line
    written then, or a process started then (a pool's workers inherit the
    descriptors), would end up in that item's captured output.
    """
    capture: Any = config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        return contextlib.nullcontext()
    suspended: contextlib.AbstractContextManager[Any] = capture.global_and_fixture_disabled()
    return suspended
