"""Declared inputs: ``Const`` values and ``InputFile`` paths in records, and the stat table.

Each scenario runs as a user would: a task file in a project directory, a
script calling ``run_graph`` in a fresh interpreter, real edits of the data
files between runs; ``run_task`` calls are counted through the run log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import MODULE_HEADER
from taskproject import Project

TASKS = """
import json
from pathlib import Path

from pytest_taskproc import InputFile


def load_params() -> dict:
    return json.loads((Path(__file__).parent / "params.json").read_text())


class Fit(TaskBase):
    params: Requires[dict]
    data: Requires[Path]

    def build_task(self) -> None:
        self.params = Const(load_params())
        self.data = InputFile("data/raw.csv")

    def run_task(self) -> float:
        log("run", "Fit")
        rows = self.data.read_text().split()
        return sum(float(r) for r in rows) * self.params["scale"]


class Many(TaskBase):
    parts: RequiresList[Path]
    named: RequiresDict[str, Path]

    def build_task(self) -> None:
        self.parts = [InputFile("data/raw.csv"), InputFile("data/extra")]
        self.named = {"raw": InputFile("data/raw.csv")}

    def run_task(self) -> list:
        log("run", "Many")
        assert all(p.is_absolute() for p in self.parts)
        files = sorted(p.name for p in self.parts[1].iterdir())
        return [self.parts[0].read_text(), files, str(self.named["raw"] == self.parts[0])]


class Report(TaskBase):
    fit: Requires[float]

    def build_task(self) -> None:
        self.fit = Fit()

    def run_task(self) -> str:
        log("run", "Report")
        return f"fit={self.fit}"
"""

RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pytest_taskproc import Context
Context.cache_dir = sys.argv[2]
import tasks
from pytest_taskproc.freshness import plan
from pytest_taskproc.graph import TaskGraph
from pytest_taskproc.context import cache_root
root = getattr(tasks, sys.argv[3])()
states = plan(TaskGraph([root]), cache_root(), True)
reasons = {repr(s.task): s.describe() for s in states.values()}
kind = sys.argv[4]
if kind == "process":
    from concurrent.futures import ProcessPoolExecutor
    executor = ProcessPoolExecutor(2)
else:
    from concurrent.futures import ThreadPoolExecutor
    executor = ThreadPoolExecutor(2)
with executor:
    value = root.run_graph(executor=executor)
print(json.dumps([value, reasons]))
"""


