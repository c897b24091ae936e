"""End-to-end: ``pytest --taskproc -n 2`` and concurrent runs on one cache.

Each task appends a line to ``run.log`` when ``run_task`` is called; a task
computed twice shows up as a duplicate line.  Lines are short single appends,
so lines from concurrent processes never interleave.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections import Counter

import pytest
from taskproject import Project

pytest.importorskip("xdist")

pytestmark = pytest.mark.slow

#: Roots Half[4..7] share most of their upstream Choose tasks.
SHARED = """
@infer_task_type
class Choose(TaskBase):
    prev1: Requires[int]
    prev2: Requires[int]

    def build_task(self, n: int, k: int) -> None:
        if 0 < k < n:
            self.prev1 = Choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)
        else:
            self.prev1 = Const(0)
            self.prev2 = Const(1)

    def run_task(self) -> int:
        time.sleep(0.02)
        log("Choose", self.task_args["n"], self.task_args["k"], os.getpid())
        return self.prev1 + self.prev2


@pytest.mark.parametrize("n", [4, 5, 6, 7])
class Half(TaskBase):
    mid: Requires[int]

    def build_task(self, n: int) -> None:
        self.mid = Choose(n, n // 2)

    def run_task(self) -> int:
        log("Half", self.task_args["n"], os.getpid())
        return self.mid
"""
#: Choose(n, n // 2) for n = 4..7 reach every (n, k) with k <= 3 and n - k <= 4, but (0, 0).
SHARED_TASKS = sum(1 for n in range(1, 8) for k in range(n + 1) if k <= 3 and n - k <= 4) + 4

CHAIN = """
class Link(TaskBase):
    prev: Requires[int]

    def build_task(self, i: int) -> None:
        self.prev = Link(i - 1) if i > 0 else Const(0)

    def run_task(self) -> int:
        time.sleep(0.01)
        log("Link", self.task_args["i"], os.getpid())
        return self.prev + 1


class End(TaskBase):
    last: Requires[int]

    def build_task(self) -> None:
        self.last = Link(11)

    def run_task(self) -> int:
        log("End", self.last, os.getpid())
        return self.last
"""

GPU = """
@pytest.mark.parametrize("i", [0, 1, 2, 3])
class Gpu(TaskBase, channel="<gpu>"):
    def build_task(self, i: int) -> None:
        pass

    def run_task(self) -> int:
        start = time.time()
        time.sleep(0.3)
        log("Gpu", self.task_args["i"], start, time.time(), os.getpid())
        return 1
"""


class WorkerProject(Project):
    """Log lines here end with the pid of the process that wrote them."""

    def runs(self) -> list[str]:
        """Log lines since the last call, without the pid."""
        return [line.rsplit(" ", 1)[0] for line in super().runs()]


@pytest.fixture
def project(pytester: pytest.Pytester) -> WorkerProject:
    # xdist's execnet emits warnings of its own; they are not this plugin's to fail on.
    return WorkerProject(pytester, warnings_as_errors=False)


def assert_each_once(lines: list[str], expected: int) -> None:
    repeated = [line for line, n in Counter(lines).items() if n > 1]
    assert repeated == []
    assert len(lines) == expected


@pytest.mark.parametrize("dist", ["load", "worksteal", "loadgroup", "loadscope"])
def test_shared_upstream_tasks_are_computed_once_across_workers(
    project: Project, dist: str
) -> None:
    project.task_file("task_shared.py", SHARED)
    first = project.run("-n", "2", f"--dist={dist}")
    assert first.ret == pytest.ExitCode.OK, first.stdout.str()
    first.stdout.fnmatch_lines([f"taskproc: {SHARED_TASKS} computed, 0 cached, 0 failed, *"])
    assert_each_once(project.runs(), SHARED_TASKS)

    second = project.run("-n", "2", f"--dist={dist}")
    assert second.parseoutcomes() == {"cached": SHARED_TASKS}
    assert project.runs() == []


def test_a_deep_chain_runs_on_two_workers_without_deadlock(project: Project) -> None:
    project.task_file("task_chain.py", CHAIN)
    result = project.run("-n", "2")
    assert result.parseoutcomes() == {"passed": 13}, result.stdout.str()
    lines = project.runs()
    assert_each_once(lines, 13)
    assert lines[-1] == "End 12"
    assert [line for line in lines if line.startswith("Link")] == [f"Link {i}" for i in range(12)]


def test_two_runs_started_at_once_compute_each_task_once(project: Project) -> None:
    project.task_file("task_shared.py", SHARED)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project.path), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", *project.options(), "-q"]
    runs = [
        subprocess.Popen(
            command, cwd=project.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120)[0].decode() for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
    assert_each_once(project.runs(), SHARED_TASKS)
    result = project.run()
    assert result.parseoutcomes() == {"cached": SHARED_TASKS}


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="Python warns of forks with threads from 3.12"
)
def test_a_worker_does_not_fork_its_pool_from_a_threaded_process(project: Project) -> None:
    """An xdist worker runs a thread that ``threading`` does not list (execnet's): its
    pool's processes start from a fork server, so Python has no fork to warn about."""
    project.task_file("task_shared.py", SHARED)
    result = project.run(
        "-n", "2", "--taskproc-executor=process:2", "-W", "always::DeprecationWarning"
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    output = result.stdout.str() + result.stderr.str()
    assert "multi-threaded, use of fork()" not in output, output
    assert_each_once(project.runs(), SHARED_TASKS)


def test_a_rate_limit_holds_across_workers(project: Project) -> None:
    project.task_file("task_gpu.py", GPU)
    result = project.run("-n", "2", '--taskproc-rate-limits={"<gpu>": 1}')
    assert result.parseoutcomes() == {"passed": 4}, result.stdout.str()
    lines = project.log.read_text(encoding="utf-8").splitlines()
    intervals = sorted((float(start), float(end)) for _, _, start, end, _ in map(str.split, lines))
    assert len(intervals) == 4
    assert len({line.split()[-1] for line in lines}) == 2  # both workers ran some
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert end <= start


def test_clear_with_workers_recomputes_each_selected_task_once(project: Project) -> None:
    project.task_file("task_shared.py", SHARED)
    assert project.run().parseoutcomes() == {"passed": SHARED_TASKS}
    project.runs()
    result = project.run("-n", "2", "--taskproc-clear")
    assert result.parseoutcomes() == {"passed": SHARED_TASKS}, result.stdout.str()
    assert_each_once(project.runs(), SHARED_TASKS)


FAILING = """
class Bad(TaskBase):
    def run_task(self) -> int:
        log("Bad")
        time.sleep(0.5)
        raise ValueError("boom")


@pytest.mark.parametrize("i", [0, 1, 2, 3, 4, 5])
class After(TaskBase):
    bad: Requires[int]

    def build_task(self, i: int) -> None:
        self.bad = Bad()

    def run_task(self) -> int:
        log("After", self.task_args["i"])
        return self.bad
"""


@pytest.mark.parametrize("dist", ["load", "worksteal"])
def test_a_failure_on_one_worker_is_not_retried_by_the_other(project: Project, dist: str) -> None:
    """Both workers reach ``Bad`` at once; it runs once, everything after it is skipped."""
    project.task_file("task_failing.py", FAILING)
    result = project.run("-n", "2", f"--dist={dist}", "-rs")
    assert project.runs() == ["Bad"]
    result.assert_outcomes(failed=1, skipped=6)
    result.stdout.fnmatch_lines(["*upstream task Bad() failed (ValueError: boom)*"])
    result.stdout.fnmatch_lines(["taskproc: 0 computed, 0 cached, 1 failed, 6 skipped;*"])


def test_collect_only_with_workers_is_a_dry_run(project: Project) -> None:
    project.task_file("task_shared.py", SHARED)
    result = project.run("-n", "2", "--collect-only", "-q")
    assert project.runs() == []
    result.stdout.fnmatch_lines(
        [f"taskproc: {SHARED_TASKS} of {SHARED_TASKS} tasks would be computed"]
    )


KILLED = """
import signal


class Steady(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("Steady", self.i)
        return self.i


class Doomed(TaskBase):
    def run_task(self) -> bytes:
        log("Doomed")
        if not os.path.exists(os.path.join(os.path.dirname(LOG), "survive")):
            # What the out-of-memory killer does, half-way through a result.
            os.kill(os.getpid(), signal.SIGKILL)
        return b"x" * 1000


class Total(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Steady(i) for i in range(6)]

    def run_task(self) -> int:
        log("Total")
        return sum(self.parts)
"""


def test_a_worker_killed_mid_task_crashes_one_item_and_leaves_nothing_partial(
    project: Project,
) -> None:
    project.task_file("task_killed.py", KILLED)
    first = project.run("-n", "2")
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    first.stdout.fnmatch_lines(["*worker 'gw*' crashed while running*Doomed*"])
    outcomes = first.parseoutcomes()
    assert outcomes.get("failed") == 1 and outcomes.get("passed") == 7, first.stdout.str()
    results = project.cache / "taskproc" / "task_killed.Doomed" / "results"
    assert list(results.glob("*/result.pkl*")) == []
    assert Counter(project.runs())["Doomed"] == 1

    (project.path / "survive").write_text("", encoding="utf-8")
    second = project.run("-n", "2")
    assert second.parseoutcomes() == {"passed": 1, "cached": 7}
    assert project.runs() == ["Doomed"]


PRINTS_THEN_DIES = """
import signal
import sys


class Steady(TaskBase):
    def run_task(self) -> int:
        print("steady and fine")
        return 1


class Doomed(TaskBase):
    steady: Requires[int]

    def build_task(self) -> None:
        self.steady = Steady()

    def run_task(self) -> int:
        print("half-way through the data")
        print("running low on memory", file=sys.stderr)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
        return 1
"""


def test_a_worker_killed_mid_task_shows_what_the_task_printed_in_the_crash_report(
    project: Project,
) -> None:
    project.task_file("task_dies.py", PRINTS_THEN_DIES)
    result = project.run("-n", "2", "-p", "no:randomly", "--junitxml=junit.xml")
    assert result.parseoutcomes() == {"failed": 1, "passed": 1}, result.stdout.str()
    folder = project.cache / "taskproc" / "task_dies.Doomed" / "results" / "0"
    result.stdout.fnmatch_lines(
        [
            "*worker 'gw*' crashed while running 'task_dies.py::Doomed'",
            "",
            "the process computing task_dies.Doomed (task id 0) died",
            "  arguments: {}",
            f"  stdout:    {folder / 'stdout.txt'}",
            f"  stderr:    {folder / 'stderr.txt'}",
            "*- Captured stdout call -*",
            "half-way through the data",
            "*- Captured stderr call -*",
            "running low on memory",
        ]
    )
    assert "steady and fine" not in result.stdout.str()  # another task's, which passed
    junit = (project.path / "junit.xml").read_text(encoding="utf-8")
    assert "the process computing task_dies.Doomed (task id 0) died" in junit
    assert str(folder / "stdout.txt") in junit


#: Each process adds how many records it read to ``reads.txt``.
COUNT_READS = """
import os

import pytest_taskproc.cache as cache

reads = [0]
_read = cache.ClassStore._record_text


def _counted(self, task_id):
    reads[0] += 1
    return _read(self, task_id)


cache.ClassStore._record_text = _counted


def pytest_sessionfinish(session):
    with open("reads.txt", "a") as handle:
        handle.write(f"{os.getpid()} {reads[0]}\\n")
"""

LONG_CHAIN = """
class Step(TaskBase):
    prev: Requires[int]

    def build_task(self, i: int) -> None:
        self.prev = Step(i - 1) if i else Const(0)

    def run_task(self) -> int:
        return self.prev + 1


class Last(TaskBase):
    prev: Requires[int]

    def build_task(self) -> None:
        self.prev = Step({last})

    def run_task(self) -> int:
        log("Last", self.prev, os.getpid())
        return self.prev
"""


def test_each_worker_plans_a_long_chain_once(project: Project) -> None:
    """Every item used to plan its whole upstream again: n^2 / 2 record reads per worker."""
    n = 1000
    project.task_file("task_chain.py", LONG_CHAIN.format(last=n - 2))
    (project.path / "conftest.py").write_text(COUNT_READS, encoding="utf-8")
    result = project.run("-n", "2")
    assert result.parseoutcomes() == {"passed": n}, result.stdout.str()
    assert project.runs() == [f"Last {n - 1}"]
    reads = {
        pid: int(count)
        for pid, count in map(str.split, (project.path / "reads.txt").read_text().splitlines())
    }
    assert len(reads) == 3  # the controller and two workers
    # Per worker: one read to plan each task, one under the lock of each task
    # it computes or finds computed by the other worker.
    assert all(count <= 2 * n + 10 for count in reads.values()), reads


#: ``AGate`` holds its worker until the other worker has run ``Bad`` as ``Down``'s upstream
#: (its name sorts first too, so it is the file's first item whichever order applies).
FIRST_AS_UPSTREAM = """
class AGate(TaskBase):
    def run_task(self) -> int:
        deadline = time.monotonic() + 60
        while "Bad" not in open(LOG).read().split():
            if time.monotonic() > deadline:
                raise TimeoutError("Down's worker never ran Bad")
            time.sleep(0.05)
        log("AGate", os.getpid())
        return 0


class Bad(TaskBase):
    def run_task(self) -> int:
        log("Bad", os.getpid())
        print("bad was here")
        raise ValueError("boom in Bad")
"""

DOWN = """
from task_gate import Bad


class Down(TaskBase):
    bad: Requires[int]

    def build_task(self) -> None:
        self.bad = Bad()

    def run_task(self) -> int:
        return self.bad
"""


def test_a_failure_computed_for_another_item_lands_in_its_own_item_and_junit(
    project: Project,
) -> None:
    """The worker running ``Down`` computes ``Bad`` first; ``Bad``'s item, on the other worker,
    still shows the traceback of its run_task and its output, in the terminal and JUnit XML."""
    project.task_file("task_gate.py", FIRST_AS_UPSTREAM)
    project.task_file("task_down.py", DOWN)
    # In file order (no pytest-randomly), so the gate is each worker's first item.
    result = project.run(
        "-n", "2", "--dist=loadfile", "-p", "no:randomly", "-rs", "--junitxml=junit.xml"
    )
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    lines = project.log.read_text(encoding="utf-8").splitlines()  # with each writer's pid
    pids = dict(line.split() for line in lines)
    assert sorted(pids) == ["AGate", "Bad"], lines  # Bad computed once
    if pids["AGate"] == pids["Bad"]:
        # xdist may hand both files to one worker (Down first): then Bad's item is
        # on the worker that computed it, and shows the traceback as it was raised.
        result.stdout.fnmatch_lines(["*_ Bad() _*", '>*raise ValueError("boom in Bad")'])
    else:
        result.stdout.fnmatch_lines(
            [
                "*_ Bad() _*",
                "(computed in process *, xdist worker gw*)",
                "Traceback (most recent call last):",
                '*task_gate.py", line *, in run_task',
                '*raise ValueError("boom in Bad")',
                "ValueError: boom in Bad",
                "*",
                "task Bad() failed",
            ]
        )
    result.stdout.fnmatch_lines(["*Captured stdout call*", "bad was here"])
    result.stdout.fnmatch_lines(["*upstream task Bad() failed (ValueError: boom in Bad)*"])
    junit = (project.path / "junit.xml").read_text(encoding="utf-8")
    assert 'raise ValueError("boom in Bad")' in junit.replace("&quot;", '"')


FLAKY_UPSTREAM = """
ATTEMPTS = os.path.join(os.path.dirname(LOG), "attempts")


class Flaky(TaskBase):
    def run_task(self) -> int:
        with open(ATTEMPTS, "a") as handle:
            handle.write("x")
        with open(ATTEMPTS) as handle:
            attempt = len(handle.read())
        log("Flaky", attempt, os.getpid())
        if attempt < 3:
            raise RuntimeError("not yet")
        return 1
"""

USES_FLAKY = """
from task_flaky import ATTEMPTS, Flaky


class AGate(TaskBase):
    def run_task(self) -> int:
        deadline = time.monotonic() + 60
        while not os.path.exists(ATTEMPTS) and time.monotonic() < deadline:
            time.sleep(0.05)
        return 0


class UsesFlaky(TaskBase):
    flaky: Requires[int]

    def build_task(self) -> None:
        self.flaky = Flaky()

    def run_task(self) -> int:
        log("UsesFlaky", os.getpid())
        return self.flaky + 1
"""

#: ``Flaky``'s item is rerun only once ``UsesFlaky``'s first attempt has been reported.
SEEN_CONFTEST = """
import os
import time

SEEN = os.path.join(os.path.dirname(__file__), "downstream-reported")


def pytest_runtest_logreport(report):
    if report.nodeid.endswith("::UsesFlaky") and report.when == "call":
        open(SEEN, "a").close()


def pytest_runtest_setup(item):
    if item.name == "Flaky" and getattr(item, "execution_count", 1) == 2:
        deadline = time.monotonic() + 60
        while not os.path.exists(SEEN) and time.monotonic() < deadline:
            time.sleep(0.05)
"""


def test_with_reruns_a_downstream_item_is_not_skipped_in_a_green_run(project: Project) -> None:
    """``Flaky`` fails on one worker, ``UsesFlaky`` on the other sees that, then ``Flaky``'s
    rerun passes: the downstream item must end passed (after reruns), never skipped."""
    pytest.importorskip("pytest_rerunfailures")
    project.task_file("task_flaky.py", FLAKY_UPSTREAM)
    project.task_file("task_uses.py", USES_FLAKY)
    (project.path / "conftest.py").write_text(SEEN_CONFTEST, encoding="utf-8")
    result = project.run("-n", "2", "--dist=loadfile", "-p", "no:randomly", "--reruns", "3", "-rA")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) == 0 and outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes["passed"] == 3
    result.stdout.fnmatch_lines_random(
        ["PASSED task_uses.py::UsesFlaky*", "PASSED task_flaky.py::Flaky*"]
    )
    runs = project.runs()
    assert runs.count("UsesFlaky") == 1 and runs[-1] == "UsesFlaky"
    assert [line for line in runs if line.startswith("Flaky")] == ["Flaky 1", "Flaky 2", "Flaky 3"]
