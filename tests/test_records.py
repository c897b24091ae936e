"""Records decide freshness: tried as users would, with real processes, edits and copies.

Each scenario here served a wrong value, or recomputed needlessly, when
freshness compared file dates and the class's own text.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import TaskModules, forget_stores, release_locks

from pytest_taskproc import CacheAccessError, Context, ResultMissingError, TaskArgumentError
from pytest_taskproc.errors import CacheCorruptionWarning, ClassNameConflictError, PlanMismatchError
from pytest_taskproc.freshness import Reason, plan
from pytest_taskproc.graph import TaskGraph
from pytest_taskproc.spec import node_key

GATED = """
HERE = os.path.dirname(os.path.abspath(__file__))


def gate(name: str) -> None:
    # Announce that we got here, then wait for the test to open the gate.
    open(os.path.join(HERE, name + ".reached"), "w").close()
    while not os.path.exists(os.path.join(HERE, name + ".open")):
        time.sleep(0.002)


def value_file() -> int:
    with open(os.path.join(HERE, "up_value.txt")) as handle:
        return int(handle.read())


class Up(TaskBase):
    def run_task(self) -> int:
        value = value_file()
        log("run", "Up", value)
        return value


class Slow(TaskBase):
    def run_task(self) -> int:
        log("run", "Slow")
        gate("slow")
        return 1000


class Down(TaskBase):
    up: Requires[int]

    def build_task(self) -> None:
        self.up = Up()

    def run_task(self) -> int:
        log("run", "Down")
        gate("down")
        return self.up * 100 + 5


class Both(TaskBase):
    up: Requires[int]
    slow: Requires[int]

    def build_task(self) -> None:
        self.up = Up()
        self.slow = Slow()

    def run_task(self) -> int:
        log("run", "Both")
        return self.up + self.slow
"""

RUNNER = """
import json, sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, sys.argv[1])
from pytest_taskproc import Context

Context.cache_dir = sys.argv[2]
module = __import__(sys.argv[3])
options = json.loads(sys.argv[5])
task = eval(sys.argv[4], vars(module))
with ThreadPoolExecutor(2) as pool:
    result, stats = task.run_graph_with_stats(executor=pool, **options)
counts = {name.split(".")[-1]: n for name, n in stats["stats"].items()}
print(json.dumps([result, counts]))
"""

RunResult = list[Any]  # [result, {class: tasks computed}]


class Sessions:
    """Runs tasks of a module on disk, each call in a new Python process (a new session)."""

    def __init__(self, modules: TaskModules, cache_root: Path, name: str, body: str) -> None:
        self.modules = modules
        self.cache_root = cache_root
        self.name = name
        self.path = modules.write(name, body)
        self.here = modules.directory

    def argv(self, expression: str, root: Path | None = None, **options: Any) -> list[str]:
        return [
            sys.executable, "-c", RUNNER, str(self.here), str(root or self.cache_root),
            self.name, expression, json.dumps(options),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
        environment["PYTHONDONTWRITEBYTECODE"] = "1"  # same-size edits in one second
        return environment

    def run(self, expression: str, root: Path | None = None, **options: Any) -> RunResult:
        done = subprocess.run(
            self.argv(expression, root, **options),
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        found: RunResult = json.loads(done.stdout.splitlines()[-1])
        return found

    def start(self, expression: str, **options: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(expression, **options),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )

    def finish(self, proc: subprocess.Popen[str]) -> RunResult:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        found: RunResult = json.loads(out.splitlines()[-1])
        return found

    def load(self) -> ModuleType:
        """Import the module as it is on disk now, in this process."""
        if str(self.here) not in sys.path:
            sys.path.insert(0, str(self.here))
        sys.modules.pop(self.name, None)
        importlib.invalidate_caches()
        return importlib.import_module(self.name)

    def edit(self, old: str, new: str) -> None:
        text = self.path.read_text()
        assert old in text
        self.path.write_text(text.replace(old, new))

    def wait_until_reached(self, gate: str, proc: subprocess.Popen[str]) -> None:
        marker = self.here / f"{gate}.reached"
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"gate {gate} never reached"
            time.sleep(0.002)

    def open_gate(self, gate: str) -> None:
        (self.here / f"{gate}.open").touch()

    def set_up_value(self, value: int) -> None:
        (self.here / "up_value.txt").write_text(str(value))


@pytest.fixture
def gated(modules: TaskModules, cache_root: Path) -> Sessions:
    sessions = Sessions(modules, cache_root, "gatedmod", GATED)
    sessions.set_up_value(1)
    return sessions


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every file and folder under ``root`` with its size, dates and content digest."""
    found: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns, digest)
    return found


