"""Dask for real (SPEC 3): schedulers and workers started as processes of their own.

Every worker runs in a temporary directory of its own with no ``PYTHONPATH``,
so it can import the task files only if the project ships them; everything
listens on 127.0.0.1, on ports the system picks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TaskModules
from taskproject import Project

distributed: Any = pytest.importorskip("distributed")

from pytest_taskproc.dask_executor import (  # noqa: E402
    CACHE_MARKER,
    cache_token,
    check_cache_visible,
    project_files,
)
from pytest_taskproc.errors import CacheNotSharedError  # noqa: E402

#: Seconds a test waits for a process or a log line before it gives up.
PATIENCE = 60.0


def wait_until(condition: Any, what: str, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without PYTHONPATH: workers find nothing by hand."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


class Cluster:
    """A ``dask scheduler`` and ``dask worker`` processes, each in a directory of its own."""

    def __init__(self, base: Path, **scheduler_env: str) -> None:
        self.base = base
        self.processes: list[subprocess.Popen[bytes]] = []
        self.scheduler_file = base / "scheduler.json"
        self._start(
            "scheduler",
            ["--scheduler-file", str(self.scheduler_file), "--port", "0"],
            ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"],
            env=clean_env(**scheduler_env),
        )
        wait_until(self.scheduler_file.exists, "the scheduler file")
        wait_until(lambda: self.scheduler_file.read_text().strip().endswith("}"), "the address")
        self.address: str = json.loads(self.scheduler_file.read_text())["address"]
        self.client: Any = distributed.Client(self.address, timeout=PATIENCE)

    def _start(
        self,
        role: str,
        args: list[str],
        more: list[str],
        env: dict[str, str],
        prefix: tuple[str, ...] = (),
    ) -> subprocess.Popen[bytes]:
        cwd = self.base / f"{role}-{len(self.processes)}"
        cwd.mkdir(parents=True)
        command = [*prefix, sys.executable, "-m", "dask", role, *args, "--host", "127.0.0.1", *more]
        log = open(cwd / "log.txt", "wb")  # noqa: SIM115 - the process writes it until it ends
        # A session of its own, so the whole process group (nanny and worker) can be stopped.
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        self.processes.append(process)
        return process

    def add_worker(
        self, *args: str, prefix: tuple[str, ...] = (), wait: bool = True
    ) -> subprocess.Popen[bytes]:
        before = len(self.client.scheduler_info(n_workers=-1)["workers"])
        process = self._start(
            "worker",
            ["--scheduler-file", str(self.scheduler_file), *args],
            ["--no-dashboard", "--local-directory", str(self.base / "scratch")],
            env=clean_env(),
            prefix=prefix,
        )
        if wait:
            self.client.wait_for_workers(before + 1, timeout=PATIENCE)
        return process

    def workers(self) -> dict[str, Any]:
        workers: dict[str, Any] = self.client.scheduler_info(n_workers=-1)["workers"]
        return workers

    def stop(self) -> None:
        self.client.close()
        for process in reversed(self.processes):
            with _gone():
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with _gone():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class _gone:
    """Ignore ProcessLookupError: the process already ended."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *rest: Any) -> bool:
        return kind is ProcessLookupError


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler, a worker with two threads and a worker offering the resource ``gpu``."""
    running = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        running.add_worker("--nthreads", "2")
        running.add_worker("--nthreads", "1", "--resources", "gpu=1")
        yield running
    finally:
        running.stop()


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Cluster]]:
    """Clusters a test starts itself (with the settings it needs), stopped afterwards."""
    started: list[Cluster] = []
    yield started
    for one in started:
        one.stop()


# -- the plugin against a running scheduler -------------------------------------

PARTS = """
from helpers import square
from mylib.scale import FACTOR


