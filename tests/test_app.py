"""``python -m pytest_taskproc.app``: one task of a task file, from the shell."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TASKFILE = """
from pytest_taskproc import Requires, TaskBase

LOG = {log!r}


def log(line: str) -> None:
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(line + "\\n")


class Square(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log(f"Square {{self.n}}")
        return self.n * self.n


class Main(TaskBase):
    square: Requires[int]

    def build_task(self) -> None:
        self.square = Square(7)

    def run_task(self) -> int:
        log("Main")
        print("the answer is", self.square)
        return self.square


class Other(TaskBase):
    def run_task(self) -> str:
        log("Other")
        print("other entry point")
        return "other"
"""


def _project(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "study with space"
    folder.mkdir()
    log = tmp_path / "run.log"
    taskfile = folder / "taskfile.py"
    taskfile.write_text(textwrap.dedent(TASKFILE.format(log=str(log))), encoding="utf-8")
    return taskfile, log


def app(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_taskproc.app", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def runs(log: Path) -> list[str]:
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    log.write_text("", encoding="utf-8")
    return lines


def test_help_lists_the_options(tmp_path: Path) -> None:
    result = app("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--entrypoint", "--exec-type", "--max-workers", "--cache-dir", "--rate-limits"):
        assert option in result.stdout


def test_runs_main_prints_its_output_and_caches_next_to_the_task_file(tmp_path: Path) -> None:
    taskfile, log = _project(tmp_path)
    result = app(str(taskfile), "--dont-show-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "==== STDOUT ====\nthe answer is 49\n==== STDERR ====\n"
    assert sorted(runs(log)) == ["Main", "Square 7"]
    assert (taskfile.parent / ".cache" / "taskproc" / "taskfile.Main" / "results").is_dir()

    # The entry point is recomputed every time, unless asked not to be; upstream is cached.
    assert app(str(taskfile), "-t", "thread", cwd=tmp_path).returncode == 0
    assert runs(log) == ["Main"]
    assert app(str(taskfile), "--dont-force-entrypoint", cwd=tmp_path).returncode == 0
    assert runs(log) == []


def test_other_entry_point_and_cache_dir(tmp_path: Path) -> None:
    taskfile, log = _project(tmp_path)
    cache = tmp_path / "elsewhere"
    result = app(str(taskfile), "-e", "Other", "--cache-dir", str(cache), "-w", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "other entry point" in result.stdout
    assert runs(log) == ["Other"]
    assert (cache / "taskproc" / "taskfile.Other").is_dir()
    assert not (taskfile.parent / ".cache").exists()


def test_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    taskfile, log = _project(tmp_path)
    missing = app(str(taskfile), "-e", "Nope", cwd=tmp_path)
    assert missing.returncode == 2
    assert "has no task class 'Nope'" in missing.stderr
    limits = app(str(taskfile), "--rate-limits", "{not json", cwd=tmp_path)
    assert limits.returncode == 2
    assert "invalid rate limits" in limits.stderr
    nofile = app(str(tmp_path / "absent.py"), cwd=tmp_path)
    assert nofile.returncode == 2
    assert "does not exist" in nofile.stderr
    needs = app(str(taskfile), "-e", "Square", cwd=tmp_path)
    assert needs.returncode == 2
    assert needs.stderr == (
        "error: Square needs arguments (n) and the app runs a task without arguments; run a "
        "class that needs none with -e NAME (here: Main, Other), or write one whose build_task "
        "requires Square(...)\n"
    )
    assert runs(log) == []