# -- what a record holds ---------------------------------------------------------------


def test_the_record_names_arguments_code_upstream_values_and_origin(
    gated: Sessions, cache_root: Path
) -> None:
    gated.open_gate("down")
    assert gated.run("Down()") == [105, {"Up": 1, "Down": 1}]
    module = gated.modules.load(gated.name, GATED)
    record = module.Down().task_record
    up_record = module.Up().task_record
    folder = cache_root / "taskproc" / "gatedmod.Down" / "results" / str(module.Down().task_id)
    assert json.loads((folder / "record.json").read_text()) == record
    assert record["task"] == "gatedmod.Down" and record["args"] == {}
    assert record["upstream"] == [
        {
            "task": "gatedmod.Up",
            "args": {},
            "digest": up_record["value"]["digest"],
            "lineage": up_record["value"]["lineage"],
        }
    ]
    data = (folder / record["value"]["file"]).read_bytes()
    assert record["value"]["digest"] == hashlib.sha256(data).hexdigest()
    assert record["value"]["size"] == record["value"]["stored_size"] == len(data)
    assert "gatedmod.Down" in record["code"]["parts"]
    assert "gatedmod.gate" in record["code"]["parts"]  # a helper it calls
    made = record["made"]
    assert made["seconds"] >= 0 and made["at"].endswith("Z")
    assert made["python"] and made["host"] and made["pid"] != os.getpid()
    assert made["packages"]["cloudpickle"]
    assert made["run"] == up_record["made"]["run"]  # both made by one run_graph call
    assert module.Slow().task_record is None  # never computed


# -- concurrent sessions -------------------------------------------------------------------


def test_a_value_read_before_another_session_replaced_it_is_stale(gated: Sessions) -> None:
    assert gated.run("Up()") == [1, {"Up": 1}]
    computing = gated.start("Down()")
    gated.wait_until_reached("down", computing)  # Down has read Up = 1
    gated.set_up_value(2)
    other = subprocess.run(
        [sys.executable, "-c", CLEAR_AND_RUN, str(gated.here), str(gated.cache_root)],
        capture_output=True,
        text=True,
        env=gated.env(),
        timeout=120,
    )
    assert other.returncode == 0, other.stderr
    gated.open_gate("down")
    # The first session returns what it computed from the value it read...
    assert gated.finish(computing) == [105, {"Up": 0, "Down": 1}]
    # ...and its record says so, so the next session recomputes Down from Up = 2.
    assert gated.run("Down()") == [205, {"Up": 0, "Down": 1}]
    assert gated.run("Down()") == [205, {"Up": 0, "Down": 0}]


CLEAR_AND_RUN = """
import sys
sys.path.insert(0, sys.argv[1])
from pytest_taskproc import Context
Context.cache_dir = sys.argv[2]
import gatedmod
gatedmod.Up().clear_task()
assert gatedmod.Up().run_graph(max_workers=1) == 2
"""


