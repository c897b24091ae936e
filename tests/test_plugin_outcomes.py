"""End-to-end: whatever ends ``run_task`` is one outcome, recorded once, in pytest's own terms.

``pytest.fail``/``skip``/``xfail``, ``SystemExit`` and pytest-timeout's
timeouts end a task like an exception: its item fails, skips or xfails, the
task runs once (the run log shows each ``run_task`` call), every item
downstream of it is skipped naming it, and the ``taskproc:`` line counts what
pytest counts.  A rerun of the same item (pytest-rerunfailures) really runs
the task again.  These runs use the real third-party plugins.
"""

from __future__ import annotations

from collections import Counter

import pytest
from taskproject import AFTER_SLOW, Project, assert_counts_agree

ENDINGS = """
import sys


class Fails(TaskBase):
    def run_task(self) -> int:
        log("Fails")
        pytest.fail("explicit failure")


class Skips(TaskBase):
    def run_task(self) -> int:
        log("Skips")
        pytest.skip("no GPU here")


class XFails(TaskBase):
    def run_task(self) -> int:
        log("XFails")
        pytest.xfail("known bug")


class Exits(TaskBase):
    def run_task(self) -> int:
        log("Exits")
        sys.exit(3)


class Raises(TaskBase):
    def run_task(self) -> int:
        log("Raises")
        raise RuntimeError("boom")


@pytest.mark.parametrize("up", ["Fails", "Skips", "XFails", "Exits", "Raises"])
class Down(TaskBase):
    x: Requires[int]

    def build_task(self, up: str) -> None:
        self.x = globals()[up]()

    def run_task(self) -> int:
        log("Down", self.task_args["up"])
        return self.x


@pytest.mark.parametrize("up", ["Fails", "Skips", "XFails", "Exits", "Raises"])
class Further(TaskBase):
    x: Requires[int]

    def build_task(self, up: str) -> None:
        self.x = Down(up)

    def run_task(self) -> int:
        log("Further", self.task_args["up"])
        return self.x
"""

UPSTREAM = ["Fails", "Skips", "XFails", "Exits", "Raises"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


def check_endings(project: Project, result: pytest.RunResult) -> None:
    assert Counter(project.runs()) == Counter(UPSTREAM), result.stdout.str()
    counts = assert_counts_agree(result)
    assert counts == {"computed": 0, "cached": 0, "failed": 3, "skipped": 11, "xfailed": 1}
    result.stdout.fnmatch_lines_random(
        [
            # Under xdist another worker may have met it first: same failure, said so.
            "FAILED task_endings.py::Fails - *Failed: explicit failure*",
            "FAILED task_endings.py::Exits - *SystemExit: 3*",
            "FAILED task_endings.py::Raises - *RuntimeError: boom*",
            "XFAIL task_endings.py::XFails*known bug",
            "SKIPPED [[]1[]] task_endings.py:*: no GPU here",
            "SKIPPED [[]1[]] task_endings.py:*: upstream task Fails() failed (Failed: explicit "
            "failure)",
            "SKIPPED [[]1[]] task_endings.py:*: upstream task Skips() was skipped (no GPU here)",
            "SKIPPED [[]1[]] task_endings.py:*: upstream task XFails() xfailed (known bug)",
            "SKIPPED [[]1[]] task_endings.py:*: upstream task Exits() failed (SystemExit: 3)",
            "SKIPPED [[]1[]] task_endings.py:*: upstream task Raises() failed (RuntimeError: boom)",
        ]
    )
    # The pytest internals of an outcome raised from run_task are not shown.
    result.stdout.no_fnmatch_line("*_pytest/*.py:*")


def test_pytest_outcomes_and_system_exit_end_a_task_once(project: Project) -> None:
    project.task_file("task_endings.py", ENDINGS)
    result = project.run("-rsxf")
    check_endings(project, result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED

    # Nothing of them was cached: the next run tries each again, once.
    again = project.run("-rsxf")
    check_endings(project, again)


@pytest.mark.slow
@pytest.mark.parametrize("dist", ["load", "worksteal"])
def test_pytest_outcomes_end_a_task_once_across_xdist_workers(
    pytester: pytest.Pytester, dist: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("COLUMNS", "240")  # summary lines uncut: they may be long here
    project = Project(pytester, warnings_as_errors=False)  # execnet warns on its own
    project.task_file("task_endings.py", ENDINGS)
    check_endings(project, project.run("-rsxf", "-n", "2", f"--dist={dist}"))


# -- pytest-timeout ----------------------------------------------------------------------

SLOW = (
    """
class Slow(TaskBase):
    def run_task(self) -> int:
        log("Slow")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # stopped by pytest-timeout long before that
            time.sleep(0.01)
        return 1

"""
    + AFTER_SLOW
    + """


class Quick(TaskBase):
    def run_task(self) -> int:
        log("Quick")
        return 1
"""
)


def test_a_timeout_fails_the_task_once_and_skips_its_downstream(project: Project) -> None:
    """The signal method raises pytest.fail inside run_task: one outcome like any other."""
    pytest.importorskip("pytest_timeout")
    project.task_file("task_slow.py", SLOW)
    result = project.run("--timeout=1", "--timeout-method=signal", "-rsf")
    assert sorted(project.runs()) == ["Quick", "Slow"]  # the timeout is paid once
    assert assert_counts_agree(result) == {
        "computed": 1,
        "cached": 0,
        "failed": 1,
        "skipped": 2,
    }
    result.stdout.fnmatch_lines_random(
        [
            "FAILED task_slow.py::Slow - Failed: Timeout*",
            "SKIPPED [[]2[]] task_slow.py:*: upstream task Slow() failed (Failed: Timeout*",
        ]
    )
    assert not list(project.cache.rglob("task_slow.Slow/results/*/result.pkl*"))


@pytest.mark.slow
def test_a_timeout_that_kills_an_xdist_worker_is_not_paid_again(pytester: pytest.Pytester) -> None:
    """The thread method ends the worker process: the task is recorded as died, not retried.

    ``--dist loadfile`` keeps the items of the file on one worker in order, so
    no item waits for the slow task's lock on another worker meanwhile (the
    wait would count against that item's own timeout).
    """
    pytest.importorskip("pytest_timeout")
    pytest.importorskip("xdist")
    project = Project(pytester, warnings_as_errors=False)
    project.task_file("task_slow.py", SLOW)
    result = project.run(
        "--timeout=1", "--timeout-method=thread", "-n", "2", "--dist=loadfile", "-rs"
    )
    lines = project.runs()
    assert lines.count("Slow") == 1, result.stdout.str()
    assert "After 1" not in lines and "After 2" not in lines
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running 'task_slow.py::Slow'*"])
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]2[]] task_slow.py:*: upstream task Slow() failed (TaskDiedError: the process "
         "computing it died before it finished*"]
    )  # fmt: skip
    # xdist may hand the crashed item to the new worker once more: it fails, without running.
    counts = assert_counts_agree(result)
    assert counts["skipped"] == 2 and counts["computed"] == 1 and counts["failed"] >= 1


