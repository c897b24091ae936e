"""Files a task writes into its task_directory are part of its result (early cutoff needs both).

The README's own pattern: ``Train`` writes ``model.bin`` and returns its path;
``Score`` reads the file.  An edit of ``Train`` that changes the file's bytes
but not the returned path must recompute ``Score``; an edit that changes
neither leaves it cached.  Runs are real ``pytest --taskproc`` processes with
real edits of the task file between them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from taskproject import Project

MODEL = """
class Train(TaskBase):
    def run_task(self) -> str:
        log("Train")
        path = self.task_directory / "model.bin"
        path.write_bytes(b"weights-1")
        return str(path)


class Score(TaskBase):
    model: Requires[str]

    def build_task(self) -> None:
        self.model = Train()

    def run_task(self) -> str:
        log("Score")
        with open(self.model, "rb") as handle:
            return handle.read().decode()
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


def test_new_bytes_in_a_written_file_recompute_the_downstream(project: Project) -> None:
    path = project.task_file("task_model.py", MODEL)
    assert project.run().ret == 0
    assert sorted(project.runs()) == ["Score", "Train"]

    # the code changes, the bytes it writes do not: early cutoff keeps Score cached
    path.write_text(path.read_text().replace('b"weights-1"', 'b"weights-" + b"1"'))
    assert project.run().ret == 0
    assert project.runs() == ["Train"]

    # the same path is returned, the file holds new bytes: Score is computed again
    path.write_text(path.read_text().replace('b"weights-" + b"1"', 'b"weights-2"'))
    result = project.run("-v")
    assert result.ret == 0
    assert project.runs() == ["Train", "Score"]
    (record,) = project.cache.glob("taskproc/task_model.Train/results/*/record.json")
    assert json.loads(record.read_text())["value"]["files"] is not None
    assert project.run().ret == 0
    assert project.runs() == []


def test_clearing_still_recomputes_the_downstream(project: Project) -> None:
    project.task_file("task_model.py", MODEL)
    assert project.run().ret == 0
    project.runs()
    assert project.run("--taskproc-clear", "-k", "Train").ret == 0
    assert project.runs() == ["Train"]  # same value, same file: still a new lineage
    assert project.run().ret == 0
    assert project.runs() == ["Score"]


def _model_file(project: Project) -> Path:
    (path,) = project.cache.glob("taskproc/task_model.Train/results/*/data/model.bin")
    return path


@pytest.mark.parametrize("damage", ["edited", "truncated", "deleted"])
def test_a_written_file_damaged_in_the_cache_is_recomputed(project: Project, damage: str) -> None:
    project.task_file("task_model.py", MODEL)
    assert project.run().ret == 0
    project.runs()
    model = _model_file(project)
    if damage == "edited":
        model.write_bytes(b"weights-X")  # same size: the stat still gives it away
    elif damage == "truncated":
        model.write_bytes(b"")
    else:
        model.unlink()
    result = project.run("-v")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*Train PASSED (computed: its written files changed (model.bin))*"]
    )
    # the same bytes again: Score was made from them, so it stays cached (early cutoff)
    assert project.runs() == ["Train"]
    assert model.read_bytes() == b"weights-1"
    assert project.run().ret == 0
    assert project.runs() == []


@pytest.mark.parametrize("how", ["touched", "copied over"])
def test_a_written_file_with_the_same_bytes_and_a_new_stat_is_not_recomputed(
    project: Project, how: str
) -> None:
    project.task_file("task_model.py", MODEL)
    assert project.run().ret == 0
    project.runs()
    model = _model_file(project)
    if how == "copied over":
        copy = model.with_name("copy.tmp")
        shutil.copyfile(model, copy)
        os.replace(copy, model)  # another inode
    # a date long past, so the bytes hashed at this stat can be remembered (never "racy")
    os.utime(model, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    assert project.run().ret == 0
    assert project.runs() == []
    # hashed once, and remembered by its new stat so the next runs do not read it again
    table = json.loads((project.cache / "taskproc" / "stat-cache.json").read_text())
    assert [name for name in table if name.endswith("model.bin")] == [str(model)]
    assert project.run().ret == 0
    assert project.runs() == []
