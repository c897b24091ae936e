"""The code digest, seen from outside: what an edit of a task's code recomputes.

Task modules are written into a project directory and run in fresh Python
processes (a notebook or a long script is one long-lived process running
several steps); the tasks append to a log, so each test counts exactly the
``run_task`` calls an edit causes.  Source-change detection is left at its
default (on, in the library too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

HEADER = """\
from __future__ import annotations

import functools
import re
from decimal import Decimal
from pathlib import Path

from pytest_taskproc import RequiresList, TaskBase

LOG = {log!r}


def log(*parts: object) -> None:
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(" ".join(str(p) for p in parts) + "\\n")

"""

#: run before each script: ``run(task)`` runs a graph, ``edit`` changes a file, ``report``
#: prints what the test reads back (values, and every warning the runs gave)
PREAMBLE = """\
import json, pathlib, sys, warnings
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, {directory!r})
from pytest_taskproc import Context

Context.cache_dir = {cache!r}
caught = []


def run(task, pool=False):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if pool:
            value = task.run_graph(max_workers=1)
        else:
            with ThreadPoolExecutor(1) as threads:
                value = task.run_graph(executor=threads)
    caught.extend(f"{{w.category.__name__}}: {{w.message}}" for w in seen)
    return value


def edit(name, old, new):
    path = pathlib.Path({directory!r}) / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def report(*values):
    print("REPORT " + json.dumps([list(values), caught]))