def test_a_timeout_that_ends_the_run_leaves_nothing_cached(project: Project) -> None:
    pytest.importorskip("pytest_timeout")
    project.task_file("task_slow.py", SLOW)
    result = project.run("--timeout=1", "--timeout-method=thread", "task_slow.py::Slow")
    assert result.ret != pytest.ExitCode.OK
    assert "Timeout" in result.stderr.str() + result.stdout.str()
    assert project.runs() == ["Slow"]
    # The next run computes it again (here without a timeout, so it is stopped by hand).
    project.task_file(
        "task_slow.py", SLOW.replace("deadline = time.monotonic() + 60", "deadline = 0")
    )
    expect = project.run("task_slow.py::Slow")
    assert assert_counts_agree(expect)["computed"] == 1
    assert project.runs() == ["Slow"]


# -- pytest-rerunfailures ---------------------------------------------------------------------

FLAKY = """
ATTEMPTS = os.path.join(os.path.dirname(LOG), "attempts")


class Flaky(TaskBase):
    def run_task(self) -> int:
        log("Flaky")
        with open(ATTEMPTS, "a") as handle:
            handle.write("x")
        with open(ATTEMPTS) as handle:
            if len(handle.read()) < 3:
                raise RuntimeError("not yet")
        return 1


class UsesFlaky(TaskBase):
    flaky: Requires[int]

    def build_task(self) -> None:
        self.flaky = Flaky()

    def run_task(self) -> int:
        log("UsesFlaky")
        return self.flaky + 1


class Broken(TaskBase):
    def run_task(self) -> int:
        log("Broken")
        raise RuntimeError("always")
"""


def test_reruns_really_run_the_task_again(project: Project) -> None:
    pytest.importorskip("pytest_rerunfailures")
    project.task_file("task_flaky.py", FLAKY)
    result = project.run("--reruns", "2", "-p", "no:randomly")
    assert project.runs() == [
        "Flaky",
        "Flaky",
        "Flaky",
        "UsesFlaky",
        "Broken",
        "Broken",
        "Broken",
    ]
    assert assert_counts_agree(result) == {
        "computed": 2,
        "cached": 0,
        "failed": 1,
        "skipped": 0,
        "rerun": 4,
    }
    result.stdout.fnmatch_lines(["FAILED task_flaky.py::Broken - RuntimeError: always"])
    result.stdout.no_fnmatch_line("*TaskFailedEarlierError*")

    again = project.run("--reruns", "2")
    assert project.runs() == ["Broken", "Broken", "Broken"]
    assert assert_counts_agree(again)["cached"] == 2
