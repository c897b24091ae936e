"""``--taskproc-executor``: a pytest run computing its tasks on a pool or a Dask cluster."""

from __future__ import annotations

import json

import pytest
from taskproject import Project

TASKS = """
class Part(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("Part", self.i, os.getpid())
        return self.i * self.i


class Whole(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Part(i) for i in range(4)]

    def run_task(self) -> int:
        log("Whole", sum(self.parts), os.getpid())
        return sum(self.parts)
"""

CONFTEST = """
import os


def pytest_configure(config):
    with open("pytest.pid", "w") as handle:
        handle.write(str(os.getpid()))
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    # Dask's cluster start-up warns about things that are not this plugin's.
    project = Project(pytester, warnings_as_errors=False)
    project.task_file("task_parts.py", TASKS)
    (pytester.path / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    return project


@pytest.mark.parametrize("spec", ["process:2", "thread:2", "dask"])
def test_tasks_run_on_the_named_executor_and_are_cached_after(project: Project, spec: str) -> None:
    first = project.run(f"--taskproc-executor={spec}")
    assert first.parseoutcomes() == {"passed": 5}, first.stdout.str()
    lines = [line.split() for line in project.runs()]
    assert sorted(line[:2] for line in lines) == [
        ["Part", "0"],
        ["Part", "1"],
        ["Part", "2"],
        ["Part", "3"],
        ["Whole", "14"],
    ]
    pytest_pid = (project.path / "pytest.pid").read_text()
    pids = {line[-1] for line in lines}
    if spec.startswith("thread"):
        assert pids == {pytest_pid}
    else:
        assert pytest_pid not in pids
    second = project.run(f"--taskproc-executor={spec}")
    assert second.parseoutcomes() == {"cached": 5}
    assert project.runs() == []


def test_a_task_failing_on_a_pool_fails_its_item_with_the_remote_traceback(
    project: Project,
) -> None:
    project.task_file(
        "task_fails.py",
        """
class Broken(TaskBase):
    def run_task(self) -> int:
        raise KeyError("missing column")
""",
    )
    result = project.run("--taskproc-executor=process:2", "-k", "Broken")
    result.assert_outcomes(failed=1, deselected=5)
    result.stdout.fnmatch_lines(["*KeyError: 'missing column'*", "*task_fails.py*"])


def test_a_breakdown_of_the_background_scheduler_is_the_next_items_error(
    pytester: pytest.Pytester,
) -> None:
    """The scheduler thread pickles jobs for the pool: a task that refuses there breaks it.

    The task pickles from the main thread, so an item computing it alone
    would pass: the error must reach the user as the next item's error
    instead of vanishing into that fallback.
    """
    project = Project(pytester)
    project.task_file(
        "task_unshippable.py",
        """
import threading


class Unshippable(TaskBase):
    def __reduce__(self) -> object:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("this task refuses to be pickled outside the main thread")
        return super().__reduce__()

    def run_task(self) -> int:
        log("Unshippable")
        return 1
""",
    )
    result = project.run("--taskproc-executor=process:1")
    assert result.parseoutcomes() == {"failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["*RuntimeError: this task refuses to be pickled outside*"])
    assert project.runs() == []


KILLED = """
import signal


class Killed(TaskBase):
    def run_task(self) -> int:
        print("loaded 3 of 4 shards")
        print("shard 4 is large", file=sys.stderr)
        log("Killed", os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        return 1


class AfterKilled(TaskBase):
    killed: Requires[int]

    def build_task(self) -> None:
        self.killed = Killed()

    def run_task(self) -> int:
        return self.killed
"""


def test_a_killed_task_s_output_is_in_its_report_and_kept_until_it_runs_again(
    project: Project,
) -> None:
    """What a task printed before its process was killed is what its user needs most."""
    project.task_file("task_killed.py", "import sys\n", KILLED)
    result = project.run("--taskproc-executor=process:1", "-k", "Killed", "-rs")
    result.assert_outcomes(failed=1, skipped=1, deselected=5)
    result.stdout.fnmatch_lines(
        [
            "*- Captured stdout call -*",
            "loaded 3 of 4 shards",
            "*- Captured stderr call -*",
            "shard 4 is large",
        ]
    )
    (stdout,) = project.cache.glob("taskproc/task_killed.Killed/results/*/stdout.txt")
    result.stdout.fnmatch_lines([f"  stdout:    {stdout}"])
    assert "printed nothing" not in result.stdout.str()
    assert stdout.read_text() == "loaded 3 of 4 shards\n"
    assert not list(project.cache.glob("taskproc/task_killed.Killed/results/*/record.json"))

    # Kept beside the absent result, until the task runs again.
    task_file = project.path / "task_killed.py"
    task_file.write_text(task_file.read_text().replace("os.kill(", "(lambda *a: None)("))
    again = project.run("--taskproc-executor=process:1", "-k", "Killed")
    again.assert_outcomes(passed=2, deselected=5)
    assert stdout.read_text() == "loaded 3 of 4 shards\n"  # the new run's own output
    assert not list(stdout.parent.glob(".*"))  # no hidden leftovers either


COVERED = """
def helper(x: int) -> int:
    if x > 100:
        return -1  # never run: coverage must say so
    return x * 2  # run only in the pool's worker processes


class Doubled(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        return helper(self.i)


class Sum(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Doubled(i) for i in range(2)]

    def run_task(self) -> int:
        return sum(self.parts)
"""


def test_pytest_cov_measures_the_code_run_on_the_process_pool(project: Project) -> None:
    """coverage's documented multiprocessing support; the pool ends before pytest-cov combines."""
    pytest.importorskip("pytest_cov")
    path = project.task_file("task_covered.py", COVERED)
    (project.path / ".coveragerc").write_text(
        "[run]\nconcurrency = multiprocessing\nparallel = true\n", encoding="utf-8"
    )
    result = project.run(
        "--taskproc-executor=process:2",
        "-k",
        "Doubled or Sum",
        f"--cov={project.path}",
        "--cov-report=json:coverage.json",
    )
    result.assert_outcomes(passed=3, deselected=5)
    report = json.loads((project.path / "coverage.json").read_text(encoding="utf-8"))
    (measured,) = [v for k, v in report["files"].items() if k.endswith("task_covered.py")]
    lines = path.read_text(encoding="utf-8").splitlines()
    never = lines.index("        return -1  # never run: coverage must say so") + 1
    pool_only = lines.index("    return x * 2  # run only in the pool's worker processes") + 1
    run_task = lines.index("        return helper(self.i)") + 1
    assert never in measured["missing_lines"]
    assert pool_only in measured["executed_lines"] and run_task in measured["executed_lines"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--taskproc-executor=process:2"], "process:2"),
        (["--taskproc-executor", "process"], "process"),
        (["--taskproc-executor=thread:2", "--taskproc-executor=process"], "process"),
        (["--taskproc-executor=process", "--taskproc-executor=thread"], None),
        (["--taskproc-executor=process:0"], None),  # invalid: pytest_configure says so
        (["--color=yes", "--taskproc-executor=process"], "process"),
        (["-n", "2", "--taskproc-executor=process"], None),  # the xdist controller
        (["-nauto", "--taskproc-executor=process"], None),
        (["--co", "--taskproc-executor=process"], None),
        (["--collect-only", "--taskproc-executor=process"], None),
        (["--taskproc"], None),
    ],
)
def test_the_pool_server_starts_early_only_for_a_process_pool_that_will_run_here(
    args: list[str], expected: str | None
) -> None:
    from pytest_taskproc.plugin import _pool_on_command_line

    assert _pool_on_command_line(tuple(args)) == expected