"""


class Project:
    """A directory of task modules, a cache and the log their tasks write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path / "run.log"
        self.cache = path / "cache"
        path.mkdir(exist_ok=True)

    def write(self, name: str, body: str, header: bool = True) -> None:
        text = (HEADER.format(log=str(self.log)) if header else "") + textwrap.dedent(body)
        (self.path / name).write_text(text, encoding="utf-8")

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.path / name
        text = path.read_text(encoding="utf-8")
        assert old in text, old
        path.write_text(text.replace(old, new), encoding="utf-8")

    def python(self, script: str, env: dict[str, str] | None = None) -> tuple[list[Any], list[str]]:
        """Run a script in a new process: the values it reported and the warnings of its runs."""
        preamble = PREAMBLE.format(directory=str(self.path), cache=str(self.cache))
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
        # an edit of the same size in the same second would otherwise reuse the old .pyc
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        environment.update(env or {})
        done = subprocess.run(
            [sys.executable, "-c", preamble + textwrap.dedent(script)],
            capture_output=True,
            text=True,
            env=environment,
            cwd=self.path,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        line = next(x for x in done.stdout.splitlines() if x.startswith("REPORT "))
        values, caught = json.loads(line[len("REPORT ") :])
        return values, caught

    def main(self, env: dict[str, str] | None = None) -> tuple[object, int]:
        """``Main()`` of ``tasks.py`` in a new process: its value and how many tasks ran."""
        (value,), caught = self.python("import tasks\nreport(run(tasks.Main()))", env)
        assert not caught, caught
        return value, len(self.runs())

    def runs(self) -> list[str]:
        """Log lines since the last call."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines()
        self.log.write_text("", encoding="utf-8")
        return lines


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "project")


# -- issue 16 item 2: every kind of code a task reaches makes it stale when edited ----------

#: scenario -> (tasks.py body, value, [(old, new, value after the edit, recomputed?)])
REACHED: dict[str, tuple[str, object, list[tuple[str, str, object, bool]]]] = {
    "lru_cache helper": (
        """
        @functools.lru_cache(maxsize=None)
        def helper(x: int) -> int:
            return x + 1


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                return helper(1)
        """,
        2,
        [("return x + 1", "return x + 2", 3, True)],
    ),
    "functools.partial constant": (
        """
        def add(a: int, b: int) -> int:
            return a + b


        ADD = functools.partial(add, 1)


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                return ADD(10)
        """,
        11,
        [("partial(add, 1)", "partial(add, 2)", 12, True), ("a + b", "a * b", 20, True)],
    ),
    "dispatch table and pipeline": (
        """
        def double(x: int) -> int:
            return 2 * x


        def clean(x: int) -> int:
            return x + 1


        def fit(x: int) -> int:
            return x * 10


        OPS = {"double": double}
        STEPS = [clean, fit]


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                value = OPS["double"](1)
                for step in STEPS:
                    value = step(value)
                return value
        """,
        30,
        [
            ("return 2 * x", "return 3 * x", 40, True),
            ("return x * 10", "return x * 100", 400, True),
        ],
    ),
    "config dict holding a class": (
        """
        class Model:
            def predict(self, x: float) -> float:
                return x + 1


        CONFIG = {"model": Model, "lr": 0.5}


        class Main(TaskBase):
            def run_task(self) -> float:
                log("run")
                return CONFIG["model"]().predict(CONFIG["lr"])
        """,
        1.5,
        [('"lr": 0.5', '"lr": 1.5', 2.5, True), ("return x + 1", "return x + 2", 3.5, True)],
    ),
    "Path, regex, range and Decimal constants": (
        """
        ROOT = Path("data/raw")
        PATTERN = re.compile("a+")
        GRID = range(3)
        RATE = Decimal("0.5")


        class Main(TaskBase):
            def run_task(self) -> str:
                log("run")
                return f"{ROOT.name} {bool(PATTERN.fullmatch('aa'))} {sum(GRID) * RATE}"
        """,
        "raw True 1.5",
        [
            ('Path("data/raw")', 'Path("data/clean")', "clean True 1.5", True),
            ('re.compile("a+")', 're.compile("b+")', "clean False 1.5", True),
            ("range(3)", "range(4)", "clean False 3.0", True),
            ('Decimal("0.5")', 'Decimal("1.0")', "clean False 6.0", True),
        ],
    ),
    "instance of a user class": (
        """
        class Scaler:
            def __init__(self, k: int) -> None:
                self.k = k

            def apply(self, x: int) -> int:
                return x * self.k


        SCALER = Scaler(2)


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                return SCALER.apply(5)
        """,
        10,
        [("Scaler(2)", "Scaler(3)", 15, True), ("x * self.k", "x * self.k + 1", 16, True)],
    ),
    "closure values and defaults": (
        """
        def make(k: int):
            def inner(x: int, offset: int = 10) -> int:
                return x * k + offset

            return inner


        HELPER = make(3)


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                return HELPER(1)
        """,
        13,
        [("make(3)", "make(4)", 14, True), ("offset: int = 10", "offset: int = 20", 24, True)],
    ),
    "static method of another task class": (
        """
        class Other(TaskBase):
            @staticmethod
            def static_helper(x: int) -> int:
                return x + 100

            def run_task(self) -> int:
                return 0


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                return Other.static_helper(1)
        """,
        101,
        # only the method it calls counts, not the rest of the other class
        [("return 0", "return 5", 101, False), ("x + 100", "x + 200", 201, True)],
    ),
    "class defined in both branches of an if": (
        """
        FAST = False

        if FAST:

            class Main(TaskBase):
                def run_task(self) -> int:
                    log("run")
                    return 1

        else:

            class Main(TaskBase):
                def run_task(self) -> int:
                    log("run")
                    return 2
        """,
        2,
        [("return 1", "return 3", 2, False), ("return 2", "return 4", 4, True)],
    ),
    "np.vectorize": (
        """
        import numpy as np


        def bump(x: int) -> int:
            return x + 1


        VEC = np.vectorize(bump)


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                return int(VEC(1))
        """,
        2,
        [("return x + 1", "return x + 5", 6, True)],
    ),
}


@pytest.mark.parametrize("scenario", list(REACHED))
def test_editing_what_the_task_reaches_makes_it_stale(project: Project, scenario: str) -> None:
    body, value, edits = REACHED[scenario]
    project.write("tasks.py", body)
    assert project.main() == (value, 1)
    for old, new, expected, recomputed in edits:
        project.edit("tasks.py", old, new)
        assert project.main() == (expected, int(recomputed)), (old, new)


def test_a_helper_imported_inside_run_task_is_part_of_the_code(project: Project) -> None:
    project.write("helpers.py", "def scale(x: int) -> int:\n    return x * 2\n", header=False)
    project.write(
        "tasks.py",
        """
        class Main(TaskBase):
            def run_task(self) -> int:
                from helpers import scale

                log("run")
                return scale(5)
        """,
    )
    assert project.main() == (10, 1)
    assert project.main() == (10, 0)
    project.edit("helpers.py", "x * 2", "x * 3")
    assert project.main() == (15, 1)


def test_an_immutable_constant_counts_by_its_value_too(project: Project) -> None:
    project.write(
        "tasks.py",
        """
        import os

        DATA = Path(os.environ.get("DATA_DIR", "a"))


        class Main(TaskBase):
            def run_task(self) -> str:
                log("run")
                return DATA.name
        """,
    )
    assert project.main() == ("a", 1)
    assert project.main() == ("a", 0)
    assert project.main(env={"DATA_DIR": "b"}) == ("b", 1)


def test_a_moved_project_recomputes_nothing_though_its_paths_count_by_value(
    tmp_path: Path,
) -> None:
    """``HERE = Path(__file__).parent`` counts by value, but not by where the project lies."""
    project = Project(tmp_path / "one")
    project.write(
        "tasks.py",
        """
        from pathlib import Path

        from pytest_taskproc import TaskBase

        HERE = Path(__file__).parent
        LOG = HERE / "run.log"
        DATA = str(HERE / "data.txt")


        class Main(TaskBase):
            def run_task(self) -> str:
                with open(LOG, "a", encoding="utf-8") as handle:
                    handle.write("run\\n")
                return Path(DATA).name
        """,
        header=False,
    )
    assert project.main() == ("data.txt", 1)
    (tmp_path / "two").mkdir()
    moved = Project(Path(shutil.move(project.path, tmp_path / "two" / "deeper")))
    assert moved.main() == ("data.txt", 0)
    moved.edit("tasks.py", '"data.txt"', '"other.txt"')
    assert moved.main() == ("other.txt", 1)


# -- issue 16 item 9: the same code gives the same digest in every process ------------------

STABLE = """
import dataclasses
from typing import Callable


def double(x: int) -> int:
    return 2 * x


@dataclasses.dataclass
class Holder:
    fn: Callable[[int], int]


HOLDER = Holder(double)
TAGS = {"alpha", "beta", "gamma", "delta"}
MEMO: dict[int, int] = {}


class Leaf(TaskBase):
    def build_task(self, i: int) -> None:
        MEMO[i] = i * i  # filled while the graph is built: more entries in a bigger run
        self.i = i

    def run_task(self) -> int:
        log("run", self.i)
        return HOLDER.fn(self.i) + len(TAGS) + MEMO[self.i]


class Main(TaskBase):
    def build_task(self) -> None:
        self.leaves = [Leaf(i) for i in range(3)]

    leaves: RequiresList[int]

    def run_task(self) -> int:
        log("run", "Main")
        return sum(self.leaves)
"""


def test_digests_are_stable_across_processes_hash_seeds_and_memo_dicts(project: Project) -> None:
    project.write("tasks.py", STABLE)
    assert project.main(env={"PYTHONHASHSEED": "1"}) == (23, 4)
    assert project.main(env={"PYTHONHASHSEED": "2"}) == (23, 0)
    # a run that fills the memo dict differently before digesting anything
    values, caught = project.python(
        "import tasks\ntasks.Leaf(7)\nreport(run(tasks.Main()))", {"PYTHONHASHSEED": "3"}
    )
    assert (values, caught, project.runs()) == ([23], [], [])


# -- issue 16 item 3: the digest is of the code that runs ----------------------------------

LONG_LIVED = """
class Main(TaskBase):
    def run_task(self) -> int:
        log("run")
        return SCALE * 10


SCALE = 1
"""


def test_a_file_edited_after_import_is_reported_and_recomputed_by_the_next_process(
    project: Project,
) -> None:
    project.write("tasks.py", LONG_LIVED)
    values, caught = project.python(
        """
        import tasks
        first = run(tasks.Main())
        edit("tasks.py", "SCALE = 1", "SCALE = 2")
        report(first, run(tasks.Main()))
        """
    )
    # the process still runs the code it imported, and says so, naming the file
    assert values == [10, 10]
    assert len(caught) == 1 and caught[0].startswith("SourceEditedWarning: "), caught
    assert str(project.path / "tasks.py") in caught[0]
    assert len(project.runs()) == 1
    # its record names the code that computed it, so a new process recomputes
    assert project.main() == (20, 1)


def test_a_file_edited_before_the_first_run_is_not_recorded_as_the_new_code(
    project: Project,
) -> None:
    project.write("tasks.py", LONG_LIVED)
    values, caught = project.python(
        """
        import tasks
        edit("tasks.py", "SCALE = 1", "SCALE = 2")
        report(run(tasks.Main()))
        """
    )
    assert values == [10] and len(caught) == 1, caught
    assert len(project.runs()) == 1
    assert project.main() == (20, 1)
    assert project.main() == (20, 0)


def test_a_helper_edited_before_any_task_class_was_defined_is_not_trusted(
    project: Project,
) -> None:
    project.write("helpers.py", "def scale(x: int) -> int:\n    return x * 2\n", header=False)
    project.write(
        "tasks.py",
        """
        import helpers


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                return helpers.scale(5)
        """,
    )
    values, caught = project.python(
        """
        import helpers  # before any task class: its text is read only later
        edit("helpers.py", "x * 2", "x * 3")
        import tasks
        report(run(tasks.Main()))
        """
    )
    # the text on disk is not the code in memory: said, and recorded as matching nothing
    assert values == [10] and len(caught) == 1, caught
    assert "helpers.py was edited after it was imported" in caught[0]
    assert len(project.runs()) == 1
    assert project.main() == (15, 1)
    assert project.main() == (15, 0)


def test_a_reloaded_helper_module_is_digested_again(project: Project) -> None:
    project.write("helpers.py", "def scale(x: int) -> int:\n    return x * 2\n", header=False)
    project.write(
        "tasks.py",
        """
        import helpers


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                return helpers.scale(5)
        """,
    )
    values, caught = project.python(
        """
        import importlib
        import helpers, tasks
        first = run(tasks.Main())
        edit("helpers.py", "x * 2", "x * 3")
        importlib.reload(helpers)
        report(first, run(tasks.Main()), run(tasks.Main()))
        """
    )
    assert (values, caught) == ([10, 15, 15], [])
    assert len(project.runs()) == 2
    assert project.main() == (15, 0)


# -- issue 16 item 8 is end to end in the plugin: test_plugin_sweeps below --------------------

# -- notebooks and other code without a file (issue 19 item 7) -------------------------------

INTERACTIVE = """
import os
from pytest_taskproc import TaskBase

LOG = {log!r}


def log(*parts):
    with open(LOG, "a") as handle:
        handle.write(" ".join(str(p) for p in parts) + "\\n")


CELL = '''
class Main(TaskBase):
    def run_task(self):
        log("run")
        return {{value}}
'''
"""


def test_a_class_redefined_in_main_replaces_the_old_one(project: Project) -> None:
    setup = INTERACTIVE.format(log=str(project.log))
    values, caught = project.python(
        setup
        + """
exec(compile(CELL.format(value=1), "<cell 1>", "exec"), globals())
first = run(Main(), pool=True)
exec(compile(CELL.format(value=2), "<cell 2>", "exec"), globals())
report(first, run(Main(), pool=True), run(Main(), pool=True))
"""
    )
    # no ClassNameConflictError, in this process or in the pool's worker
    assert (values, caught) == ([1, 2, 2], [])
    assert len(project.runs()) == 2
    # code without source is digested from its code objects: the same in a new process
    values, caught = project.python(
        setup + "exec(CELL.format(value=2), globals())\nreport(run(Main(), pool=True))"
    )
    assert (values, caught, project.runs()) == ([2], [], [])


def test_what_cannot_be_digested_warns_once_and_counts_as_changed(project: Project) -> None:
    project.write(
        "tasks.py",
        """
        import threading


        def make():
            lock = threading.Lock()

            def locked(x: int) -> int:
                with lock:
                    return x

            return locked


        LOCKED = make()


        class Main(TaskBase):
            def run_task(self) -> int:
                log("run")
                return LOCKED(1)
        """,
    )
    script = "import tasks\nreport(run(tasks.Main()), run(tasks.Main()))"
    for _ in range(2):
        values, caught = project.python(script)
        assert values == [1, 1]
        assert len(caught) == 1 and caught[0].startswith("CodeDigestWarning: Main"), caught
        assert "tasks.make.<locals>.locked.<closure lock>" in caught[0]
        assert len(project.runs()) == 1  # recomputed by each new process, once


# -- issue 16 item 8: pytest metadata is not code ---------------------------------------------

SWEEP = """
GENS = 2


@pytest.mark.parametrize("n", [1, 2])
class Fit(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log("Fit", self.n)
        return self.n


@pytest.mark.parametrize("g", range(GENS))
class Evolve(TaskBase):
    def build_task(self, g: int) -> None:
        self.g = g

    def run_task(self) -> int:
        log("Evolve", self.g)
        return self.g
"""


def test_extending_a_sweep_computes_only_new_points_and_marks_recompute_nothing(
    pytester: pytest.Pytester,
) -> None:
    from taskproject import Project as PluginProject
    from taskproject import assert_counts_agree

    pytester.makeini("[pytest]\nmarkers =\n    slow: a slow task\n")
    plugin = PluginProject(pytester)
    plugin.task_file("task_sweep.py", SWEEP)
    plugin.run().assert_outcomes(passed=4)
    assert sorted(plugin.runs()) == ["Evolve 0", "Evolve 1", "Fit 1", "Fit 2"]

    text = (pytester.path / "task_sweep.py").read_text()
    text = text.replace("[1, 2]", "[1, 2, 3]").replace("GENS = 2", "GENS = 3")
    (pytester.path / "task_sweep.py").write_text(text)
    counts = assert_counts_agree(plugin.run())
    assert (counts["computed"], counts["cached"]) == (2, 4)
    assert sorted(plugin.runs()) == ["Evolve 2", "Fit 3"]

    text = text.replace("class Fit", "@pytest.mark.slow\nclass Fit")
    (pytester.path / "task_sweep.py").write_text(text)
    counts = assert_counts_agree(plugin.run())
    assert (counts["computed"], counts["cached"]) == (0, 6)
    assert plugin.runs() == []


MEMO = """
import dataclasses
from typing import Callable


def double(x: int) -> int:
    return 2 * x


@dataclasses.dataclass
class Holder:
    fn: Callable[[int], int]


HOLDER = Holder(double)
MEMO: dict[int, int] = {}


@pytest.mark.parametrize("i", [1, 2, 3])
class Leaf(TaskBase):
    def build_task(self, i: int) -> None:
        MEMO[i] = i * i  # the plugin builds every item first: a fuller memo than the library's
        self.i = i

    def run_task(self) -> int:
        log("Leaf", self.i)
        return HOLDER.fn(self.i) + MEMO[self.i]
"""


def test_plugin_and_library_runs_agree_on_digests(pytester: pytest.Pytester) -> None:
    from taskproject import Project as PluginProject
    from taskproject import assert_counts_agree

    plugin = PluginProject(pytester)
    plugin.task_file("task_memo.py", MEMO)
    library = Project(pytester.path)
    library.cache = plugin.cache
    library.log = plugin.log
    values, caught = library.python("import task_memo\nreport(run(task_memo.Leaf(1)))")
    assert (values, caught, plugin.runs()) == ([3], [], ["Leaf 1"])
    counts = assert_counts_agree(plugin.run())
    assert (counts["computed"], counts["cached"], sorted(plugin.runs())) == (
        2,
        1,
        ["Leaf 2", "Leaf 3"],
    )
    values, caught = library.python("import task_memo\nreport(run(task_memo.Leaf(3)))")
    assert (values, caught, plugin.runs()) == ([15], [], [])


# -- a real Jupyter kernel -------------------------------------------------------------------

CELL = """
class Main(TaskBase):
    def run_task(self) -> int:
        log("run")
        return {value} * SCALE

results.append(Main().run_graph(max_workers=1))
"""


def test_a_task_class_redefined_in_a_notebook_cell_is_recomputed(project: Project) -> None:
    manager = pytest.importorskip("jupyter_client.manager", reason="needs jupyter_client")
    pytest.importorskip("ipykernel", reason="needs ipykernel")
    try:
        kernel, client = manager.start_new_kernel(startup_timeout=60, kernel_name="python3")
    except Exception as exc:  # no kernel spec, no free port, a sandbox without sockets...
        pytest.skip(f"a Jupyter kernel cannot start here: {exc}")
    outputs: list[str] = []

    def cell(code: str) -> None:
        def hook(message: dict[str, Any]) -> None:
            if message["msg_type"] == "stream":
                outputs.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                outputs.append("\n".join(message["content"]["traceback"]))

        reply = client.execute_interactive(code, timeout=120, output_hook=hook)
        assert reply["content"]["status"] == "ok", outputs

    try:
        cell(
            HEADER.format(log=str(project.log))
            + f"from pytest_taskproc import Context\nContext.cache_dir = {str(project.cache)!r}\n"
            "results = []\nSCALE = 1\n"
        )
        cell(CELL.format(value=1))
        cell(CELL.format(value=2))  # the cell edited and run again
        cell(CELL.format(value=2))  # and once more, unchanged
        cell("SCALE = 3\nresults.append(Main().run_graph(max_workers=1))")
        cell("print(results)")
    finally:
        client.stop_channels()
        kernel.shutdown_kernel(now=True)
    assert outputs[-1].strip() == "[1, 2, 2, 6]", outputs
    assert project.runs() == ["run", "run", "run"]
