"""Scratch folders of killed runs are swept by the next run that ends; live ones never are."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from taskproject import Project

pytest.importorskip("fcntl")

TASKS = """
class One(TaskBase):
    def run_task(self) -> int:
        log("One")
        return 1
"""

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_SH)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_run_sweeps_the_folders_of_runs_that_are_gone_and_keeps_live_ones(
    pytester: pytest.Pytester,
) -> None:
    project = Project(pytester)
    project.task_file("task_one.py", TASKS)
    runs = project.cache / "taskproc" / ".runs"
    killed = runs / "killed"  # a run SIGKILLed mid-way: its lock file, held by nobody
    (killed / "failed").mkdir(parents=True)
    (killed / "alive.lock").write_text("")
    (killed / "failed" / "task_one.One.0").write_text("failed\nRuntimeError: boom")
    old = runs / "old"  # an older version's folder, days old
    old.mkdir()
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    recent = runs / "recent"  # an older version's folder of a run that may still go on
    recent.mkdir()
    live = runs / "live"  # a run going on in another process
    live.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(live / "alive.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = project.run()
        assert result.ret == 0
        assert project.runs() == ["One"]
        assert sorted(p.name for p in runs.iterdir()) == ["live", "recent"]
    finally:
        holder.communicate("")
    # Once its process is gone, the next run that ends removes it too.
    project.run()
    assert sorted(p.name for p in runs.iterdir()) == ["recent"]


def test_a_run_holds_its_folder_while_it_lives(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run ending meanwhile leaves it alone (its failure markers stay)."""
    project = Project(pytester)
    project.task_file(
        "task_one.py",
        TASKS,
        """
class Peek(TaskBase):
    def run_task(self) -> list:
        import fcntl
        runs = os.path.join(os.environ["TP_CACHE"], "taskproc", ".runs")
        held = []
        for name in os.listdir(runs):
            fd = os.open(os.path.join(runs, name, "alive.lock"), os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                held.append(name)
            finally:
                os.close(fd)
        log("held", len(held))
        return held
""",
    )
    monkeypatch.setenv("TP_CACHE", str(project.cache))
    result = project.run()
    assert result.ret == 0
    assert "held 1" in project.runs()
    assert not (project.cache / "taskproc" / ".runs").exists()  # its own, removed at the end
