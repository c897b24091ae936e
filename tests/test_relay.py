"""Warnings ``run_task`` raises in a pool process reach the caller, as they would inline."""

from __future__ import annotations

import warnings
from types import ModuleType

import pytest
from conftest import TaskModules
from taskproject import Project

from pytest_taskproc.errors import UndeclaredInputWarning

TASKS = """
import warnings
from pathlib import Path

HERE = Path(__file__).parent


class OddInput(UserWarning):
    pass


class Reader(TaskBase):
    def run_task(self) -> str:
        log("run", "Reader")
        warnings.warn(OddInput("row 7 looks odd"))
        return (HERE / "notes.txt").read_text()


class Broken(TaskBase):
    def run_task(self) -> str:
        warnings.warn(OddInput("about to fail"))
        raise RuntimeError("broken")
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    (modules.directory / "notes.txt").write_text("a note")
    return modules.load("warning_tasks", TASKS)


def test_a_library_run_on_a_process_pool_issues_the_warnings_of_its_tasks(
    tasks: ModuleType, modules: TaskModules
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tasks.Reader().run_graph(max_workers=2) == "a note"
        with pytest.raises(RuntimeError):
            tasks.Broken().run_graph(max_workers=2)
    found = sorted((w.category.__name__, str(w.message)) for w in caught)
    assert found == [
        ("OddInput", "about to fail"),
        ("OddInput", "row 7 looks odd"),
        (
            "UndeclaredInputWarning",
            "`Reader()` read `notes.txt`, which is not declared as an `InputFile`: edits of it "
            "will not make the task stale",
        ),
    ]
    odd = next(w for w in caught if str(w.message) == "row 7 looks odd")
    assert odd.category is tasks.OddInput  # the task module's own class, found by name
    assert odd.filename.endswith("warning_tasks.py")  # where run_task warned
    assert modules.runs() == ["run Reader"]
    assert not any(
        issubclass(w.category, UndeclaredInputWarning) and "Broken" in str(w.message)
        for w in caught
    )


PLUGIN_TASKS = """
import warnings
from pathlib import Path


class Reader(TaskBase):
    def run_task(self) -> str:
        log("Reader")
        return (Path(__file__).parent / "notes.txt").read_text()


class Uses(TaskBase):
    text: Requires[str]

    def build_task(self) -> None:
        self.text = Reader()

    def run_task(self) -> int:
        log("Uses")
        return len(self.text)
"""


@pytest.mark.parametrize("select", [(), ("-k", "Uses")], ids=["its-item", "upstream-only"])
def test_the_plugin_reports_warnings_from_a_pool_process_as_pytest_warnings(
    pytester: pytest.Pytester, select: tuple[str, ...]
) -> None:
    project = Project(pytester, warnings_as_errors=False)
    (project.path / "notes.txt").write_text("a note")
    project.task_file("task_reader.py", PLUGIN_TASKS)
    result = project.run("--taskproc-executor=process:1", *select)
    assert result.ret == 0
    assert sorted(project.runs()) == ["Reader", "Uses"]
    text = result.stdout.str()
    summary = text[text.index("warnings summary") :]  # in pytest's summary, not raw stderr
    assert "UndeclaredInputWarning: `Reader()` read `notes.txt`" in summary
    assert "UndeclaredInputWarning" not in result.stderr.str()
