"""Staleness: what a rerun computes after clearing, recomputing or editing tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import TaskModules

from pytest_taskproc import Context
from pytest_taskproc.freshness import Reason, plan
from pytest_taskproc.graph import TaskGraph, node_key

GRAPH = """
class A(TaskBase):
    def run_task(self) -> int:
        log("run", "A")
        return 1


class B(TaskBase):
    up: Requires[int]

    def build_task(self) -> None:
        self.up = A()

    def run_task(self) -> int:
        log("run", "B")
        return self.up + 1


class S(TaskBase):
    def run_task(self) -> int:
        log("run", "S")
        return 100


class C(TaskBase):
    ups: RequiresList[int]

    def build_task(self) -> None:
        self.ups = [B(), S()]

    def run_task(self) -> int:
        log("run", "C")
        return sum(self.ups)


class Side(TaskBase):
    up: Requires[int]

    def build_task(self) -> None:
        self.up = A()

    def run_task(self) -> int:
        log("run", "Side")
        return -self.up


class Root(TaskBase):
    ups: RequiresDict[str, int]

    def build_task(self) -> None:
        self.ups = {"c": C(), "side": Side()}

    def run_task(self) -> int:
        log("run", "Root")
        return self.ups["c"] + self.ups["side"]
"""


@pytest.fixture
def graph(modules: TaskModules) -> ModuleType:
    return modules.load("graph", GRAPH)


def run(task: Any, **options: Any) -> tuple[Any, dict[str, int]]:
    with ThreadPoolExecutor(2) as pool:
        result, stats = task.run_graph_with_stats(executor=pool, **options)
    counts: dict[str, int] = stats["stats"]
    return result, {name.split(".")[-1]: n for name, n in counts.items()}


def test_rerun_computes_nothing(graph: ModuleType, modules: TaskModules) -> None:
    result, stats = run(graph.Root())
    assert result == 101
    assert set(stats.values()) == {1}
    modules.clear_log()
    result, stats = run(graph.Root())
    assert result == 101
    assert set(stats.values()) == {0}
    assert modules.runs() == []


def test_rerun_with_source_detection_on_computes_nothing(
    graph: ModuleType, modules: TaskModules
) -> None:
    run(graph.Root(), detect_source_change=True)
    modules.clear_log()
    _, stats = run(graph.Root(), detect_source_change=True)
    assert set(stats.values()) == {0}
    assert modules.runs() == []


def test_clearing_an_upstream_task_recomputes_it_and_its_downstream_only(
    graph: ModuleType, modules: TaskModules
) -> None:
    run(graph.Root())
    graph.B().clear_task()
    modules.clear_log()
    result, stats = run(graph.Root())
    assert result == 101
    assert stats == {"A": 0, "B": 1, "S": 0, "C": 1, "Side": 0, "Root": 1}
    assert sorted(modules.runs()) == ["run B", "run C", "run Root"]


def test_a_newer_upstream_result_makes_downstream_stale(
    graph: ModuleType, modules: TaskModules
) -> None:
    run(graph.Root())
    graph.A().clear_task()
    run(graph.A())  # A alone: its result is now newer than B's and Side's
    modules.clear_log()
    result, stats = run(graph.Root())
    assert result == 101
    assert stats == {"A": 0, "B": 1, "S": 0, "C": 1, "Side": 1, "Root": 1}


def test_running_a_middle_task_leaves_unrelated_results_alone(
    graph: ModuleType, modules: TaskModules
) -> None:
    run(graph.Root())
    graph.A.clear_all_tasks()
    modules.clear_log()
    assert run(graph.Side())[0] == -1
    assert sorted(modules.runs()) == ["run A", "run Side"]
    # B, C and Root are stale now, but only running them shows it
    assert graph.B().get_task_result() == 2


def test_plan_gives_a_reason_for_every_stale_task(graph: ModuleType) -> None:
    root = Context.get_cache_root()
    tasks = TaskGraph([graph.Root()])
    states = plan(tasks, root, False)
    assert {s.reason for s in states.values()} == {Reason.MISSING}
    run(graph.Root())

    states = plan(tasks, root, False)
    assert all(not s.stale and s.describe() == "fresh" for s in states.values())

    graph.B().clear_task()
    states = plan(tasks, root, False, cleared=frozenset({node_key(graph.B())}))
    reasons = {k[0].split(".")[-1]: s.reason for k, s in states.items()}
    assert reasons == {
        "A": None,
        "B": Reason.CLEARED,
        "S": None,
        "C": Reason.UPSTREAM_STALE,
        "Side": None,
        "Root": Reason.UPSTREAM_STALE,
    }
    assert states[node_key(graph.C())].describe() == "an upstream result changed (B())"

    run(graph.B())
    states = plan(tasks, root, False)
    assert states[node_key(graph.C())].reason is Reason.UPSTREAM_CHANGED
    assert states[node_key(graph.Root())].reason is Reason.UPSTREAM_STALE


# -- source-change detection, observed from fresh interpreters -----------------------

SOURCE = '''
class Up(TaskBase):
    """Up's docstring."""

    def run_task(self) -> int:
        # a comment in Up
        log("run", "Up")
        return 1


