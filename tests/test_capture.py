"""A task's prints go to its own files, also when tasks share a process."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules

from pytest_taskproc.capture import captured_output

TASKS = """
class Chatty(TaskBase):
    def build_task(self, marker: str) -> None:
        self.marker = marker

    def run_task(self) -> str:
        for i in range(300):
            print(f"out {self.marker} {i}")
            print(f"err {self.marker} {i}", file=sys.stderr)
            if i % 50 == 0:
                time.sleep(0.001)  # let the other threads interleave with this one
        return self.marker


class Chorus(TaskBase):
    voices: RequiresList[str]

    def build_task(self, count: int) -> None:
        self.voices = [Chatty(f"m{i}") for i in range(count)]

    def run_task(self) -> list[str]:
        print("chorus done")
        return self.voices


class Loud(TaskBase, detach_output=False):
    def run_task(self) -> int:
        print("loud to stdout")
        print("loud to stderr", file=sys.stderr)
        return 1


class Fails(TaskBase):
    def run_task(self) -> int:
        print("before the failure")
        print("complaint", file=sys.stderr)
        raise RuntimeError("failed after printing")
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    return modules.load("chatty", TASKS)


def expected_lines(kind: str, marker: str) -> list[str]:
    return [f"{kind} {marker} {i}" for i in range(300)]


def test_threads_print_to_their_own_files(tasks: ModuleType) -> None:
    with ThreadPoolExecutor(4) as pool:
        result = tasks.Chorus(8).run_graph(executor=pool)
    assert result == [f"m{i}" for i in range(8)]
    for i in range(8):
        task = tasks.Chatty(f"m{i}")
        assert task.task_stdout.read_text().splitlines() == expected_lines("out", f"m{i}")
        assert task.task_stderr.read_text().splitlines() == expected_lines("err", f"m{i}")
    assert tasks.Chorus(8).task_stdout.read_text() == "chorus done\n"


def test_process_pool_workers_print_to_the_task_files(tasks: ModuleType) -> None:
    tasks.Chorus(2).run_graph(max_workers=2)
    for i in range(2):
        stdout = tasks.Chatty(f"m{i}").task_stdout.read_text()
        assert stdout.splitlines() == expected_lines("out", f"m{i}")


def test_streams_are_restored_after_the_run(
    tasks: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (sys.stdout, sys.stderr)
    with ThreadPoolExecutor(4) as pool:
        tasks.Chorus(4).run_graph(executor=pool)
    assert (sys.stdout, sys.stderr) == before
    print("the caller prints again")
    print("and complains", file=sys.stderr)
    out, err = capsys.readouterr()
    assert out == "the caller prints again\n"
    assert err == "and complains\n"


def test_streams_are_restored_after_a_failure(
    tasks: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (sys.stdout, sys.stderr)
    with ThreadPoolExecutor(2) as pool, pytest.raises(RuntimeError, match="failed after"):
        tasks.Fails().run_graph(executor=pool)
    assert (sys.stdout, sys.stderr) == before
    print("still printing")
    assert capsys.readouterr().out == "still printing\n"


def test_output_of_a_failed_run_is_kept_in_its_files(tasks: ModuleType) -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError):
        tasks.Fails().run_graph(executor=pool)
    assert tasks.Fails().task_stdout.read_text() == "before the failure\n"
    assert tasks.Fails().task_stderr.read_text() == "complaint\n"


def test_detach_output_false_leaves_output_alone(
    tasks: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with ThreadPoolExecutor(1) as pool:
        assert tasks.Loud().run_graph(executor=pool) == 1
    out, err = capsys.readouterr()
    assert out == "loud to stdout\n"
    assert err == "loud to stderr\n"
    assert tasks.Loud().task_stdout.read_text() == ""
    assert tasks.Loud().task_stderr.read_text() == ""


def test_a_rerun_replaces_the_previous_output(modules: TaskModules) -> None:
    mod = modules.load(
        "rerun_output",
        """
        COUNT = os.path.join(os.path.dirname(LOG), "count")

        class Counts(TaskBase):
            def run_task(self) -> None:
                with open(COUNT, "a") as handle:
                    handle.write("x")
                with open(COUNT) as handle:
                    runs = len(handle.read())
                if runs == 1:
                    print("first run")
                    print("first error", file=sys.stderr)
        """,
    )
    with ThreadPoolExecutor(1) as pool:
        mod.Counts().run_graph(executor=pool)
        assert mod.Counts().task_stdout.read_text() == "first run\n"
        mod.Counts().clear_task()
        mod.Counts().run_graph(executor=pool)
    # the second run printed nothing: nothing of the first may remain
    assert mod.Counts().task_stdout.read_text() == ""
    assert mod.Counts().task_stderr.read_text() == ""


def test_captured_output_routes_by_thread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unit level: other threads keep printing to the original streams meanwhile."""
    inside = threading.Event()
    release = threading.Event()
    paths = {name: tmp_path / f"{name}.txt" for name in ("out", "err")}

    def task() -> None:
        with captured_output(paths["out"], paths["err"]):
            print("from the task")
            inside.set()
            assert release.wait(10)
            print("task again")

    original = sys.stdout
    worker = threading.Thread(target=task)
    worker.start()
    assert inside.wait(10)
    assert sys.stdout is not original  # the router is installed while the task runs
    sys.stdout.write("from the main thread\n")
    release.set()
    worker.join(10)
    assert sys.stdout is original
    assert paths["out"].read_text() == "from the task\ntask again\n"
    assert capsys.readouterr().out == "from the main thread\n"
    assert not paths["err"].exists()  # nothing printed: no file


def test_captured_output_with_echo_also_writes_to_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with captured_output(tmp_path / "out.txt", tmp_path / "err.txt", echo=True):
        print("both places")
    assert (tmp_path / "out.txt").read_text() == "both places\n"
    assert capsys.readouterr().out == "both places\n"
