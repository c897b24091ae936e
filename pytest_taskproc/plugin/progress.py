"""How far a run's stale tasks are: done/total and an ETA, on a line pytest's output keeps.

On a terminal the status is drawn to the right of the cursor, on the line
pytest is writing (its row of dots, or the item's name under ``-v``), and
erased before pytest writes again: erase-to-end-of-line, the text, the
cursor moved back.  pytest's terminal writer never sees it, so its idea of
the line (and of where the next dot goes) stays true, and no file name is
printed twice.  Elsewhere (CI logs, pipes) a line is written every few
seconds at most.  Nothing is shown without pytest's terminal reporter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pytest

from ..graph import NodeKey
from .report import outside_capture

if TYPE_CHECKING:
    from ..execute import Run

#: seconds between two lines when the output is not a terminal
QUIET_SECONDS = 10.0
#: seconds between two redraws on a terminal
LIVE_SECONDS = 0.2
#: a status squeezed into fewer columns than this is not drawn
NARROWEST = 16


class StatusLine:
    """One status, redrawn in place on a terminal, or a line now and then elsewhere."""

    def __init__(self, config: pytest.Config, quiet_seconds: float = QUIET_SECONDS) -> None:
        self.config = config
        reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
        self.reporter = reporter
        writer = getattr(reporter, "_tw", None)
        self.writer = writer
        # The file under pytest's writer: what is drawn here never enters its bookkeeping.
        self.file = getattr(writer, "_file", None)
        isatty = getattr(reporter, "isatty", False)  # a method on pytest 8+, a bool on 7
        # Cursor moves need a terminal that understands them; colours are optional.
        self.live = (
            bool(isatty() if callable(isatty) else isatty)
            and self.file is not None
            and os.environ.get("TERM") != "dumb"
        )
        self.dim = ("\x1b[2m", "\x1b[0m") if getattr(writer, "hasmarkup", False) else ("", "")
        self.every = LIVE_SECONDS if self.live else quiet_seconds
        self.last = 0.0
        self.drawn = False  # live: a status is on the screen
        self.shown = False  # not live: a line was written

    def update(self, text: str) -> None:
        if self.reporter is None:
            return
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        with outside_capture(self.config):
            if self.live:
                self._draw(text)
            else:
                self.reporter.ensure_newline()
                self.reporter.write_line(text)
                self.shown = True

    def finish(self, text: str) -> None:
        """Erase the live status; elsewhere, a last line if any was written."""
        if self.reporter is None or not (self.drawn or self.shown):
            return  # nothing on the screen: no need to suspend pytest's capture
        with outside_capture(self.config):
            if self.drawn:
                self._write("\x1b[K")
                self.drawn = False
            elif self.shown:
                self.reporter.ensure_newline()
                self.reporter.write_line(text)
                self.shown = False

    def _draw(self, text: str) -> None:
        writer = self.writer
        if writer is None:
            return
        room = int(writer.fullwidth) - int(writer.width_of_current_line) - 2
        if room < NARROWEST:
            return
        shown = f" {text}"[:room]
        # Erase what was drawn before, draw, and put the cursor back where pytest left it.
        start, end = self.dim
        self._write(f"\x1b[K{start}{shown}{end}\x1b[{len(shown)}D")
        self.drawn = True

    def _write(self, text: str) -> None:
        assert self.file is not None
        self.file.write(text)
        self.file.flush()


class Estimate:
    """Done/total of a run's stale tasks, and the time left, from the records' durations.

    Each stale task is expected to take what its own last computation took
    (its record says), else the mean of the recorded tasks of its class,
    else the mean of every recorded task, else one unit.  The time left is
    the elapsed time scaled by the expected work left over the work done, so
    the executor's parallelism and the machine's speed count as measured.
    """

    def __init__(self, run: Run, nodes: Iterable[NodeKey]) -> None:
        per_class: dict[str, list[float]] = {}
        own: dict[NodeKey, float] = {}
        stale: list[NodeKey] = []
        for node in nodes:
            try:
                state = run.state(node)
            except KeyError:
                continue  # not in this run's graph (deselected, not upstream of the selection)
            seconds = _recorded_seconds(state.record)
            if seconds is not None:
                per_class.setdefault(node[0], []).append(seconds)
                own[node] = seconds
            if state.stale:
                stale.append(node)
        every = [s for values in per_class.values() for s in values]
        fallback = sum(every) / len(every) if every else 1.0
        means = {name: sum(v) / len(v) for name, v in per_class.items()}
        self.expected = {n: own.get(n, means.get(n[0], fallback)) for n in stale}
        self.total_work = sum(self.expected.values())
        self.done: set[NodeKey] = set()
        self.done_work = 0.0
        self.start = time.monotonic()

    def settled(self, node: NodeKey) -> None:
        if node in self.expected and node not in self.done:
            self.done.add(node)
            self.done_work += self.expected[node]

    def seconds_left(self) -> float | None:
        """None until a task is done: before that there is no measured pace."""
        if not self.done_work:
            return None
        left = max(self.total_work - self.done_work, 0.0)
        return (time.monotonic() - self.start) * left / self.done_work

    def counted(self) -> str:
        """``3/9 stale tasks done``."""
        return f"{len(self.done)}/{len(self.expected)} stale tasks done"

    def left(self) -> str:
        """``about 12 s left``, or nothing before the first task is done or after the last."""
        seconds = self.seconds_left()
        if seconds is None or len(self.done) >= len(self.expected):
            return ""
        return f"about {duration(seconds)} left"


def duration(seconds: float) -> str:
    """A time left as people say it: ``12 s``, ``3 min 05 s``, ``2 h 10 min``."""
    if seconds < 60:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


def _recorded_seconds(record: Any) -> float | None:
    made = getattr(record, "made", None) or {}
    seconds = made.get("seconds")
    return float(seconds) if isinstance(seconds, int | float) else None
