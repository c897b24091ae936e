"""``job_prefix=['srun', ...]`` against a real single-node Slurm cluster.

``tests/slurm/start_slurm.sh`` starts munged, slurmctld and slurmd from
Debian's ``slurm-wlm`` and ``munge`` packages with a configuration of its own;
these tests skip, saying why, where that cannot happen (no packages, not
root, daemons that do not come up). Every task here really goes through
``srun``: its result carries the ``SLURM_JOB_ID`` of its job, and the
controller knows that job.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import TaskModules
from taskproject import Project

from pytest_taskproc import JobPrefixError

START_SLURM = Path(__file__).parent / "slurm" / "start_slurm.sh"

#: Plain words without spaces: the same prefix works as an argument list and
#: as shell words.  ``-v`` makes srun say which job and step it launched, which
#: is what the tests look for in the relayed output; ``--immediate`` bounds the
#: wait for a free CPU, so a wedged cluster fails a test instead of hanging it.
SRUN = ["srun", "-N", "1", "-n", "1", "-v", "--immediate=60", "--job-name=taskproc-test"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def slurm_conf() -> str:
    """Start (or find running) the test cluster; the path of its ``slurm.conf``."""
    missing = [
        tool
        for tool in ("munged", "slurmctld", "slurmd", "srun", "scancel", "scontrol")
        # The daemons live in sbin, which a non-login PATH may lack.
        if shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None
    ]
    if missing:
        pytest.skip(
            f"Slurm is not installed ({', '.join(missing)} not found; "
            "install the Debian packages slurm-wlm and munge)"
        )
    if os.geteuid() != 0:
        pytest.skip("starting a Slurm node (slurmd) needs root")
    try:
        proc = subprocess.run(
            ["bash", str(START_SLURM)], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"{START_SLURM.name} did not finish within 300 s")
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        pytest.skip(f"a single-node Slurm could not start ({START_SLURM.name}):\n{tail}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def slurm(slurm_conf: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test cluster, made the one srun, scancel and scontrol talk to."""
    monkeypatch.setenv("SLURM_CONF", slurm_conf)
    return slurm_conf


#: A job whose step has ended: srun returns before the controller has
#: finished the job, so it may still be completing.
ENDED = ("COMPLETING", "COMPLETED")


def job_state(job_id: str) -> str:
    """What the controller says of a job (kept for MinJobAge, 300 s, after it ends)."""
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    return next(w.split("=", 1)[1] for w in out.split() if w.startswith("JobState="))


def wait_for_gate(gate: Path, running: Future[object]) -> str:
    """The job id a task wrote into ``gate`` when it started on the node."""
    deadline = time.monotonic() + 120
    while not gate.exists():
        if running.done():
            running.result()  # raises if the run failed before the task started
            pytest.fail("the run ended before the task started")
        if time.monotonic() > deadline:
            pytest.fail(f"the task did not start within 120 s (no {gate})")
        time.sleep(0.05)
    return gate.read_text().strip()


def scancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], check=True, timeout=60)


TASKS = f"""
SRUN = {SRUN!r}


class Up(TaskBase):
    def run_task(self) -> int:
        log("run", "Up", os.getpid())
        return 20


class OnNode(TaskBase, job_prefix=SRUN):
    up: Requires[int]

    def build_task(self, n: int) -> None:
        self.up = Up()
        self.n = n

    def run_task(self) -> dict[str, object]:
        log("run", "OnNode", os.getpid())
        print("on the node", self.n)
        print("node warns", self.n, file=sys.stderr)
        return {{
            "sum": self.up + self.n,
            "job": os.environ.get("SLURM_JOB_ID"),
            "step": os.environ.get("SLURM_STEP_ID"),
            "pid": os.getpid(),
        }}


class Check(TaskBase):
    # Computed locally from the node's result: a wrong result fails this item.
    on_node: Requires[dict]

    def build_task(self) -> None:
        self.on_node = OnNode(3)

    def run_task(self) -> str:
        log("run", "Check", self.on_node["job"])
        assert self.on_node["sum"] == 23, self.on_node
        assert self.on_node["job"] is not None, "OnNode did not run in a Slurm job"
        return str(self.on_node["job"])
"""


def held_tasks(gate: Path) -> str:
    """``Held`` says it started (with its job id), then waits for a release file.

    Only the second run finds that file: the first run's job is cancelled
    while it waits.  ``Sibling``, its upstream task, runs locally and succeeds.
    """
    return f"""
import pathlib

GATE = pathlib.Path({str(gate)!r})


class Sibling(TaskBase):
    def run_task(self) -> int:
        log("run", "Sibling")
        return 1


class Held(TaskBase, job_prefix={SRUN!r}):
    sibling: Requires[int]

    def build_task(self) -> None:
        self.sibling = Sibling()

    def run_task(self) -> str:
        log("run", "Held")
        (GATE.parent / "gate.tmp").write_text(os.environ["SLURM_JOB_ID"])
        (GATE.parent / "gate.tmp").rename(GATE)
        release = GATE.parent / "release"
        deadline = time.monotonic() + 120
        while not release.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("nobody cancelled this job")
            time.sleep(0.05)
        return f"released {{self.sibling}}"
"""