class Part(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        import distributed

        try:
            key = distributed.get_worker().get_current_task()
        except ValueError:  # not on a Dask worker
            key = "-"
        log("Part", self.i, os.getpid(), key)
        return square(self.i) * FACTOR
"""

TOTAL = """
from task_parts import Part


class Total(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Part(i) for i in range(3)]

    def run_task(self) -> int:
        log("Total", sum(self.parts), os.getpid())
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
    """Task files in ``experiments/`` importing each other, a helper beside them and a
    package elsewhere (``mylib``, on sys.path through the rootdir conftest)."""
    project = Project(pytester, warnings_as_errors=False)
    experiments = project.path / "experiments"
    experiments.mkdir()
    (project.path / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (project.path / "mylib").mkdir()
    (project.path / "mylib" / "__init__.py").write_text("", encoding="utf-8")
    (project.path / "mylib" / "scale.py").write_text("FACTOR = 10\n", encoding="utf-8")
    (experiments / "helpers.py").write_text("def square(x):\n    return x * x\n", encoding="utf-8")
    project.task_file("experiments/task_parts.py", PARTS)
    project.task_file("experiments/task_total.py", TOTAL)
    return project


def test_workers_started_on_their_own_run_the_project_and_see_its_edits(
    project: Project, cluster: Cluster
) -> None:
    first = project.run(f"--taskproc-executor=dask:{cluster.address}")
    assert first.parseoutcomes() == {"passed": 4}, first.stdout.str()
    runs = [line.split(" ", 3) for line in project.runs()]
    assert sorted(r[:2] for r in runs) == [
        ["Part", "0"],
        ["Part", "1"],
        ["Part", "2"],
        ["Total", "50"],
    ]
    pytest_pid = (project.path / "pytest.pid").read_text()
    assert all(r[2] != pytest_pid for r in runs)  # computed on the workers
    # Dask knows each job by its task's name (what its dashboard shows).
    keys = sorted(r[3] for r in runs if r[0] == "Part")
    assert [re.sub("-[0-9a-f]{32}$", "-ID", k) for k in keys] == [
        "Part(0)-ID",
        "Part(1)-ID",
        "Part(2)-ID",
    ]
    again = project.run(f"--taskproc-executor=dask:{cluster.address}")
    assert again.parseoutcomes() == {"cached": 4}
    assert project.runs() == []
    # The same long-lived workers run the edited helper, not the module they imported before.
    (project.path / "experiments" / "helpers.py").write_text(
        "def square(x):\n    return x * x * x\n", encoding="utf-8"
    )
    edited = project.run(f"--taskproc-executor=dask:{cluster.address}", "--taskproc-clear")
    assert edited.parseoutcomes() == {"passed": 4}
    assert next(r for r in project.runs() if r.startswith("Total")).split()[1] == "90"


LIBRARY = """
import distributed


class Where(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> str:
        return distributed.get_worker().address


class Train(TaskBase, channel="<gpu>"):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> str:
        return distributed.get_worker().address


class Both(TaskBase):
    plain: RequiresList[str]
    gpu: RequiresList[str]

    def build_task(self) -> None:
        self.plain = [Where(i) for i in range(6)]
        self.gpu = [Train(i) for i in range(6)]

    def run_task(self) -> tuple[list[str], list[str]]:
        return self.plain, self.gpu
"""


def test_run_graph_ships_the_module_and_maps_channels_to_worker_resources(
    modules: TaskModules, cluster: Cluster
) -> None:
    mod = modules.load("where_gpu", LIBRARY)
    with distributed.Client(cluster.address, set_as_default=False) as client:
        plain, gpu = mod.Both().run_graph(executor=client.get_executor())
    offering = {a for a, w in cluster.workers().items() if w.get("resources", {}).get("gpu")}
    assert len(offering) == 1
    assert set(gpu) == offering  # tasks of channel <gpu> ran only where a gpu is declared
    assert set(plain) <= set(cluster.workers())


MAIN_SCRIPT = """
import sys

import distributed

from pytest_taskproc import TaskBase


class Twice(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        return 2 * self.i


if __name__ == "__main__":
    with distributed.Client(sys.argv[1]) as client:
        print(Twice(1).run_graph(executor=client.get_executor()))
"""


def test_task_classes_of_the_script_being_run_are_refused_naming_the_fix(
    cluster: Cluster, tmp_path: Path
) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(MAIN_SCRIPT, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script), cluster.address],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(CP_CACHE_DIR=str(tmp_path / "cache")),
        timeout=PATIENCE,
    )
    assert result.returncode != 0
    assert "Twice(1): its class is defined in the script being run (__main__)" in result.stderr
    assert "move the task classes into a module" in result.stderr


