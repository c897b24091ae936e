"""A pytest-timeout timeout on an executor: the task under way is stopped where it runs.

Inline, the timeout is raised inside ``run_task``; on an executor the item
only waits, so the run gives up on the task: it records the failure, stops
the task in its pool process or thread, caches nothing of it, and skips what
is downstream naming it.  Each task here logs when it starts and, from a
``finally``, when it was stopped, so a test can tell it really ended where it
ran rather than being left to finish.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from taskproject import AFTER_SLOW, Project, assert_counts_agree

from pytest_taskproc.cancel import request_stop, running_note
from pytest_taskproc.ledger import RUNNING_SUFFIX

pytest.importorskip("pytest_timeout")

SLOW = (
    """
class Slow(TaskBase):
    def run_task(self) -> int:
        log("Slow", os.getpid())
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # stopped by the timeout long before that
                time.sleep(0.01)
        finally:
            log("Slow stopped")
        return 1

"""
    + AFTER_SLOW
    + """


@pytest.mark.timeout(60)
class Beside(TaskBase):
    '''Runs beside Slow until Slow was stopped: a timeout ends only its own item's work.'''

    def run_task(self) -> int:
        log("Beside")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(LOG, encoding="utf-8") as handle:
                if "Slow stopped" in handle.read():
                    return 2
            time.sleep(0.01)
        return 0
"""
)


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester, warnings_as_errors=False)  # execnet and pools warn on their own


def started(project: Project) -> list[str]:
    """The log, with the pid a Slow task logs when it starts left out."""
    lines = project.runs()
    return ["Slow" if line.startswith("Slow ") and line[5:].isdigit() else line for line in lines]


def results(project: Project, name: str) -> list[str]:
    return [p.name for p in project.cache.rglob(f"task_slow.{name}/results/*/result.pkl*")]


@pytest.mark.parametrize(
    "options",
    [
        ("--taskproc-executor=process:2",),
        ("--taskproc-executor=thread:2",),
        pytest.param(("--taskproc-executor=process:2", "-n", "2"), marks=pytest.mark.slow),
        pytest.param(("--taskproc-executor=thread:2", "-n", "2"), marks=pytest.mark.slow),
        pytest.param(("--taskproc-executor=dask",), marks=pytest.mark.slow),
    ],
    ids=["process", "thread", "process-xdist", "thread-xdist", "dask"],
)
def test_a_timeout_on_an_executor_stops_the_task_and_skips_its_downstream(
    project: Project, options: tuple[str, ...]
) -> None:
    if "-n" in options:
        pytest.importorskip("xdist")
    if "--taskproc-executor=dask" in options:
        pytest.importorskip("distributed")
    project.task_file("task_slow.py", SLOW)
    # Long enough for the task to have started: a Dask cluster under load takes seconds
    # to import the task file on its workers.
    timeout = "--timeout=12" if "--taskproc-executor=dask" in options else "--timeout=3"
    result = project.run(timeout, "--timeout-method=signal", "-rsf", *options)
    lines = started(project)
    assert lines.count("Slow") == 1 and "Slow stopped" in lines, lines  # stopped where it ran
    assert "After 1" not in lines and "After 2" not in lines
    assert lines.count("Beside") == 1
    assert assert_counts_agree(result) == {"computed": 1, "cached": 0, "failed": 1, "skipped": 2}
    result.stdout.fnmatch_lines_random(
        [
            "FAILED task_slow.py::Slow - Failed: Timeout*",
            "SKIPPED [[]2[]] task_slow.py:*: upstream task Slow() failed (Failed: Timeout*",
        ]
    )
    assert results(project, "Slow") == []  # nothing of it was cached
    assert results(project, "Beside") == ["result.pkl"]  # the task beside it was not touched

    # The next run computes it (quick now) and what needs it; Beside stays cached.
    project.task_file("task_slow.py", SLOW.replace("time.monotonic() + 60", "0", 1))
    project.log.unlink()
    again = project.run("--timeout=30", *options)
    assert sorted(started(project)) == ["After 1", "After 2", "Slow", "Slow stopped"]
    assert assert_counts_agree(again) == {"computed": 3, "cached": 1, "failed": 0, "skipped": 0}


SWALLOWS = """
class Slow(TaskBase):
    def run_task(self) -> int:
        log("Slow", os.getpid())
        try:
            while True:
                time.sleep(0.01)
        except BaseException:  # research code that catches everything, and goes on
            log("Slow stopped")
        return 1