def test_srun_computes_a_task_in_a_slurm_job(
    slurm: str, modules: TaskModules, capfd: pytest.CaptureFixture[str]
) -> None:
    mod = modules.load("on_slurm", TASKS)
    task = mod.OnNode(3)
    # A thread pool keeps srun's relayed output in this process, where capfd sees it.
    with ThreadPoolExecutor(2) as pool:
        result = task.run_graph(executor=pool)
    assert result["sum"] == 23
    assert result["step"] == "0"
    job = result["job"]
    assert job is not None and job_state(job) in ENDED
    assert result["pid"] != os.getpid()
    out, err = capfd.readouterr()
    assert f"srun: launching StepId={job}.0" in err  # srun's own output, relayed
    assert "on the node" not in out + err
    assert task.task_stdout.read_text() == "on the node 3\n"
    assert task.task_stderr.read_text() == "node warns 3\n"
    assert task.get_task_result() == result
    assert [line.split()[1] for line in modules.runs()] == ["Up", "OnNode"]


def test_srun_from_a_process_pool(slurm: str, modules: TaskModules) -> None:
    """The job goes from a pool worker through srun and back through the cache.

    The pool is started here, after ``SLURM_CONF`` was set: the library's own
    pool may fork its workers from a fork server that an earlier test
    started, whose environment (without ``SLURM_CONF``) they would inherit.
    """
    mod = modules.load("on_slurm_pool", TASKS)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        job, stats = mod.Check().run_graph_with_stats(executor=pool)
    assert job_state(job) in ENDED
    assert stats["stats"] == {
        "on_slurm_pool.Up": 1,
        "on_slurm_pool.OnNode": 1,
        "on_slurm_pool.Check": 1,
    }
    assert mod.OnNode(3).get_task_result()["job"] == job
    assert mod.OnNode(3).task_stdout.read_text() == "on the node 3\n"


def test_pytest_taskproc_runs_tasks_through_srun(slurm: str, pytester: pytest.Pytester) -> None:
    project = Project(pytester)
    project.task_file("task_slurm.py", "import sys\n", TASKS)
    result = project.run("-v", "-rP")
    result.assert_outcomes(passed=3)
    runs = project.runs()
    assert [line.split()[1] for line in runs] == ["Up", "OnNode", "Check"]
    job = runs[-1].split()[2]
    assert job_state(job) in ENDED
    output = result.stdout.str()
    assert f"srun: launching StepId={job}.0" in output  # relayed into the item's report
    assert "on the node 3" in output  # the item's stdout section, read from its file
    (stdout_file,) = project.cache.glob("taskproc/*.OnNode/results/*/stdout.txt")
    assert stdout_file.read_text() == "on the node 3\n"

    again = project.run("-v")
    assert again.parseoutcomes() == {"cached": 3}
    assert project.runs() == []


def run_and_cancel(gate: Path, start: Callable[[], object]) -> object:
    """Start a run in a thread, cancel the Slurm job of its held task, return its outcome."""
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(start)
        job = wait_for_gate(gate, running)
        scancel(job)
        try:
            outcome = running.result(timeout=120)
        except Exception as exc:
            outcome = exc
    return outcome


def test_cancelled_job_fails_its_task_and_the_next_run_computes_only_it(
    slurm: str, modules: TaskModules, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    mod = modules.load("held_lib", held_tasks(gate))
    with ThreadPoolExecutor(2) as pool:
        error = run_and_cancel(gate, lambda: mod.Held().run_graph(executor=pool))
    assert isinstance(error, JobPrefixError), error
    message = str(error)
    assert message.startswith("Held(): job_prefix command")
    assert "held_lib.Held" in message
    assert "CANCELLED" in message  # what srun said, among its last stderr lines
    with pytest.raises(FileNotFoundError):
        mod.Held().get_task_result()

    assert [line.split()[1] for line in modules.runs()] == ["Sibling", "Held"]

    modules.clear_log()
    (tmp_path / "release").touch()
    with ThreadPoolExecutor(2) as pool:
        result, stats = mod.Held().run_graph_with_stats(executor=pool)
    assert result == "released 1"
    assert stats["stats"] == {"held_lib.Sibling": 0, "held_lib.Held": 1}
    assert [line.split()[1] for line in modules.runs()] == ["Held"]


def test_cancelled_job_in_a_pytest_run(slurm: str, pytester: pytest.Pytester) -> None:
    project = Project(pytester)
    gate = project.path / "gate"
    project.task_file("task_held.py", held_tasks(gate))
    result = run_and_cancel(gate, lambda: project.run("-v"))
    assert isinstance(result, pytest.RunResult)
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(["FAILED task_held.py::Held - *JobPrefixError*"])
    assert "JobPrefixError: Held(" in output
    assert "job_prefix command" in output
    assert "CANCELLED" in output
    assert sorted(line.split()[1] for line in project.runs()) == ["Held", "Sibling"]

    (project.path / "release").touch()
    again = project.run("-v")
    assert again.parseoutcomes() == {"passed": 1, "cached": 1}
    assert [line.split()[1] for line in project.runs()] == ["Held"]
