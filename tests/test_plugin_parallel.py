"""End-to-end: one plan per run, and the whole stale graph on ``--taskproc-executor``.

With an executor, every stale task of the selection and its upstream is
submitted as soon as its upstream tasks are done, from a thread of the pytest
process; items report their own results in the usual order.  Tasks that must
run at the same time meet at a file barrier, so a run that computed them one
at a time fails instead of passing slowly.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from taskproject import Project, assert_counts_agree, taskproc_counts
from test_plugin_outcomes import ENDINGS, check_endings

#: Each Meet(i) waits at a barrier until the other one has arrived too.
MEET = """
BARRIER = os.path.join(os.path.dirname(LOG), "barrier")


def meet(name: str, parties: int) -> None:
    os.makedirs(BARRIER, exist_ok=True)
    open(os.path.join(BARRIER, name), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(BARRIER)) < parties:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} met nobody: the tasks ran one after another")
        time.sleep(0.01)


class Meet(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        meet(f"meet{self.i}", 2)
        log("Meet", self.i)
        time.sleep(SETTLE)
        return self.i


class Join(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Meet(0), Meet(1)]

    def run_task(self) -> int:
        log("Join")
        return sum(self.parts)
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


def meet_tasks(project: Project, settle: float = 0.0) -> None:
    project.task_file("task_meet.py", f"SETTLE = {settle}\n", MEET)


@pytest.mark.parametrize("spec", ["process:2", "thread:2"])
def test_independent_tasks_run_at_once_on_the_executor(project: Project, spec: str) -> None:
    meet_tasks(project)
    result = project.run(f"--taskproc-executor={spec}", "-v", "-p", "no:randomly")
    assert assert_counts_agree(result) == {"computed": 3, "cached": 0, "failed": 0, "skipped": 0}
    assert sorted(project.runs()) == ["Join", "Meet 0", "Meet 1"]
    # Reported in the usual order, each with why it ran.
    result.stdout.fnmatch_lines(
        [
            "task_meet.py::Meet[[]0[]] PASSED (computed: no result yet)*",
            "task_meet.py::Meet[[]1[]] PASSED (computed: no result yet)*",
            "task_meet.py::Join PASSED (computed: no result yet)*",
        ]
    )
    assert project.run(f"--taskproc-executor={spec}").parseoutcomes() == {"cached": 3}


def test_the_ini_option_names_the_executor(project: Project) -> None:
    meet_tasks(project)
    project.pytester.makeini("[pytest]\ntaskproc_executor = thread:2\n")
    assert project.run().parseoutcomes() == {"passed": 3}


def test_a_bad_executor_in_the_ini_file_is_a_usage_error(project: Project) -> None:
    meet_tasks(project)
    project.pytester.makeini("[pytest]\ntaskproc_executor = cluster\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: ini option taskproc_executor: unknown executor 'cluster'*"]
    )


def test_upstream_of_a_selection_runs_in_parallel_shows_progress_and_is_counted(
    project: Project,
) -> None:
    meet_tasks(project, settle=1.0)
    result = project.run("--taskproc-executor=process:2", "-k", "Join")
    assert result.parseoutcomes() == {"passed": 1, "deselected": 2}
    assert sorted(project.runs()) == ["Join", "Meet 0", "Meet 1"]
    assert taskproc_counts(result)["computed"] == 1
    result.stdout.fnmatch_lines(
        [
            "[[]taskproc[]] */3 stale tasks done; Join waits for its task*",
            "[[]taskproc[]] 3/3 stale tasks done; Join has its result*",
            "taskproc: 1 computed (+2 upstream), 0 cached, 0 failed, 0 skipped; *",
        ]
    )


SLOW_THEN_WRONG = """
class Slow(TaskBase):
    def build_task(self, fail: bool) -> None:
        self.fail = fail

    def run_task(self) -> int:
        time.sleep(1.0)  # long enough for the progress line to be shown
        if self.fail:
            raise ValueError("slow and wrong")
        return 1


class Broken(TaskBase):
    slow: Requires[int]

    def build_task(self) -> None:
        self.slow = Slow(False)

    def run_task(self) -> int:
        raise ValueError("broken")


class After(TaskBase):
    slow: Requires[int]

    def build_task(self) -> None:
        self.slow = Slow(True)

    def run_task(self) -> int:
        return self.slow + 1
"""


