"""Ctrl+C (SIGINT to the controller) under xdist: counts that match what was saved, a quick exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("xdist")
pytestmark = pytest.mark.slow

TASKS = """
import os
import time

import pytest
from pytest_taskproc import RequiresList, TaskBase

GATE = os.environ["GATE"]
LOG = os.environ["RUN_LOG"]


def log(line: str) -> None:
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(line + "\\n")


class Prep(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log(f"prep {self.n}")
        return self.n


@pytest.mark.parametrize("n", range(6))
class Quick(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log(f"quick {self.n}")
        return self.n


class Slow(TaskBase):
    preps: RequiresList[int]

    def build_task(self) -> None:
        self.preps = [Prep(n) for n in range(4)]

    def run_task(self) -> int:
        log("slow start")
        while not os.path.exists(GATE):  # never opened: the run is interrupted here
            time.sleep(0.01)
        return sum(self.preps)
"""


def test_sigint_to_the_controller_counts_every_saved_result_and_exits(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(task_interrupt=TASKS)
    run_log = pytester.path / "run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CP_"))}
    env.update(GATE=str(pytester.path / "gate"), RUN_LOG=str(run_log))
    controller = subprocess.Popen(
        # Prep is deselected: it is computed inside Slow's item, whose report never comes.
        [sys.executable, "-m", "pytest", "--taskproc", "-n", "2", "-k", "not Prep",
         "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def ran() -> list[str]:
        return run_log.read_text().splitlines() if run_log.exists() else []

    deadline = time.monotonic() + 120
    while not ("slow start" in ran() and sum(x.startswith("quick") for x in ran()) == 6):
        assert controller.poll() is None, controller.communicate()[0]
        assert time.monotonic() < deadline, "the tasks never got going"
        time.sleep(0.05)
    controller.send_signal(signal.SIGINT)
    # Generous: a hang (xdist waiting for the busy worker) is what this guards against.
    output, _ = controller.communicate(timeout=60)
    assert controller.returncode == pytest.ExitCode.INTERRUPTED, output
    saved = len(list((pytester.path / ".cache" / "taskproc").glob("*/results/*/record.json")))
    assert saved == 10  # six Quick, four Prep; Slow never finished
    line = next(x for x in output.splitlines() if x.startswith("taskproc: "))
    found = re.match(
        r"taskproc: (\d+) computed(?: \(([^)]*)\))?, 0 cached, 0 failed, 0 skipped;", line
    )
    assert found is not None, line
    notes = dict(
        (what.split(" ", 1)[1], int(what.split(" ", 1)[0]))
        for what in (found.group(2) or "").replace("+", "").split("; ")
        if what
    )
    counted = int(found.group(1)) + sum(notes.values())
    assert counted == saved, line
    assert "Traceback" not in output.split("KeyboardInterrupt")[0], output