# -- failures and ports ------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_scheduler_is_one_usage_error_and_cached_runs_need_none(
    project: Project,
) -> None:
    address = f"tcp://127.0.0.1:{closed_port()}"
    # How soon the error comes is measured by benchmarks/bench_plugin.py (row U1), not here.
    result = project.run(f"--taskproc-executor=dask:{address}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --taskproc-executor=dask:{address}: no Dask scheduler*"])
    assert project.runs() == []
    assert project.run().parseoutcomes() == {"passed": 4}  # inline
    cached = project.run(f"--taskproc-executor=dask:{address}")
    assert cached.ret == 0
    assert cached.parseoutcomes() == {"cached": 4}


def test_a_listener_that_does_not_speak_dask_is_the_same_usage_error_within_seconds(
    project: Project,
) -> None:
    """An HTTP server (the dashboard's port, say) accepts TCP and waits for a request."""
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        address = f"tcp://127.0.0.1:{server.server_address[1]}"
        result = project.run(f"--taskproc-executor=dask:{address}")
    finally:
        server.shutdown()
        server.server_close()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: --taskproc-executor=dask:{address}: no Dask scheduler answers at {address} "
            "(something accepted the connection but * the dashboard's port, or another "
            "service's?)*"
        ]
    )
    assert project.runs() == []


@pytest.mark.parametrize("address", ["localhost", "http://127.0.0.1:8786", "tcp://host"])
def test_a_malformed_scheduler_address_is_a_usage_error(project: Project, address: str) -> None:
    result = project.run(f"--taskproc-executor=dask:{address}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*a Dask scheduler address looks like tcp://HOST:PORT*"])


def test_a_local_cluster_takes_no_fixed_port(pytester: pytest.Pytester) -> None:
    project = Project(pytester)  # -W error: a port clash would be a warning
    project.task_file(
        "task_tiny.py",
        """
class Tiny(TaskBase):
    def run_task(self) -> int:
        log("Tiny", os.getpid())
        return 1
""",
    )
    with socket.socket() as dashboard:
        try:
            dashboard.bind(("127.0.0.1", 8787))
            dashboard.listen()
        except OSError:
            pass  # taken already: the run below must cope with that just the same
        result = project.run("--taskproc-executor=dask")
    assert result.parseoutcomes() == {"passed": 1}, result.stdout.str() + result.stderr.str()
    assert project.runs()[0].split()[1] != str(os.getpid())


