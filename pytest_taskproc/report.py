"""What the run reports: the ``cached`` status, the ``taskproc:`` line, the graph file.

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
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: user_properties keys a task item's report carries (they reach JUnit XML too)
STATUS = "taskproc"
REASON = "taskproc_reason"
SECONDS = "taskproc_seconds"
TASK_ID = "taskproc_task_id"

GRAPH_FILE = "graph.json"


def _properties(report: Any) -> dict[str, Any]:
    return dict(getattr(report, "user_properties", ()) or ())


def teststatus(report: Any, config: pytest.Config) -> Any:
    """``cached`` (letter ``c``) for fresh tasks; computed ones pass and say why in ``-v``."""
    if report.when != "call":
        return None
    props = _properties(report)
    status = props.get(STATUS)
    if status == "cached" and report.passed:
        return "cached", "c", ("CACHED", {"cyan": True})
    if status == "computed" and report.passed:
        return (
            "passed",
            ".",
            ("PASSED", {"green": True})
            if config.option.verbose < 1
            else (
                f"PASSED (computed: {props.get(REASON, '')})",
                {"green": True},
            ),
        )
    return None


@dataclass
class Tally:
    """Counts per status for the summary line, one per task item."""

    counts: dict[str, int] = field(
        default_factory=lambda: {"computed": 0, "cached": 0, "failed": 0, "skipped": 0}
    )
    seconds: float = 0.0
    status_by_nodeid: dict[str, str] = field(default_factory=dict)

    def add(self, report: Any) -> None:
        props = _properties(report)
        status = props.get(STATUS)
        if status is None:
            return
        if report.when == "call" or (report.when == "setup" and report.skipped):
            if report.failed:
                status = "failed"
            self.counts[status] = self.counts.get(status, 0) + 1
            self.seconds += float(props.get(SECONDS, 0.0))
            self.status_by_nodeid[report.nodeid] = status

    def summary_line(self, cache_root: Path) -> str:
        c = self.counts
        return (
            f"taskproc: {c['computed']} computed, {c['cached']} cached, {c['failed']} failed, "
            f"{c['skipped']} skipped; {self.seconds:.2f} s computing; cache: {cache_root}"
        )


class TaskprocReporter:
    """Statuses, the summary line and the graph file, in whichever process reports."""

    def __init__(self, config: pytest.Config, cache_root: Path) -> None:
        self.config = config
        self.cache_root = cache_root
        info = getattr(config, "workerinput", {}).get("taskproc_run")
        self.run_id: str = info["run_id"] if info else uuid.uuid4().hex
        self.started_ns: int = info["started_ns"] if info else time.time_ns()
        self.is_worker = hasattr(config, "workerinput")
        self.tally = Tally()
        #: what a --collect-only run would compute (set by the session in this process)
        self.dry_run: dict[str, Any] | None = None

    @property
    def run_dir(self) -> Path:
        """Scratch files of this run, shared by its xdist workers; removed at the end."""
        return self.cache_root / "taskproc" / ".runs" / self.run_id

    def run_info(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "started_ns": self.started_ns}

    def pytest_report_teststatus(self, report: Any, config: pytest.Config) -> Any:
        return teststatus(report, config)

    def pytest_runtest_logreport(self, report: Any) -> None:
        self.tally.add(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        dry_run = self.dry_run
        if dry_run is not None:
            tr = terminalreporter
            stale = dry_run["stale"]
            tr.write_sep("-", "taskproc dry run")
            tr.write_line(f"taskproc: {len(stale)} of {dry_run['total']} tasks would be computed")
            for nodeid, reason in stale:
                tr.write_line(f"  {nodeid}: {reason}")
            return
        terminalreporter.write_line(self.tally.summary_line(self.cache_root))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        target = self.config.getoption("taskproc_graph")
        if target is None or self.is_worker:
            return
        from .atomic import write_text_atomic
        from .export import render_graph

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
