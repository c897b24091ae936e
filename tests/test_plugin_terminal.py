"""The status line of a run with an executor: in a real terminal (a pty), and its estimate.

pytest draws a row of dots per file; the status of the background pass
shares that line, drawn to the right of the cursor and erased before
pytest writes again, so the finished screen is exactly pytest's own.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import TaskModules
from taskproject import Project, unused_plugins

from pytest_taskproc.execute import Run, RunSettings
from pytest_taskproc.graph import TaskGraph
from pytest_taskproc.plugin.progress import Estimate

SLOW = """
@pytest.mark.parametrize("i", [0, 1, 2, 3, 4])
class Slow(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("Slow", self.i)
        time.sleep(0.6)  # the task's work: long enough for the status to be drawn
        return self.i
"""


def run_in_pty(project: Project, *args: str) -> str:
    """What a pytest run writes to a terminal 100 columns wide, escape sequences included."""
    main, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm"}
    for name in ("NO_COLOR", "PY_COLORS"):  # pytester turns colours off; a terminal has them
        env.pop(name, None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            *project.options(),
            *unused_plugins(args, project.path),
            *args,
        ],
        cwd=project.path,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        if not ready:
            process.kill()
            raise AssertionError("pytest wrote nothing for 120 s")
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def screen(stream: str) -> list[str]:
    """The lines a terminal shows after ``stream``: text, CR, LF, erase and cursor moves."""
    lines = [""]
    col = 0
    for token in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|\r|\n|[^\x1b\r\n]", stream):
        line = lines[-1]
        if token == "\n":
            lines.append("")
            col = 0
        elif token == "\r":
            col = 0
        elif token.endswith("K"):
            lines[-1] = line[:col]
        elif token.endswith("D"):
            col = max(col - int(token[2:-1] or 1), 0)
        elif token.startswith("\x1b"):
            continue  # colours
        else:
            lines[-1] = line[:col].ljust(col) + token + line[col + 1 :]
            col += 1
    return [line.rstrip() for line in lines]


def test_the_status_line_shares_the_row_of_dots_and_leaves_it_whole(
    pytester: pytest.Pytester,
) -> None:
    project = Project(pytester)
    project.task_file("task_slow.py", SLOW)
    stream = run_in_pty(project, "--taskproc-executor=thread:1")
    shown = screen(stream)
    # pytest's row, once, as without the status: the file name was not printed again.
    assert [line for line in shown if "task_slow.py" in line and "::" not in line] == [
        "task_slow.py ....." + " " * (100 - 18 - 7) + "[100%]"
    ], "\n".join(shown)
    # The status was there meanwhile: done/total, and the time left once the pace is known.
    assert re.search(r"\[taskproc: [1-4]/5 stale tasks done, about \d+ s left\]", stream)
    # It is gone from the finished screen.
    assert not [line for line in shown if "stale tasks done" in line]
    assert sorted(project.runs()) == [f"Slow {i}" for i in range(5)]


WORK = """
class Work(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        time.sleep({pause} * self.i)  # the task's work: its duration is in its record
        return self.i


class All(TaskBase):
    parts: RequiresList[int]

    def build_task(self, n: int) -> None:
        self.parts = [Work(i) for i in range(n)]

    def run_task(self) -> int:
        return sum(self.parts)
"""


def test_the_time_left_counts_a_new_task_as_long_as_the_recorded_ones_of_its_class(
    modules: TaskModules, cache_root: Path
) -> None:
    module = modules.load("eta_tasks", WORK.format(pause=0.05))
    with ThreadPoolExecutor(1) as pool:
        module.All(3).run_graph(executor=pool)
    recorded = [module.Work(i).task_record["made"]["seconds"] for i in range(3)]
    assert recorded[2] > recorded[1] > recorded[0]
    # Work(3) and All(4) are new: stale, without a record of their own.
    graph = TaskGraph([module.All(4)])
    run = Run(graph, RunSettings(str(cache_root)))
    estimate = Estimate(run, graph.order)
    expected = {task_key[1]: seconds for task_key, seconds in estimate.expected.items()}
    assert expected == {
        '{"i":3}': pytest.approx(sum(recorded) / 3),  # the mean of its class
        # No task of its class in this graph has a record: the mean of those that do.
        '{"n":4}': pytest.approx(sum(recorded) / 3),
    }
    assert estimate.counted() == "0/2 stale tasks done"
    assert estimate.left() == ""  # no pace before a task is done
    estimate.settled(next(k for k in estimate.expected if "Work" in k[0]))
    assert estimate.counted() == "1/2 stale tasks done"
    assert re.fullmatch(r"about \d+ s left", estimate.left())