def test_the_cache_check_names_the_path_and_the_requirement(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    token = cache_token(str(root))
    assert (root / "taskproc" / CACHE_MARKER).read_text() == token == cache_token(str(root))
    check_cache_visible(str(root), token, "Part(1)")
    elsewhere = tmp_path / "node-local" / "cache"
    with pytest.raises(CacheNotSharedError) as missing:
        check_cache_visible(str(elsewhere), token, "Part(1)")
    message = str(missing.value)
    assert "Part(1) was not run" in message and str(elsewhere) in message
    assert "the cache must be on a filesystem the workers share" in message.lower()
    cache_token(str(elsewhere))  # another cache at that path: also refused
    with pytest.raises(CacheNotSharedError, match="holds another cache"):
        check_cache_visible(str(elsewhere), token, "Part(1)")


def test_the_shipped_code_is_the_project_not_installed_packages(modules: TaskModules) -> None:
    modules.load(
        "shipme", "class Ship(TaskBase):\n    def run_task(self) -> int:\n        return 1\n"
    )
    (modules.directory / "lazy_helper.py").write_text("X = 1\n", encoding="utf-8")
    files = project_files(["shipme"])
    assert files["shipme.py"] == (modules.directory / "shipme.py").read_bytes()
    assert "lazy_helper.py" in files  # beside a task file, though nothing imported it yet
    installed = ("pytest_taskproc/", "pytest_taskproc.py", "distributed/", "_pytest/", "json/")
    assert not [f for f in files if f.startswith(installed)]


def can_hide_directories() -> bool:
    """Whether a process can get a mount namespace of its own here (as root or a user one)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_a_worker_that_cannot_see_the_cache_fails_its_first_task_naming_the_path(
    project: Project, own_cluster: list[Cluster], tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not can_hide_directories():
        pytest.skip("needs `unshare -rm` (mount namespaces) to give the worker another view")
    one = Cluster(tmp_path_factory.mktemp("hidden"))
    own_cluster.append(one)
    project.cache.mkdir()
    # The worker sees an empty directory at the cache's path, as with a
    # node-local disk mounted where the driver has its cache.
    hide = (
        "unshare",
        "-rm",
        "sh",
        "-c",
        f'mount -t tmpfs none "{project.cache}" && exec "$0" "$@"',
    )
    one.add_worker("--nthreads", "1", prefix=hide)
    result = project.run(f"--taskproc-executor=dask:{one.address}", "-k", "Part and 0")
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(
        [
            "*Part(0) was not run: Dask worker tcp://127.0.0.1:* does not see the cache "
            f"{project.cache} *",
        ]
    )
    assert "filesystem the workers share" in result.stdout.str()
    assert project.runs() == []


GROW = """
class Block(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("start", self.i)
        deadline = time.monotonic() + 60
        while not os.path.exists(GO) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.i


class Blocks(TaskBase):
    blocks: RequiresList[int]

    def build_task(self) -> None:
        self.blocks = [Block(i) for i in range(4)]

    def run_task(self) -> int:
        return sum(self.blocks)
"""


@pytest.mark.slow
def test_a_cluster_that_grows_gets_used(
    modules: TaskModules,
    own_cluster: list[Cluster],
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    one = Cluster(tmp_path_factory.mktemp("grow"))
    own_cluster.append(one)
    one.add_worker("--nthreads", "1")
    go = tmp_path / "go"
    mod = modules.load("grow", f"GO = {str(go)!r}\n" + GROW)
    result: list[int] = []
    with distributed.Client(one.address, set_as_default=False) as client:
        executor = client.get_executor()
        run = threading.Thread(
            target=lambda: result.append(mod.Blocks().run_graph(executor=executor))
        )
        run.start()
        try:
            wait_until(lambda: len(modules.runs("start")) == 1, "the first block to start")
            # One thread was all there was: two jobs in flight.  Three threads
            # now, so three blocks can run at once, if the run notices.
            one.add_worker("--nthreads", "2")
            wait_until(lambda: len(modules.runs("start")) >= 3, "3 blocks at once", timeout=20)
        finally:
            go.touch()
            run.join(PATIENCE)
    assert result == [6]


VICTIM = """
class Victim(TaskBase):
    def run_task(self) -> int:
        log("Victim", os.getpid())
        time.sleep(60)  # until the test kills this worker
        return 1
"""


@pytest.mark.slow
def test_a_killed_worker_fails_its_task_with_a_message_naming_it(
    pytester: pytest.Pytester,
    own_cluster: list[Cluster],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Dask gives up on a task at once when its worker dies (by default it
    # tries three more workers, and each would be killed the same way).
    one = Cluster(
        tmp_path_factory.mktemp("killed"), DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0"
    )
    own_cluster.append(one)
    one.add_worker("--nthreads", "1")
    project = Project(pytester, warnings_as_errors=False)
    project.task_file("task_victim.py", VICTIM)
    command = [sys.executable, "-m", "pytest", *project.options()]
    run = pytester.popen(
        [*command, f"--taskproc-executor=dask:{one.address}"], stdin=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: project.log.exists() and project.log.read_text(), "the task to start")
        os.kill(int(project.log.read_text().split()[1]), signal.SIGKILL)
        out, err = run.communicate(timeout=PATIENCE)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    text = out.decode()
    assert "1 failed" in text, text + err.decode()
    assert "Victim(): the Dask worker running it died" in text
    assert "KilledWorker" not in text.split("Victim(): the Dask worker")[0].splitlines()[-1]


#: Each attempt says where it runs in a gate file of its own, then waits to be killed;
#: ``Flaky`` succeeds at its second attempt, ``Doomed`` never does.
DYING = """
import pathlib

GATES = pathlib.Path({gates!r})


def attempt(name: str) -> int:
    number = 1 + sum(1 for _ in GATES.glob(name + "-*"))
    log("start", name, number, os.getpid())
    gate = GATES / f"{{name}}-{{number}}"
    gate.with_suffix(".tmp").write_text(str(os.getpid()))
    gate.with_suffix(".tmp").rename(gate)
    return number


def wait_to_be_killed() -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the test kills this worker first
        time.sleep(0.05)


class Flaky(TaskBase):
    def run_task(self) -> int:
        if attempt("Flaky") == 1:
            wait_to_be_killed()
        return 42


class Doomed(TaskBase):
    # After Flaky, so that no death takes a task merely queued on the same worker along.
    flaky: Requires[int]

    def build_task(self) -> None:
        self.flaky = Flaky()

    def run_task(self) -> int:
        attempt("Doomed")
        wait_to_be_killed()
        return 1


class AfterDoomed(TaskBase):
    doomed: Requires[int]

    def build_task(self) -> None:
        self.doomed = Doomed()

    def run_task(self) -> int:
        return self.doomed
"""


@pytest.mark.slow
def test_a_task_whose_worker_dies_is_retried_as_dask_retries_it_then_fails_naming_the_worker(
    pytester: pytest.Pytester,
    own_cluster: list[Cluster],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Worker processes under nannies, SIGKILLed mid-task: Dask tries one more worker."""
    one = Cluster(
        tmp_path_factory.mktemp("dying"), DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="1"
    )
    own_cluster.append(one)
    one.add_worker("--nthreads", "1")
    one.add_worker("--nthreads", "1")
    gates = pytester.path / "gates"
    gates.mkdir()
    project = Project(pytester, warnings_as_errors=False)
    project.task_file("task_dying.py", DYING.format(gates=str(gates)))
    command = [sys.executable, "-m", "pytest", *project.options(), "-rA"]
    run = pytester.popen(
        [*command, f"--taskproc-executor=dask:{one.address}"], stdin=subprocess.DEVNULL
    )
    killed: set[str] = set()
    to_kill = {"Flaky-1", "Doomed-1", "Doomed-2"}
    try:
        while killed != to_kill:
            wait_until(
                lambda: run.poll() is not None or {g.name for g in gates.iterdir()} - killed,
                "a gate",
            )
            if run.poll() is not None:
                break
            for name in sorted({g.name for g in gates.iterdir()} & to_kill - killed):
                os.kill(int((gates / name).read_text()), signal.SIGKILL)
                killed.add(name)
        out, err = run.communicate(timeout=PATIENCE)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    text = out.decode()
    assert "1 failed, 1 passed, 1 skipped" in text, text + err.decode()
    assert killed == to_kill
    started = sorted(line.split()[1:3] for line in project.runs() if line.startswith("start"))
    assert started == [["Doomed", "1"], ["Doomed", "2"], ["Flaky", "1"], ["Flaky", "2"]]
    (failure,) = [line for line in text.splitlines() if line.startswith("WorkerLostError: ")]
    assert re.search(
        r"Doomed\(\): the Dask worker running it died while computing it: worker "
        r"tcp://127\.0\.0\.1:\d+, the last of 2 that Dask tried it on",
        failure,
    ), failure
    assert "another xdist worker" not in text
    assert re.search(r"SKIPPED \[1\] task_dying.py:\d+: upstream task Doomed\(\) failed", text)
    assert "PASSED task_dying.py::Flaky" in text
