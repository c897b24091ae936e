"""``pytest_taskproc.task_graph``: the graph as a networkx DiGraph with each task's state."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import networkx as nx  # type: ignore[import-untyped]
import pytest
from conftest import TaskModules

import pytest_taskproc

TASKS = """
class Value(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> list[int]:
        return [self.n] * 1000


class Total(TaskBase):
    parts: RequiresList[list[int]]

    def build_task(self, count: int) -> None:
        self.parts = [Value(i) for i in range(count)]

    def run_task(self) -> int:
        return sum(sum(p) for p in self.parts)
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    return modules.load("graphtasks", TASKS)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        os.path.join(folder, name): Path(folder, name).read_bytes()
        for folder, _, names in os.walk(root)
        for name in names
    }


def test_nodes_carry_class_arguments_state_reason_size_and_time(
    tasks: ModuleType, cache_root: Path
) -> None:
    tasks.Total(2).run_graph(executor=None, max_workers=1)
    tasks.Value(1).clear_task()
    before = snapshot(cache_root)
    graph = pytest_taskproc.task_graph(tasks.Total(3))
    assert snapshot(cache_root) == before  # planning writes nothing
    assert isinstance(graph, nx.DiGraph)
    nodes = {data["label"]: data for _, data in graph.nodes(data=True)}
    assert sorted(nodes) == ["Total(3)", "Value(0)", "Value(1)", "Value(2)"]
    fresh = nodes["Value(0)"]
    assert fresh["cls"] == "graphtasks.Value" and fresh["args"] == {"n": 0}
    assert (fresh["state"], fresh["reason"]) == ("fresh", None)
    assert fresh["size"] > fresh["value_size"] > 0
    assert fresh["seconds"] >= 0 and fresh["computed_at"].endswith("Z")
    assert fresh["task"] == tasks.Value(0)
    cleared = nodes["Value(1)"]
    assert (cleared["state"], cleared["reason"]) == ("stale", "no result yet")
    assert "size" not in cleared and cleared["task_id"] is not None
    assert nodes["Value(2)"]["task_id"] is None  # never computed: no id handed out
    assert nodes["Total(3)"]["state"] == "stale"
    # Edges run from upstream to downstream, so networkx orders tasks as a run does.
    labels = [graph.nodes[k]["label"] for k in nx.topological_sort(graph)]
    assert labels[-1] == "Total(3)"
    assert graph.in_degree(("graphtasks.Total", '{"count":3}')) == 3


def test_task_graph_is_exported_lazily_from_the_package() -> None:
    assert "task_graph" in dir(pytest_taskproc)
    assert pytest_taskproc.task_graph.__module__ == "pytest_taskproc.taskgraph"
