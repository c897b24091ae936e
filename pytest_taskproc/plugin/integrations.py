"""Task statuses in the reports of other plugins: pytest-html, pytest-json-report, pytest-sugar.

pytest knows a cached task item only as passed; each of these plugins gets
the task's own status its own way.  pytest-html gets a ``Task`` column (and
the row a ``taskproc-cached`` class); pytest-json-report gets the status,
the stale reason and the task id in each test's ``metadata`` (not in
``user_properties``, which JUnit's xunit2 rejects); pytest-sugar, which
decides its symbols without asking pytest's hook, gets its own symbol for
cached and verified items.  Every hook here is optional: a plugin that is
not installed costs nothing.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Callable
from typing import Any

import pytest

from .report import REASON, REPORT_ATTR, STATUS, TASK_ID, teststatus
from .status import OWN_CATEGORIES, Status


class ReportingPlugins:
    """Hooks of pytest-html, pytest-json-report and pytest-sugar; registered in every process."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._sugar_restore: Callable[[], None] | None = None

    # -- pytest-html ----------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[Any]) -> None:
        cells.insert(2, '<th class="sortable" data-column-type="taskproc">Task</th>')

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: Any, cells: list[Any]) -> None:
        status = getattr(report, REPORT_ATTR, None)
        word = status.get(STATUS, "") if isinstance(status, dict) else ""
        reason = status.get(REASON) if isinstance(status, dict) else None
        text = html.escape(str(word) + (f" ({reason})" if reason else ""))
        cells.insert(2, f'<td class="col-taskproc taskproc-{html.escape(str(word))}">{text}</td>')

    # -- pytest-json-report -------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_json_runtest_metadata(self, item: pytest.Item, call: Any) -> dict[str, Any]:
        if call.when != "call":
            return {}
        status = getattr(item, "tp_status", None)
        if not isinstance(status, dict) or STATUS not in status:
            return {}
        found = {
            "status": status[STATUS],
            "reason": status.get(REASON),
            "task_id": status.get(TASK_ID),
        }
        return {"taskproc": found}

    # -- pytest-sugar -------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        sugar = sys.modules.get("pytest_sugar")
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if sugar is None or type(reporter).__name__ != "SugarTerminalReporter":
            return
        # Sugar's reporter calls its own module function for each report's
        # symbol rather than pytest's hook, so that function is wrapped.
        original = getattr(sugar, "pytest_report_teststatus")  # noqa: B009 - untyped module
        config = self.config

        def with_task_statuses(report: Any) -> Any:
            ours = teststatus(report, config, plain=True)
            status = None if ours is None else Status.of(ours[0])
            if status is not None and status in OWN_CATEGORIES:
                # pytest-sugar's symbol for a cached (or verified) item, where it draws ✓
                symbol = getattr(sugar, "colored")(status.letter, "cyan")  # noqa: B009
                return ours[0], symbol, ours[2]
            return original(report)

        setattr(sugar, "pytest_report_teststatus", with_task_statuses)  # noqa: B010
        reporter.summary_stats = _with_own_counts(reporter, reporter.summary_stats, sugar)

        def restore() -> None:
            setattr(sugar, "pytest_report_teststatus", original)  # noqa: B010
            del reporter.summary_stats  # the instance's: the class's is back

        self._sugar_restore = restore

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._sugar_restore is not None:
            self._sugar_restore()
            self._sugar_restore = None


def _with_own_counts(reporter: Any, summary: Callable[[], None], sugar: Any) -> Callable[[], None]:
    """pytest-sugar's "Results" block, with a line for cached (and verified) items.

    Sugar writes a line for each of pytest's categories it knows, so items
    in a category of ours would be missing from it: ``12 cached`` goes
    where sugar would count them as passes, after its ``passed`` line (or
    first, when nothing else passed).
    """

    def ours() -> list[str]:
        lines = []
        for status in OWN_CATEGORIES:
            count = reporter.count(status.word)
            if count:
                lines.append(sugar.colored(f"   {count: 5d} {status.word}", status.colour))
        return lines

    def summary_stats() -> None:
        pending = ours()
        write_line = reporter.write_line

        def write_ours_around(line: str, **markup: Any) -> None:
            passed_line = not pending or " passed" in line
            if not passed_line:
                for own in pending:
                    write_line(own)
                pending.clear()
            write_line(line, **markup)
            for own in pending:
                write_line(own)
            pending.clear()

        reporter.write_line = write_ours_around
        try:
            summary()
        finally:
            del reporter.write_line  # the instance's: the class's is back
        for own in pending:  # no line of sugar's at all
            write_line(own)

    return summary_stats