@pytest.mark.parametrize("selected", ["Broken", "After"])
def test_the_last_progress_line_says_what_became_of_a_task_that_did_not_pass(
    project: Project, selected: str
) -> None:
    project.task_file("task_slow.py", SLOW_THEN_WRONG)
    result = project.run("--taskproc-executor=thread:2", "-k", selected)
    ending = {
        "Broken": "Broken failed (ValueError)",
        "After": "After is skipped: upstream task Slow(True) failed",
    }[selected]
    result.stdout.fnmatch_lines([f"[[]taskproc[]] *; {selected} waits for its task*"])
    result.stdout.fnmatch_lines([f"[[]taskproc[]] *stale tasks done; {ending} (*"])
    assert "has its result" not in result.stdout.str()


def test_upstream_of_a_selection_computed_inline_is_counted_and_shown(project: Project) -> None:
    project.task_file(
        "task_chain.py",
        """
class Step(TaskBase):
    prev: Requires[int]

    def build_task(self, i: int) -> None:
        self.prev = Step(i - 1) if i else Const(0)

    def run_task(self) -> int:
        log("Step", self.task_args["i"])
        time.sleep(0.2)  # long enough, all five, for the progress line
        return self.prev + 1


class Last(TaskBase):
    prev: Requires[int]

    def build_task(self) -> None:
        self.prev = Step(4)

    def run_task(self) -> int:
        return self.prev
""",
    )
    result = project.run("-k", "Last")
    assert result.parseoutcomes() == {"passed": 1, "deselected": 5}
    result.stdout.fnmatch_lines(
        [
            "[[]taskproc[]] Last: * upstream tasks done of 5; last done: Step(*); about * s left",
            "[[]taskproc[]] Last: 5 upstream tasks done in *",
            "taskproc: 1 computed (+5 upstream), *",
        ]
    )


RATE = """
@pytest.mark.parametrize("i", [0, 1, 2, 3])
class Gpu(TaskBase, channel="<gpu>"):
    def build_task(self, i: int) -> None:
        pass

    def run_task(self) -> int:
        start = time.time()
        time.sleep(0.2)
        log("Gpu", self.task_args["i"], start, time.time())
        return 1
"""


def test_rate_limits_hold_on_the_executor(project: Project) -> None:
    project.task_file("task_gpu.py", RATE)
    result = project.run("--taskproc-executor=thread:4", '--taskproc-rate-limits={"<gpu>": 1}')
    assert result.parseoutcomes() == {"passed": 4}, result.stdout.str()
    intervals = sorted((float(line.split()[2]), float(line.split()[3])) for line in project.runs())
    assert len(intervals) == 4
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert end <= start


MANY = """
class Fails(TaskBase):
    def run_task(self) -> int:
        log("Fails")
        raise RuntimeError("first")


@pytest.mark.parametrize("i", list(range(12)))
class Slow(TaskBase):
    def build_task(self, i: int) -> None:
        pass

    def run_task(self) -> int:
        time.sleep(0.3)
        log("Slow", self.task_args["i"])
        return 1
"""