class Experiment:
    """A project directory with a task file, its data, and a cache elsewhere."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "project"
        self.cache = tmp_path / "cache"
        self.log = tmp_path / "run.log"
        (self.dir / "data" / "extra").mkdir(parents=True)
        (self.dir / "tasks.py").write_text(
            MODULE_HEADER.format(log=str(self.log)) + textwrap.dedent(TASKS)
        )
        (self.dir / "params.json").write_text(json.dumps({"scale": 2}))
        (self.dir / "data" / "raw.csv").write_text("1\n2\n3\n")
        (self.dir / "data" / "extra" / "a.txt").write_text("a")

    def run(
        self, root: str = "Report", executor: str = "thread", cwd: Path | None = None
    ) -> tuple[Any, dict[str, str], list[str]]:
        """Run ``root`` in a fresh interpreter: its value, the planned reasons, the runs."""
        self.log.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, str(self.dir), str(self.cache), root, executor],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd or self.dir,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        value, reasons = json.loads(done.stdout.splitlines()[-1])
        return value, reasons, self.log.read_text().split("\n")[:-1]


@pytest.fixture
def experiment(tmp_path: Path) -> Experiment:
    return Experiment(tmp_path)


def test_a_changed_const_value_makes_the_task_stale(experiment: Experiment) -> None:
    assert experiment.run()[0] == "fit=12.0"
    assert experiment.run()[2] == []
    (experiment.dir / "params.json").write_text(json.dumps({"scale": 3}))
    value, reasons, runs = experiment.run()
    assert value == "fit=18.0"
    assert runs == ["run Fit", "run Report"]
    assert reasons["Fit()"] == "an input value changed (Const in slot 'params')"


def test_an_edited_input_file_makes_the_task_stale_naming_the_file(
    experiment: Experiment,
) -> None:
    assert experiment.run(executor="process")[0] == "fit=12.0"
    (experiment.dir / "data" / "raw.csv").write_text("1\n2\n4\n")
    value, reasons, runs = experiment.run(executor="process")
    assert value == "fit=14.0"
    assert runs == ["run Fit", "run Report"]
    assert reasons["Fit()"] == "an input file changed (data/raw.csv)"
    assert experiment.run()[2] == []


def test_the_record_holds_the_path_as_written_and_the_content_digest(
    experiment: Experiment,
) -> None:
    experiment.run(executor="thread")
    (record_path,) = experiment.cache.glob("taskproc/tasks.Fit/results/*/record.json")
    inputs = json.loads(record_path.read_text())["inputs"]
    import hashlib

    sha = hashlib.sha256(b"1\n2\n3\n").hexdigest()
    assert {"slot": "data", "file": "data/raw.csv", "digest": sha} in inputs
    assert [i["slot"] for i in inputs] == ["params", "data"]


def test_same_bytes_with_a_new_date_make_nothing_stale(experiment: Experiment) -> None:
    experiment.run()
    raw = experiment.dir / "data" / "raw.csv"
    os.utime(raw, (1_000_000_000, 1_000_000_000))
    assert experiment.run()[2] == []
    raw.write_text("1\n2\n3\n")  # rewritten with the same bytes
    assert experiment.run()[2] == []


def test_input_files_of_a_moved_project_run_from_elsewhere_are_the_same(
    experiment: Experiment, tmp_path: Path
) -> None:
    experiment.run("Many")
    moved = tmp_path / "moved"
    shutil.copytree(experiment.dir, moved)
    shutil.rmtree(experiment.dir)
    experiment.dir = moved
    value, reasons, runs = experiment.run("Many", cwd=tmp_path)
    assert runs == [], reasons
    assert value[1] == ["a.txt"]


def test_a_moved_project_run_from_another_directory_makes_nothing_stale(
    experiment: Experiment, tmp_path: Path
) -> None:
    experiment.run()
    moved = tmp_path / "moved"
    shutil.copytree(experiment.dir, moved)
    shutil.rmtree(experiment.dir)
    experiment.dir = moved
    # the project moved, and is run from another directory: relative to the task file
    _, reasons, runs = experiment.run(cwd=tmp_path)
    assert runs == [], reasons


def test_inputs_inside_lists_and_dicts_and_a_directory(experiment: Experiment) -> None:
    value, _, runs = experiment.run("Many")
    assert value == ["1\n2\n3\n", ["a.txt"], "True"]
    assert experiment.run("Many")[2] == []
    (experiment.dir / "data" / "extra" / "b.txt").write_text("b")
    value, reasons, runs = experiment.run("Many")
    assert runs == ["run Many"] and value[1] == ["a.txt", "b.txt"]
    assert reasons["Many()"] == "an input file changed (data/extra)"
    (experiment.dir / "data" / "extra" / "b.txt").write_text("B")  # same size, new bytes
    assert experiment.run("Many")[2] == ["run Many"]


def test_a_missing_input_file_is_one_error_naming_the_task_and_the_path(
    experiment: Experiment,
) -> None:
    from pytest_taskproc.errors import InputMissingError

    (experiment.dir / "data" / "raw.csv").unlink()
    sys.path.insert(0, str(experiment.dir))
    import tasks  # type: ignore[import-not-found]

    with pytest.raises(InputMissingError) as caught:
        tasks.Fit().run_graph(executor=ThreadPoolExecutor(1))
    message = str(caught.value)
    assert message.startswith("Fit(): its input file ")
    assert str(experiment.dir / "data" / "raw.csv") in message


AUDITED = """
import sys, json
sys.path.insert(0, sys.argv[1])
from pytest_taskproc import Context
Context.cache_dir = sys.argv[2]
import tasks
opened = []
sys.addaudithook(lambda event, args: event == "open" and opened.append(str(args[0])))
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(1) as pool:
    tasks.Fit().run_graph(executor=pool)
print(json.dumps(sum(1 for name in opened if name.endswith("raw.csv"))))
"""


def test_an_unchanged_input_file_is_not_read_again(experiment: Experiment) -> None:
    raw = experiment.dir / "data" / "raw.csv"
    old = 1_000_000_000
    os.utime(raw, (old, old))  # not "racily clean": its stat may be trusted later

    def reads() -> int:
        done = subprocess.run(
            [sys.executable, "-c", AUDITED, str(experiment.dir), str(experiment.cache)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    assert reads() == 2  # hashed once, read once by run_task
    assert reads() == 0  # cached: the stat table says the bytes are the ones hashed
    raw.write_text("9\n2\n3\n")  # same size, new bytes, new date
    os.utime(raw, (old, old))  # even with the old date back: the ctime changed
    assert reads() == 2


def test_an_edited_input_file_recomputes_in_the_plugin_with_xdist(
    pytester: pytest.Pytester,
) -> None:
    project = Project(pytester)
    (project.path / "data").mkdir()
    (project.path / "data" / "raw.csv").write_text("1\n2\n")
    body = """
    from pathlib import Path
    from pytest_taskproc import InputFile


    @pytest.mark.parametrize("n", [1, 2])
    class Total(TaskBase):
        data: Requires[Path]

        def build_task(self, n: int) -> None:
            self.data = InputFile("data/raw.csv")
            self.n = n

        def run_task(self) -> int:
            log("Total", self.n)
            return self.n * sum(int(x) for x in self.data.read_text().split())
    """
    project.task_file("task_total.py", body)
    assert project.run("-n", "2").ret == 0
    assert sorted(project.runs()) == ["Total 1", "Total 2"]
    (project.path / "data" / "raw.csv").write_text("1\n5\n")
    result = project.run("-n", "2", "-v")
    assert result.ret == 0
    assert sorted(project.runs()) == ["Total 1", "Total 2"]