def test_an_upstream_cleared_by_another_session_is_recomputed_not_a_crash(
    gated: Sessions,
) -> None:
    assert gated.run("Up()") == [1, {"Up": 1}]
    computing = gated.start("Both()")
    gated.wait_until_reached("slow", computing)  # planned: Up fresh, Slow running
    clear = "import sys; sys.path.insert(0, sys.argv[1]); from pytest_taskproc import Context; "
    clear += "Context.cache_dir = sys.argv[2]; import gatedmod; gatedmod.Up().clear_task()"
    done = subprocess.run(
        [sys.executable, "-c", clear, str(gated.here), str(gated.cache_root)],
        capture_output=True,
        text=True,
        env=gated.env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    gated.open_gate("slow")
    assert gated.finish(computing) == [1001, {"Up": 1, "Slow": 1, "Both": 1}]
    assert gated.run("Both()") == [1001, {"Up": 0, "Slow": 0, "Both": 0}]


# -- no clocks: copies, skew, dates ----------------------------------------------------------


def test_a_copied_cache_recomputes_nothing_whatever_its_dates(
    gated: Sessions, tmp_path: Path
) -> None:
    gated.open_gate("down")
    gated.open_gate("slow")
    assert gated.run("Both()")[0] == 1001
    assert gated.run("Down()")[0] == 105
    copy = tmp_path / "copied"
    subprocess.run(["cp", "-r", str(gated.cache_root), str(copy)], check=True)
    assert gated.run("Both()", root=copy) == [1001, {"Up": 0, "Slow": 0, "Both": 0}]
    assert gated.run("Down()", root=copy) == [105, {"Up": 0, "Down": 0}]

    # Clock skew between machines: dates anywhere from ten years back to ten ahead.
    rng = random.Random(7)
    now = time.time()
    for path in copy.rglob("*"):
        when = now + rng.uniform(-3e8, 3e8)
        os.utime(path, (when, when))
    assert gated.run("Down()", root=copy) == [105, {"Up": 0, "Down": 0}]

    # A downstream result dated in the future does not hide an upstream change.
    for path in (copy / "taskproc" / "gatedmod.Down").rglob("*"):
        os.utime(path, (now + 1e8, now + 1e8))
    gated.set_up_value(3)
    clear = "import sys; sys.path.insert(0, sys.argv[1]); from pytest_taskproc import Context; "
    clear += "Context.cache_dir = sys.argv[2]; import gatedmod; gatedmod.Up().clear_task()"
    env = gated.env()
    subprocess.run([sys.executable, "-c", clear, str(gated.here), str(copy)], env=env, check=True)
    assert gated.run("Down()", root=copy) == [305, {"Up": 1, "Down": 1}]


# -- code digests: helpers, constants, early cutoff ------------------------------------------

HELPERS = '''
SCALE = 2
GRID = [1, 2, 3]


def double(x: int) -> int:
    """Uses a constant and another helper."""
    return shift(x) * SCALE


def shift(x: int) -> int:
    return x + 0


def unused() -> int:
    return 0


class Row(TaskBase):
    def build_task(self, x: int) -> None:
        self.x = x

    def run_task(self) -> int:
        log("run", "Row", self.x)
        return double(self.x)


class Report(TaskBase):
    rows: RequiresList[int]

    def build_task(self) -> None:
        self.rows = [Row(x) for x in GRID]

    def run_task(self) -> list[int]:
        log("run", "Report")
        return list(self.rows)
'''


@pytest.fixture
def helpers(modules: TaskModules, cache_root: Path) -> Sessions:
    return Sessions(modules, cache_root, "helpermod", HELPERS)


def test_editing_a_helper_or_constant_a_task_uses_makes_it_stale(helpers: Sessions) -> None:
    detect: dict[str, Any] = {"detect_source_change": True}
    assert helpers.run("Report()", **detect) == [[2, 4, 6], {"Row": 3, "Report": 1}]
    helpers.edit("def unused() -> int:\n    return 0", "def unused() -> int:\n    return 1")
    helpers.edit("return x + 0", "return x + 0  # a comment, and a reformatted body")
    helpers.edit('"""Uses a constant and another helper."""', '"""Reworded."""')
    assert helpers.run("Report()", **detect) == [[2, 4, 6], {"Row": 0, "Report": 0}]

    helpers.edit("SCALE = 2", "SCALE = 3")
    # the reason names the constant that changed
    module = helpers.load()
    graph = TaskGraph([module.Report()])
    states = plan(graph, helpers.cache_root, True)
    row = states[node_key(module.Row(1))]
    assert row.reason is Reason.SOURCE_CHANGED
    assert "helpermod.SCALE" in row.describe()
    assert helpers.run("Report()", **detect) == [[3, 6, 9], {"Row": 3, "Report": 1}]

    helpers.edit("return x + 0", "return x + 1")  # a helper of a helper
    assert helpers.run("Report()", **detect) == [[6, 9, 12], {"Row": 3, "Report": 1}]
    # with detection turned off, code edits are ignored, as in taskproc
    helpers.edit("return x + 1", "return x + 2")
    off = helpers.run("Report()", detect_source_change=False)
    assert off == [[6, 9, 12], {"Row": 0, "Report": 0}]


def test_removing_a_grid_value_changes_the_upstream_set(helpers: Sessions) -> None:
    assert helpers.run("Report()") == [[2, 4, 6], {"Row": 3, "Report": 1}]
    helpers.edit("GRID = [1, 2, 3]", "GRID = [1, 2]")
    # detection off: the removed row goes all the same, since the upstream set changed
    assert helpers.run("Report()") == [[2, 4], {"Row": 0, "Report": 1}]
    module = helpers.load()
    states = plan(TaskGraph([module.Report()]), helpers.cache_root, False)
    assert states[node_key(module.Report())].describe() == "fresh"
    helpers.edit("GRID = [1, 2]", "GRID = [1, 2, 4]")
    module = helpers.load()
    report = plan(TaskGraph([module.Report()]), helpers.cache_root, False)[
        node_key(module.Report())
    ]
    assert report.reason is Reason.UPSTREAM_SET
    assert "new: Row(4)" in report.describe()
    assert helpers.run("Report()") == [[2, 4, 8], {"Row": 1, "Report": 1}]


def test_a_code_edit_that_reproduces_the_value_leaves_downstream_fresh(gated: Sessions) -> None:
    detect: dict[str, Any] = {"detect_source_change": True}
    gated.open_gate("down")
    assert gated.run("Down()", **detect) == [105, {"Up": 1, "Down": 1}]
    gated.edit("        return value\n", "        return value * 1\n")
    assert gated.run("Down()", **detect) == [105, {"Up": 1, "Down": 0}]
    assert gated.run("Down()", **detect) == [105, {"Up": 0, "Down": 0}]


CHOOSE = """
class Choose(TaskBase):
    prev1: Requires[int]
    prev2: Requires[int]

    def build_task(self, n: int, k: int) -> None:
        if 0 < k < n:
            self.prev1 = Choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)
        else:
            self.prev1 = Const(0)
            self.prev2 = Const(1)

    def run_task(self) -> int:
        return self.prev1 + self.prev2
"""


def test_clearing_recomputes_the_task_and_everything_downstream(modules: TaskModules) -> None:
    """The counts of taskproc 0.11.2's own test suite."""
    choose = modules.load("choosemod", CHOOSE).Choose
    choose.clear_all_tasks()
    answer, stats = choose(6, 3).run_graph_with_stats(rate_limits={choose.task_name: 2})
    assert (answer, sum(stats["stats"].values())) == (20, 15)
    answer, stats = choose(6, 3).run_graph_with_stats()
    assert (answer, sum(stats["stats"].values())) == (20, 0)
    choose(3, 3).clear_task()
    answer, stats = choose(6, 3).run_graph_with_stats()
    assert (answer, sum(stats["stats"].values())) == (20, 4)


# -- reading writes nothing --------------------------------------------------------------


def test_planning_reading_and_dry_runs_leave_the_cache_byte_for_byte(
    helpers: Sessions, cache_root: Path, pytester: pytest.Pytester
) -> None:
    helpers.run("Report()")
    helpers.edit("SCALE = 2", "SCALE = 5")  # so that something is stale
    before = snapshot(cache_root)
    module = helpers.load()
    forget_stores()
    states = plan(TaskGraph([module.Report()]), cache_root, True)
    assert states[node_key(module.Row(1))].stale
    assert module.Report().get_task_result() == [2, 4, 6]
    assert module.Row(2).task_record["args"] == {"x": 2}
    assert module.Row(99).task_record is None
    with pytest.raises(ResultMissingError):
        module.Row(99).get_task_result()
    # the plugin's dry run, in another process
    (pytester.path / "task_dry.py").write_text(DRY_RUN_TASKS.format(here=str(helpers.here)))
    result = pytester.runpytest_subprocess(
        "--taskproc", f"--taskproc-cache-dir={cache_root}", "--collect-only", "-q", timeout=60
    )
    assert "would be computed" in result.stdout.str(), result.stdout.str()
    assert snapshot(cache_root) == before


DRY_RUN_TASKS = """
import sys

sys.path.insert(0, {here!r})

from helpermod import Report
from pytest_taskproc import Requires, TaskBase


class Main(TaskBase):
    report: Requires[list]

    def build_task(self) -> None:
        self.report = Report()

    def run_task(self) -> list:
        return self.report
"""


def test_a_read_only_cache_is_read(
    modules: TaskModules, monkeypatch: pytest.MonkeyPatch, tmpfs: Callable[[str], Path]
) -> None:
    disk = tmpfs("8m")
    monkeypatch.setattr(Context, "cache_dir", disk)
    module = modules.load("romod", HELPERS)
    with ThreadPoolExecutor(2) as pool:
        assert module.Report().run_graph(executor=pool) == [2, 4, 6]
    forget_stores()
    release_locks(disk)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    modules.clear_log()
    with ThreadPoolExecutor(2) as pool:
        assert module.Report().run_graph(executor=pool) == [2, 4, 6]
    assert module.Row(3).get_task_result() == 6
    assert module.Row(3).task_record["value"]["size"] > 0
    assert modules.runs() == []
    with pytest.raises(CacheAccessError, match="read-only"):
        module.Row(10).run_graph(max_workers=1)


# -- repair without loss -----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["zero bytes", "deleted"])
def test_a_lost_id_table_is_rebuilt_with_the_same_ids(
    modules: TaskModules, cache_root: Path, damage: str
) -> None:
    module = modules.load("idmod", HELPERS)
    with ThreadPoolExecutor(2) as pool:
        module.Report().run_graph(executor=pool)
    ids = {x: module.Row(x).task_id for x in (1, 2, 3)}
    forget_stores()
    table = cache_root / "taskproc" / "idmod.Row" / "id_table"
    if damage == "deleted":
        shutil.rmtree(table)
    else:
        (table / "cache.db").write_bytes(b"")
    modules.clear_log()
    with ThreadPoolExecutor(2) as pool:
        assert module.Report().run_graph(executor=pool) == [2, 4, 6]
    assert modules.runs() == []
    with pytest.warns(CacheCorruptionWarning, match="rebuilding it"):
        assert module.Row(7).task_id not in ids.values()
    forget_stores()
    assert {x: module.Row(x).task_id for x in (1, 2, 3)} == ids


@pytest.mark.parametrize("lose_table", [False, True])
def test_junk_in_args_json_and_a_folder_replaced_by_a_file_are_warnings(
    modules: TaskModules, cache_root: Path, lose_table: bool
) -> None:
    module = modules.load("junkmod", HELPERS)
    with ThreadPoolExecutor(2) as pool:
        module.Report().run_graph(executor=pool)
    results = cache_root / "taskproc" / "junkmod.Row" / "results"
    row1 = results / str(module.Row(1).task_id)
    row2 = results / str(module.Row(2).task_id)
    (row1 / "args.json").write_bytes(os.urandom(64))
    shutil.rmtree(row2)
    row2.write_bytes(b"not a folder")
    if lose_table:
        shutil.rmtree(cache_root / "taskproc" / "junkmod.Row" / "id_table")
    forget_stores()
    modules.clear_log()
    with pytest.warns(CacheCorruptionWarning) as caught, ThreadPoolExecutor(2) as pool:
        assert module.Report().run_graph(executor=pool) == [2, 4, 6]
    messages = " ".join(str(w.message) for w in caught)
    if lose_table:
        # without the table, the folders are the truth: unreadable ones are not used
        assert "no readable args.json" in messages, messages
        assert sorted(modules.runs()) == ["run Report", "run Row 1", "run Row 2"]
    else:
        # args.json is not what a result is trusted by (its record is): Row 1 stays
        assert "not a folder" in messages, messages
        assert sorted(modules.runs()) == ["run Report", "run Row 2"]
    modules.clear_log()
    with ThreadPoolExecutor(2) as pool:
        assert module.Report().run_graph(executor=pool) == [2, 4, 6]
    assert modules.runs() == []


# -- identity ----------------------------------------------------------------------------

IDENTITY = """
class Fit(TaskBase):
    def build_task(self, alpha: float, flags: object = None) -> None:
        self.alpha = alpha

    def run_task(self) -> float:
        return self.alpha * 2


def make(factor: int) -> type:
    class Scaled(TaskBase):
        def build_task(self, x: int) -> None:
            self.x = x

        def run_task(self) -> int:
            return self.x * factor

    return Scaled


A = make(100)
B = make(200)
"""


def test_numpy_scalars_are_the_plain_values_they_equal(modules: TaskModules) -> None:
    module = modules.load("npmod", IDENTITY)
    assert module.Fit(np.float64(0.5)) is module.Fit(0.5)
    assert type(module.Fit(np.float64(0.25)).task_args["alpha"]) is float
    assert module.Fit(np.int64(3)) is module.Fit(3)
    assert module.Fit(1, np.bool_(True)) is module.Fit(1, True)
    assert module.Fit(1, np.bool_(True)) is not module.Fit(1, 1)
    assert module.Fit(1, [np.float32(0.5), (np.int8(2),)]) is module.Fit(1, [0.5, (2,)])
    for alpha in np.logspace(-2, 0, 3):
        assert module.Fit(alpha).run_graph(max_workers=1) == float(alpha) * 2
    with pytest.raises(TypeError, match=r"Fit: argument 'alpha' .*nan"):
        module.Fit(np.float64("nan"))


def test_deeply_nested_arguments_are_the_promised_type_error(modules: TaskModules) -> None:
    module = modules.load("deepmod", IDENTITY)
    deep: Any = 1
    for _ in range(sys.getrecursionlimit() + 100):
        deep = [deep]
    with pytest.raises(TaskArgumentError, match=r"Fit: argument 'alpha' is nested too deeply"):
        module.Fit(deep)


def test_two_classes_of_one_name_cannot_share_a_cache(modules: TaskModules) -> None:
    module = modules.load("factorymod", IDENTITY)
    assert module.A(1).run_graph(max_workers=1) == 100
    with pytest.raises(ClassNameConflictError) as info:
        module.B(1)
    message = str(info.value)
    assert "factorymod.make.<locals>.Scaled" in message
    assert message.count("factorymod.py:") == 2, message


# -- workers compute what was planned -----------------------------------------------------

ENVMOD = """
N = int(os.environ.get("ENVMOD_N", "3"))


class Leaf(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        return self.i


class Total(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Leaf(i) for i in range(N)]

    def run_task(self) -> int:
        log("run", "Total")
        return sum(self.parts) * N
"""


def test_a_worker_whose_rebuilt_task_differs_refuses_it(
    modules: TaskModules, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENVMOD_N", raising=False)
    module = modules.load("envmod", ENVMOD)
    assert module.N == 3
    monkeypatch.setenv("ENVMOD_N", "4")  # fresh worker processes see another module global
    spawned = ProcessPoolExecutor(2, mp_context=get_context("spawn"))
    with spawned as pool, pytest.raises(PlanMismatchError, match=r"Total\(\).*differs"):
        module.Total().run_graph(executor=pool)
    assert modules.runs() == []
    assert module.Total().task_record is None
    monkeypatch.setenv("ENVMOD_N", "3")
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        assert module.Total().run_graph(executor=pool) == 9


# -- the cache root stays put -------------------------------------------------------------

MOVER = """
class Mover(TaskBase):
    def run_task(self) -> str:
        os.environ["CP_CACHE_DIR"] = os.path.join(os.getcwd(), "elsewhere")
        os.chdir("/")
        return str(self.task_directory)


class After(TaskBase):
    moved: Requires[str]

    def build_task(self) -> None:
        self.moved = Mover()

    def run_task(self) -> str:
        return str(self.task_directory)
"""


def test_a_task_that_moves_cwd_or_cp_cache_dir_does_not_move_the_cache(
    modules: TaskModules, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "the-cache"
    monkeypatch.setattr(Context, "cache_dir", None)
    monkeypatch.setenv("CP_CACHE_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    module = modules.load("movermod", MOVER)
    with ThreadPoolExecutor(1) as pool:
        after = module.After().run_graph(executor=pool)
    assert after.startswith(str(root)), after
    assert module.Mover().get_task_result().startswith(str(root))
    assert module.After().get_task_result() == after
    assert not (tmp_path / "elsewhere").exists()


# -- what the plugin says -----------------------------------------------------------------

PLUGIN_TASKS = """
FACTOR = 10
GRID = [1, 2, 3]


def scale(x: int) -> int:
    return x * FACTOR


class Cell(TaskBase):
    def build_task(self, x: int) -> None:
        self.x = x

    def run_task(self) -> int:
        log("Cell", self.x)
        return scale(self.x)


class Table(TaskBase):
    cells: RequiresList[int]

    def build_task(self) -> None:
        self.cells = [Cell(x) for x in GRID]

    def run_task(self) -> list[int]:
        log("Table")
        return list(self.cells)
"""


def test_stale_reasons_name_the_helper_constant_or_upstream_that_changed(
    pytester: pytest.Pytester,
) -> None:
    from taskproject import Project

    project = Project(pytester)
    path = project.task_file("task_reasons.py", PLUGIN_TASKS)
    project.run().assert_outcomes(passed=4)
    project.runs()

    path.write_text(path.read_text().replace("FACTOR = 10", "FACTOR = 20"))
    result = project.run("-v", "--taskproc-manifest=m.json")
    result.stdout.fnmatch_lines(
        [
            "*Cell[[]1[]] PASSED (computed: its code changed (task_reasons.FACTOR))*",
            "*Table PASSED (computed: an upstream result changed (Cell(1)))*",
        ]
    )
    # The manifest gives each computed task's reason in the same words.
    entries = json.loads((project.path / "m.json").read_text())["tasks"]
    reasons = {e["item"]: e.get("reason") for e in entries}
    assert reasons["task_reasons.py::Cell[1]"] == "its code changed (task_reasons.FACTOR)"
    assert reasons["task_reasons.py::Table"] == "an upstream result changed (Cell(1))"
    assert sorted(project.runs()) == ["Cell 1", "Cell 2", "Cell 3", "Table"]

    path.write_text(path.read_text().replace("GRID = [1, 2, 3]", "GRID = [1, 2]"))
    result = project.run("-v")
    result.stdout.fnmatch_lines(
        ['*Table PASSED (computed: its upstream tasks changed (gone: Cell {"x":3}))*']
    )
    assert project.runs() == ["Table"]

    # the dry run gives the same reasons and computes nothing
    path.write_text(path.read_text().replace("return x * FACTOR", "return x * FACTOR + 1"))
    result = project.run("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "*task_reasons.py::Cell[[]1[]]: its code changed (task_reasons.scale)",
            "*task_reasons.py::Table: an upstream result changed (Cell(1))",
        ]
    )
    assert project.runs() == []


def test_a_fully_cached_pytest_run_reads_a_read_only_cache(
    pytester: pytest.Pytester, tmpfs: Callable[[str], Path]
) -> None:
    from taskproject import Project

    disk = tmpfs("8m")
    project = Project(pytester)
    project.cache = disk
    project.task_file("task_ro.py", PLUGIN_TASKS)
    project.run().assert_outcomes(passed=4)
    project.runs()
    release_locks(disk)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    result = project.run()
    assert result.parseoutcomes() == {"cached": 4}, result.stdout.str()
    assert project.runs() == []
