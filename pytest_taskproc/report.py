"""What a task item's report says: the ``cached`` status and the ``taskproc:`` line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .runtest import REASON, SECONDS, STATUS


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
