"""Every collected item has a manifest entry under xdist: after ``-x``, and after a worker died."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("xdist")
pytestmark = pytest.mark.slow

TASKS = """
import os
import signal

import pytest
from pytest_taskproc import Requires, TaskBase


class Base(TaskBase):
    def run_task(self) -> int:
        return 1


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
class Step(TaskBase):
    base: Requires[int]

    def build_task(self, n: int) -> None:
        self.n = n
        self.base = Base()

    def run_task(self) -> int:
        if self.n == int(os.environ.get("FAIL_AT", "0")):
            raise RuntimeError("step failed")
        if self.n == int(os.environ.get("KILL_AT", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.base + self.n


class Other(TaskBase):
    def run_task(self) -> int:
        return 7
"""

ITEMS = {
    "task_holes.py::Base",
    "task_holes.py::Other",
    *(f"task_holes.py::Step[{n}]" for n in range(1, 6)),
}


def entries(path: Path) -> dict[str, dict[str, Any]]:
    document = json.loads(path.read_text())
    return {entry["item"]: entry for entry in document["tasks"]}


def test_x_under_xdist_leaves_no_item_out(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(task_holes=TASKS)
    monkeypatch.setenv("FAIL_AT", "1")
    result = pytester.runpytest_subprocess(
        "--taskproc", "-n", "2", "-x", "-p", "no:randomly", "--taskproc-manifest=m.json",
        timeout=300,
    )  # fmt: skip
    assert result.ret in (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.INTERRUPTED)
    found = entries(pytester.path / "m.json")
    assert set(found) == ITEMS
    assert found["task_holes.py::Step[1]"]["status"] == "failed"
    statuses = {e["status"] for e in found.values()}
    assert statuses <= {"computed", "failed", "not run", "skipped"}, statuses
    # Entries filled in by the controller look like the others.
    for entry in found.values():
        assert set(entry) >= {"task", "args", "id", "record", "status", "item"}
    base = found["task_holes.py::Base"]
    assert base["record"] is not None and base["args"] == {}


def test_a_killed_worker_leaves_its_items_as_crashed_and_deselected(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(task_holes=TASKS)
    monkeypatch.setenv("KILL_AT", "3")
    result = pytester.runpytest_subprocess(
        "--taskproc", "-n", "2", "-p", "no:randomly", "-k", "not Other",
        "--taskproc-manifest=m.json", timeout=300,
    )  # fmt: skip
    assert "crashed while running" in result.stdout.str()
    found = entries(pytester.path / "m.json")
    assert set(found) == ITEMS
    assert found["task_holes.py::Step[3]"]["status"] == "crashed"
    assert found["task_holes.py::Step[3]"]["record"] is None
    assert found["task_holes.py::Other"]["status"] == "deselected"
    for n in (1, 2, 4, 5):
        assert found[f"task_holes.py::Step[{n}]"]["status"] == "computed"