class Down(TaskBase):
    up: Requires[int]

    def build_task(self) -> None:
        self.up = Up()

    def run_task(self) -> int:
        log("run", "Down")
        return self.up * 10
'''

RUNNER = """
import json, sys
from concurrent.futures import ThreadPoolExecutor

from pytest_taskproc import Context

sys.path.insert(0, sys.argv[1])
Context.cache_dir = sys.argv[2]
import srcmod

options = json.loads(sys.argv[3])
with ThreadPoolExecutor(2) as pool:
    result, stats = srcmod.Down().run_graph_with_stats(executor=pool, **options)
print(json.dumps([result, stats["stats"]]))
"""


class FreshInterpreter:
    """Runs ``Down()`` of a module on disk in a new Python process each time."""

    def __init__(self, modules: TaskModules, cache_root: Path) -> None:
        self.modules = modules
        self.cache_root = cache_root
        self.path = modules.write("srcmod", SOURCE)

    def edit(self, old: str, new: str) -> None:
        text = self.path.read_text()
        assert old in text
        self.path.write_text(text.replace(old, new))

    def run(
        self, detect: bool | None = None, env: dict[str, str] | None = None
    ) -> tuple[int, dict[str, int]]:
        """Run ``Down()`` with ``detect_source_change=detect``; its result and runs per class."""
        options = {} if detect is None else {"detect_source_change": detect}
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
        # an edit of the same size in the same second would otherwise reuse the old .pyc
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        environment.update(env or {})
        argv = [
            sys.executable,
            "-c",
            RUNNER,
            str(self.modules.directory),
            str(self.cache_root),
            json.dumps(options),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=120)
        assert done.returncode == 0, done.stderr
        result, stats = json.loads(done.stdout.splitlines()[-1])
        return result, {name.split(".")[-1]: n for name, n in stats.items()}


@pytest.fixture
def fresh(modules: TaskModules, cache_root: Path) -> FreshInterpreter:
    return FreshInterpreter(modules, cache_root)


def test_source_detection_ignores_comments_and_docstrings_but_not_code(
    fresh: FreshInterpreter,
) -> None:
    assert fresh.run(detect=True) == (10, {"Up": 1, "Down": 1})

    fresh.edit("# a comment in Up", "# another comment, and a longer one")
    blank_line = "def run_task(self) -> int:\n\n        log("
    fresh.edit("def run_task(self) -> int:\n        log(", blank_line)
    assert fresh.run(detect=True) == (10, {"Up": 0, "Down": 0})

    fresh.edit('"""Up\'s docstring."""', '"""Up\'s docstring, reworded at length."""')
    assert fresh.run(detect=True) == (10, {"Up": 0, "Down": 0})

    fresh.edit("return self.up * 10", "return self.up * 20")
    assert fresh.run(detect=True) == (20, {"Up": 0, "Down": 1})

    fresh.edit("return 1", "return 2")
    assert fresh.run(detect=True) == (40, {"Up": 1, "Down": 1})
    assert fresh.run(detect=True) == (40, {"Up": 0, "Down": 0})


def test_source_detection_is_on_by_default_and_off_with_the_env_variable(
    fresh: FreshInterpreter,
) -> None:
    assert fresh.run() == (10, {"Up": 1, "Down": 1})
    fresh.edit("return 1", "return 3")
    assert fresh.run(env={"CP_DETECT_SOURCE_CHANGE": "0"}) == (10, {"Up": 0, "Down": 0})
    assert fresh.run(detect=False) == (10, {"Up": 0, "Down": 0})
    assert fresh.run() == (30, {"Up": 1, "Down": 1})


def test_the_argument_overrides_the_env_variable(fresh: FreshInterpreter) -> None:
    fresh.run()
    fresh.edit("return 1", "return 5")
    off_by_env = {"CP_DETECT_SOURCE_CHANGE": "0"}
    assert fresh.run(env=off_by_env, detect=True) == (50, {"Up": 1, "Down": 1})
    fresh.edit("return 5", "return 6")
    on_by_env = {"CP_DETECT_SOURCE_CHANGE": "1"}
    assert fresh.run(env=on_by_env, detect=False) == (50, {"Up": 0, "Down": 0})
