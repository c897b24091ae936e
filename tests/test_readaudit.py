"""Files a running task reads without declaring them are named, once per task and file."""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import TaskModules
from taskproject import Project

from pytest_taskproc import Context
from pytest_taskproc.errors import UndeclaredInputWarning

TASKS = """
import threading
from pathlib import Path

from pytest_taskproc import InputFile

HERE = Path(__file__).parent
GO = threading.Event()


class Raw(TaskBase):
    def run_task(self) -> str:
        path = self.task_directory / "copy.txt"
        path.write_text("mine")
        return path.read_text()  # its own directory: fine


class Total(TaskBase):
    declared: Requires[Path]
    raw: Requires[str]

    def build_task(self) -> None:
        self.declared = InputFile("data/declared.csv")
        self.raw = Raw()

    def run_task(self) -> int:
        log("run", "Total")
        scratch = HERE / "scratch.txt"
        scratch.write_text("written by the task")
        scratch.read_text()  # a file it wrote itself: fine
        found = []
        helper = threading.Thread(target=lambda: found.append((HERE / "data/raw.csv").read_text()))
        helper.start()
        helper.join()
        found.append((HERE / "data" / "raw.csv").read_text())  # the same file again
        found.append(self.declared.read_text())
        GO.wait(10)
        return len(found)
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    (modules.directory / "data").mkdir()
    (modules.directory / "data" / "raw.csv").write_text("1,2")
    (modules.directory / "data" / "declared.csv").write_text("3,4")
    (modules.directory / "other.txt").write_text("not the task's")
    return modules.load("audited", TASKS)


def run_catching(task: Any, other_reader: Path) -> list[str]:
    """Run ``task`` while another thread of this process reads ``other_reader``."""

    def elsewhere() -> None:
        other_reader.read_text()
        task_module.GO.set()

    task_module = __import__(type(task).__module__)
    task_module.GO.clear()
    reader = threading.Thread(target=elsewhere)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(1) as pool:
            reader.start()
            task.run_graph(executor=pool)
        reader.join()
    return [str(w.message) for w in caught if issubclass(w.category, UndeclaredInputWarning)]


def test_an_undeclared_read_is_named_once(tasks: ModuleType, modules: TaskModules) -> None:
    found = run_catching(tasks.Total(), modules.directory / "other.txt")
    assert found == [
        "`Total()` read `data/raw.csv`, which is not declared as an `InputFile`: edits of it "
        "will not make the task stale"
    ]
    assert modules.runs() == ["run Total"]


def test_the_audit_can_be_turned_off(
    tasks: ModuleType, modules: TaskModules, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Context, "audit_reads", False)
    assert run_catching(tasks.Total(), modules.directory / "other.txt") == []
    tasks.Total().clear_task()
    monkeypatch.setattr(Context, "audit_reads", True)
    monkeypatch.setenv("CP_AUDIT_READS", "0")
    assert run_catching(tasks.Total(), modules.directory / "other.txt") == []
    assert modules.runs() == ["run Total", "run Total"]


READER = """
from pathlib import Path


class Reader(TaskBase):
    def run_task(self) -> str:
        log("Reader")
        return (Path(__file__).parent / "notes.txt").read_text()
"""


def test_the_plugin_names_an_undeclared_read_unless_told_not_to(
    pytester: pytest.Pytester,
) -> None:
    project = Project(pytester, warnings_as_errors=False)
    (project.path / "notes.txt").write_text("a note")
    project.task_file("task_reader.py", READER)
    result = project.run()
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*UndeclaredInputWarning: `Reader()` read `notes.txt`, which is not declared*"]
    )
    quiet = project.run("--taskproc-clear", "--taskproc-no-read-audit")
    assert quiet.ret == 0
    assert project.runs() == ["Reader", "Reader"]
    assert "UndeclaredInputWarning" not in quiet.stdout.str()
    # On a pool too (the setting travels with each job), and only for that run:
    # an in-process run leaves this process's environment as it was.
    pool = project.run(
        "--taskproc-clear", "--taskproc-no-read-audit", "--taskproc-executor=process:1"
    )
    assert pool.ret == 0 and "UndeclaredInputWarning" not in pool.stdout.str()
    assert project.runs() == ["Reader"]
    before = os.environ.get("CP_AUDIT_READS")
    inline = pytester.runpytest_inprocess(
        *project.options(), "--taskproc-clear", "--taskproc-no-read-audit"
    )
    assert inline.ret == 0
    assert os.environ.get("CP_AUDIT_READS") == before


def test_library_caches_and_settings_are_not_a_task_s_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """matplotlib reads its font list from ~/.cache while a task saves a plot: no warning."""
    from pytest_taskproc import readaudit

    monkeypatch.setenv("HOME", str(tmp_path))
    freely = readaudit._freely_read()
    font_list = str(tmp_path / ".cache" / "matplotlib" / "fontlist-v3.json")
    data = str(tmp_path / "project" / "data" / "raw.csv")
    assert font_list.startswith(freely)
    assert str(tmp_path / ".config" / "tool.toml").startswith(freely)
    assert "/etc/ssl/certs/ca.pem".startswith(freely)
    assert not data.startswith(freely)


RUNNER_TASKS = """
import os
import subprocess
import sys
from pathlib import Path

from pytest_taskproc import InputFile

HERE = Path(__file__).parent


class Scripted(TaskBase):
    declared: Requires[Path]

    def build_task(self, how: str) -> None:
        self.how = how
        self.declared = InputFile("declared.csv")

    def run_task(self) -> str:
        log("run", self.how)
        if self.how == "list":
            command = [sys.executable, "analysis.py", "data.csv", str(self.declared), "-v"]
            return subprocess.run(command, cwd=HERE, capture_output=True, text=True).stdout
        if self.how == "shell":
            return subprocess.run(
                f"{sys.executable} analysis.py data.csv", shell=True, cwd=HERE,
                capture_output=True, text=True,
            ).stdout
        os.chdir(HERE)
        return str(os.system(f"{sys.executable} analysis.py data.csv > /dev/null"))
"""


@pytest.mark.parametrize("how", ["list", "shell", "system"])
def test_files_given_to_a_program_the_task_runs_are_named(
    modules: TaskModules, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``subprocess.run(["python", "analysis.py", "data.csv"])``: the program reads its
    # script and data where no audit hook of this process sees it, so edits of either
    # would go unnoticed without a word
    (modules.directory / "analysis.py").write_text("import sys\nprint(open(sys.argv[1]).read())\n")
    (modules.directory / "data.csv").write_text("1,2")
    (modules.directory / "declared.csv").write_text("3,4")
    tasks = modules.load("scripted", RUNNER_TASKS)
    monkeypatch.chdir(modules.directory.parent)  # the command names files relative to cwd=HERE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tasks.Scripted(how).run_graph(executor=None)
    found = sorted(str(w.message) for w in caught if w.category is UndeclaredInputWarning)
    assert found == [
        f"`Scripted('{how}')` gave `{name}` to a program it ran, which is not declared as an "
        "`InputFile`: edits of it will not make the task stale"
        for name in ("analysis.py", "data.csv")
    ]
