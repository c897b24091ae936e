"""Two processes on one cache: clearing while another computes, a class folder deleted by hand.

A notebook is simulated by a long-lived Python process that reads statements
from its stdin, runs them and answers one line each, so the test decides
exactly when it acts between the steps of the other process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TaskModules

TASKS = """
GATE = os.environ.get("GATE", "")


class Slow(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log("start", self.n)
        while GATE and not os.path.exists(GATE):
            time.sleep(0.01)
        log("run", self.n)
        return self.n * 10
"""

NOTEBOOK = r"""
import sys, traceback
namespace = {}
print("ready", flush=True)
for line in sys.stdin:
    try:
        result = eval(compile(line, "<cell>", "eval"), namespace) if not line.startswith("!") \
            else exec(line[1:], namespace)
        print("ok", repr(result), flush=True)
    except BaseException as exc:
        print("error", type(exc).__name__, str(exc).replace("\n", " "), flush=True)
"""


class Notebook:
    """A long-lived Python process: one statement in, one answer line out."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", NOTEBOOK],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.readline() == "ready"

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def send(self, statement: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(statement + "\n")
        self.proc.stdin.flush()

    def __call__(self, statement: str) -> str:
        self.send(statement)
        return self.readline()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def env(modules: TaskModules, cache_root: Path, tmp_path: Path) -> dict[str, str]:
    modules.write("sharing", TASKS)
    found = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CP_"))}
    found["PYTHONPATH"] = str(modules.directory)
    found["CP_CACHE_DIR"] = str(cache_root)
    found["GATE"] = str(tmp_path / "gate")
    return found


@pytest.fixture
def notebook(env: dict[str, str]) -> Iterator[Callable[[], Notebook]]:
    started: list[Notebook] = []

    def start() -> Notebook:
        started.append(Notebook(env))
        return started[-1]

    yield start
    for book in started:
        if book.proc.poll() is None:
            book.proc.kill()
            book.proc.communicate()


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[str] | None = None) -> None:
    """Poll a file-system condition (a generous deadline only guards against a hang)."""
    deadline = time.monotonic() + 60
    while not ready():
        assert proc is None or proc.poll() is None, "the process ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def blocked_on_a_lock(pid: int) -> bool:
    """Whether ``pid`` waits for a POSIX record lock (``->`` lines of /proc/locks)."""
    with open("/proc/locks", encoding="ascii") as handle:
        return any(
            line.split()[1] == "->" and line.split()[5] == str(pid)
            for line in handle
            if len(line.split()) > 5
        )


def test_clear_all_tasks_waits_for_a_task_another_process_computes(
    env: dict[str, str], modules: TaskModules, cache_root: Path, notebook: Callable[[], Notebook]
) -> None:
    if not os.path.exists("/proc/locks"):
        pytest.skip("needs /proc/locks to see that the clearing process waits")
    computing = subprocess.Popen(
        [sys.executable, "-c", "import sharing; print(sharing.Slow(1).run_graph())"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: "start 1" in modules.lines(), computing)
    book = notebook()
    assert book("!import sharing") == "ok None"
    book.send("sharing.Slow.clear_all_tasks()")
    # The clear waits for the computing process's lock (with the old code it
    # returned at once, deleting the folder the task was about to write to).
    wait_until(lambda: blocked_on_a_lock(book.proc.pid), book.proc)
    Path(env["GATE"]).touch()
    out, err = computing.communicate(timeout=60)
    assert computing.returncode == 0, err
    assert out.strip() == "10"
    assert book.readline() == "ok None"
    # Cleared after the result was committed; if the clear came between
    # committing and loading, the computing process computed it again.
    recomputed = book("sharing.Slow(1).task_record") != "ok None"
    assert modules.runs() == ["run 1"] * (1 + recomputed)
    assert book("sharing.Slow(1).run_graph()") == "ok 10"
    assert modules.runs() == ["run 1", "run 1"]
    book.close()


def test_ids_are_not_reused_after_a_class_folder_is_deleted_by_hand(
    env: dict[str, str], modules: TaskModules, cache_root: Path, notebook: Callable[[], Notebook]
) -> None:
    Path(env["GATE"]).touch()
    book = notebook()
    assert book("!import sharing") == "ok None"
    assert book("sharing.Slow(1).run_graph()") == "ok 10"
    assert book("sharing.Slow(1).task_id") == "ok 0"
    class_folder = cache_root / "taskproc" / "sharing.Slow"
    shutil.rmtree(class_folder)
    # Another process starts afresh and hands out id 0 to another task.
    other = subprocess.run(
        [sys.executable, "-c", "import sharing; print(sharing.Slow(2).run_graph())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 0, other.stderr
    # The notebook recomputes its task, twice, and never takes the other's folder.
    for _ in range(2):
        assert book("sharing.Slow(1).run_graph()") == "ok 10"
        assert book("sharing.Slow(1).task_id") != "ok 0"
    book.close()
    folders = {
        json.loads((folder / "args.json").read_text())["n"]: folder.name
        for folder in (class_folder / "results").iterdir()
    }
    assert sorted(folders) == [1, 2]
    assert folders[2] == "0"
    fresh = subprocess.run(
        [sys.executable, "-c", "import sharing; print(sharing.Slow(2).get_task_result(), "
         "sharing.Slow(1).get_task_result())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert fresh.stdout.split() == ["20", "10"], fresh.stderr