def test_exitfirst_cancels_the_tasks_not_started(project: Project) -> None:
    project.task_file("task_many.py", MANY)
    result = project.run("--taskproc-executor=process:2", "-x", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    lines = project.runs()
    assert lines[0] == "Fails"
    # Two workers, a few jobs queued ahead: far fewer than the twelve.
    assert len(lines) - 1 <= 6, lines


@pytest.mark.parametrize("spec", ["thread:2", "process:2"])
def test_pytest_outcomes_end_a_task_once_on_the_executor(project: Project, spec: str) -> None:
    project.task_file("task_endings.py", ENDINGS)
    check_endings(project, project.run("-rsxf", f"--taskproc-executor={spec}"))


HELD = """
HOLD = os.path.join(os.path.dirname(LOG), "hold")


@pytest.mark.parametrize("i", [0, 1])
class Held(TaskBase):
    def build_task(self, i: int) -> None:
        pass

    def run_task(self) -> int:
        log("Held", self.task_args["i"])
        deadline = time.monotonic() + 60
        while os.path.exists(HOLD) and time.monotonic() < deadline:
            time.sleep(0.01)
        return 1


@pytest.mark.parametrize("i", list(range(6)))
class Later(TaskBase):
    def build_task(self, i: int) -> None:
        pass

    def run_task(self) -> int:
        log("Later", self.task_args["i"])
        return 1
"""


def test_ctrl_c_stops_the_executor_at_once(project: Project) -> None:
    project.task_file("task_held.py", HELD)
    (project.path / "hold").touch()
    command = [sys.executable, "-m", "pytest", *project.options(), "-p", "no:randomly"]
    command += ["--taskproc-executor=process:2"]
    with open(project.path / "out.txt", "wb") as out:
        proc = subprocess.Popen(command, cwd=project.path, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while sorted(_lines(project.log)) != ["Held 0", "Held 1"]:
                assert time.monotonic() < deadline and proc.poll() is None, _text(project)
                time.sleep(0.05)
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)  # to pytest alone, not to the pool's workers
            code = proc.wait(timeout=30)
        finally:
            proc.kill()
    assert time.monotonic() - start < 20, "waited for the held tasks"
    assert code == pytest.ExitCode.INTERRUPTED, _text(project)
    assert "KeyboardInterrupt" in _text(project)
    assert sorted(_lines(project.log)) == ["Held 0", "Held 1"]  # nothing else started
    assert not list(project.cache.rglob("task_held.*/results/*/result.pkl*"))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _text(project: Project) -> str:
    return (project.path / "out.txt").read_text(errors="replace")


# -- one plan per run -----------------------------------------------------------------------

CHAIN = """
class Link(TaskBase):
    prev: Requires[int]

    def build_task(self, i: int) -> None:
        self.prev = Link(i - 1) if i else Const(0)

    def run_task(self) -> int:
        return self.prev + 1


class End(TaskBase):
    last: Requires[int]

    def build_task(self) -> None:
        self.last = Link({n})

    def run_task(self) -> int:
        log("End", self.last)
        return self.last
"""

#: Counts the records the run reads, by wrapping the one method that reads them.
COUNT_READS = """
import pytest_taskproc.cache as cache

reads = [0]
_read = cache.ClassStore._record_text


def _counted(self, task_id):
    reads[0] += 1
    return _read(self, task_id)


cache.ClassStore._record_text = _counted


def pytest_sessionfinish(session):
    with open("reads.txt", "w") as handle:
        handle.write(str(reads[0]))
"""


@pytest.mark.slow
def test_a_long_chain_is_planned_once_not_once_per_item(project: Project) -> None:
    """Each item used to plan its whole upstream again: n^2 / 2 record reads for a chain."""
    n = 600  # planning per item would read 180,000 records; the bounds below allow ~1,200
    project.task_file("task_chain.py", CHAIN.format(n=n - 1))
    (project.path / "conftest.py").write_text(COUNT_READS, encoding="utf-8")
    reads = project.path / "reads.txt"

    cold = project.run("-p", "no:randomly")
    assert cold.parseoutcomes() == {"passed": n + 1}
    assert project.runs() == [f"End {n}"]
    # One read to plan each task, one under its lock before computing it.
    assert int(reads.read_text()) <= 2 * (n + 1) + 10

    warm = project.run()
    assert warm.parseoutcomes() == {"cached": n + 1}
    assert int(reads.read_text()) <= n + 1 + 10

    selected = project.run("--taskproc-clear", "-k", "End")
    assert taskproc_counts(selected) == {"computed": 1, "cached": 0, "failed": 0, "skipped": 0}
    assert project.runs() == [f"End {n}"]
    assert int(reads.read_text()) <= n + 1 + 10