class After(TaskBase):
    slow: Requires[int]

    def build_task(self) -> None:
        self.slow = Slow()

    def run_task(self) -> int:
        log("After")
        return self.slow
"""


def test_a_task_that_swallows_the_stop_keeps_nothing(project: Project) -> None:
    """Its value, finished after the run gave up on it, is not written."""
    project.task_file("task_slow.py", SWALLOWS)
    result = project.run(
        "--timeout=3", "--timeout-method=signal", "-rsf", "--taskproc-executor=process:2"
    )
    assert started(project) == ["Slow", "Slow stopped"]
    assert assert_counts_agree(result) == {"computed": 0, "cached": 0, "failed": 1, "skipped": 1}
    assert results(project, "Slow") == []


ORPHANS = """
class Slow(TaskBase):
    def run_task(self) -> int:
        parent = os.getppid()
        with open(f"/proc/{parent}/task/{parent}/children") as handle:
            pool = handle.read().split()  # this process and the idle one beside it
        log("Slow", *pool)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return 1
"""


def test_a_timeout_that_ends_pytest_ends_the_pool_processes_too(project: Project) -> None:
    """pytest-timeout's thread method ends pytest with ``os._exit``: no pool process goes
    on, neither the one computing the task nor an idle one."""
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        pytest.skip("this kernel does not list a process's children in /proc")
    project.task_file("task_slow.py", ORPHANS)
    result = project.run("--timeout=3", "--timeout-method=thread", "--taskproc-executor=process:2")
    assert result.ret != pytest.ExitCode.OK
    (line,) = project.runs()
    pool = [int(pid) for pid in line.split()[1:]]
    assert len(pool) >= 2, line
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pool):  # the kernel ends them with their parent
        assert time.monotonic() < deadline, f"pool processes {pool} outlived pytest"
        time.sleep(0.05)
    assert results(project, "Slow") == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its adoptive parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_stop_request_never_signals_a_process_outside_the_pool(tmp_path: object) -> None:
    """A pid read from a marker could belong to anything by now: only pool pids are signalled."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker = str(tmp_path) + "/Task.1"
        host = running_note().split()[0]
        with open(marker + RUNNING_SUFFIX, "w", encoding="utf-8") as handle:
            handle.write(f"{host} {bystander.pid} 1")
        open(marker, "w").close()  # the failure marker: the run gave up on it
        assert request_stop(marker, frozenset()) is False
        assert request_stop(marker, frozenset(), hard=True) is False
        assert bystander.poll() is None  # untouched
        assert request_stop(marker, frozenset({bystander.pid}), hard=True) is True
        assert bystander.wait(timeout=30) != 0
    finally:
        bystander.kill()
        bystander.wait()


STUBBORN = """
import signal


class Stubborn(TaskBase):
    def run_task(self) -> int:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # deaf to being asked to stop
        log("Stubborn", os.getpid())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return 1
"""


def test_a_task_deaf_to_the_stop_is_ended_with_the_run(project: Project) -> None:
    """The run does not wait for it: its pool process is killed when the run ends."""
    project.task_file("task_stubborn.py", STUBBORN)
    result = project.run(
        "--timeout=3", "--timeout-method=signal", "--taskproc-executor=process:1", "-rf"
    )
    result.stdout.fnmatch_lines(["FAILED task_stubborn.py::Stubborn - Failed: Timeout*"])
    (line,) = project.runs()
    pid = int(line.split()[1])
    assert not _alive(pid)  # ended before pytest exited, not 120 s later
    assert list(project.cache.rglob("result.pkl*")) == []
