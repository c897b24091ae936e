"""Verifying cached tasks (SPEC 5): written files, scratch paths, exact floats, key order, damage.

Each task reads a setting from a file next to it, so a test can make the
recomputation differ from the cached run without editing code.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import TaskModules
from taskproject import Project

from pytest_taskproc.compare import first_difference
from pytest_taskproc.provenance import Status, verify_task

TASKS = """
import json
from collections import OrderedDict
from pathlib import Path

HERE = Path(__file__).parent


def setting(name: str, default):
    path = HERE / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else default


class Model(TaskBase):
    def run_task(self) -> str:
        log("run", "Model")
        path = self.task_directory / "model.bin"
        path.write_bytes(setting("weights", "w1").encode())
        return str(path)


class ModelPath(TaskBase):
    def run_task(self) -> Path:
        (self.task_directory / "sub").mkdir()
        path = self.task_directory / "sub" / "model.bin"
        path.write_bytes(b"same")
        return path


class Zero(TaskBase):
    def run_task(self) -> list:
        sign = setting("sign", 1.0)
        return [float("nan"), 0.0 * sign]


class Ordered(TaskBase):
    def run_task(self) -> OrderedDict:
        keys = setting("keys", ["a", "b"])
        return OrderedDict((k, 1) for k in keys)


class Score(TaskBase):
    model: Requires[str]

    def build_task(self) -> None:
        self.model = Model()

    def run_task(self) -> str:
        return Path(self.model).read_text()
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    return modules.load("verifytasks", TASKS)


def run(task: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return task.run_graph(executor=pool)


def test_a_task_returning_a_path_into_its_task_directory_verifies(tasks: ModuleType) -> None:
    run(tasks.Model())
    run(tasks.ModelPath())
    assert verify_task(tasks.Model()).status is Status.VERIFIED
    assert verify_task(tasks.ModelPath()).status is Status.VERIFIED


def test_different_bytes_in_a_written_file_are_not_reproducible(
    tasks: ModuleType, modules: TaskModules
) -> None:
    run(tasks.Model())
    (modules.directory / "weights.json").write_text(json.dumps("w2"))
    found = verify_task(tasks.Model())
    assert found.status is Status.NOT_REPRODUCIBLE
    assert found.difference == "the files it wrote into its task_directory differ: model.bin"


def test_floats_are_compared_bit_for_bit(tasks: ModuleType, modules: TaskModules) -> None:
    run(tasks.Zero())
    assert verify_task(tasks.Zero()).status is Status.VERIFIED  # NaN matches NaN
    (modules.directory / "sign.json").write_text("-1.0")
    found = verify_task(tasks.Zero())
    assert found.status is Status.NOT_REPRODUCIBLE
    assert found.difference == "value[1]: cached 0.0, recomputed -0.0"
    assert first_difference(np.array([0.0, np.nan]), np.array([-0.0, np.nan])) is not None


def test_ordered_mappings_are_compared_in_order(tasks: ModuleType, modules: TaskModules) -> None:
    run(tasks.Ordered())
    (modules.directory / "keys.json").write_text(json.dumps(["b", "a"]))
    found = verify_task(tasks.Ordered())
    assert found.status is Status.NOT_REPRODUCIBLE
    assert found.difference is not None and "key order differs" in found.difference
    assert first_difference({"a": 1, "b": 2}, {"b": 2, "a": 1}) is None
    assert first_difference(OrderedDict(a=1), OrderedDict(a=1)) is None


def test_a_damaged_upstream_value_is_reported(tasks: ModuleType, cache_root: Path) -> None:
    run(tasks.Score())
    model = tasks.Model()
    path = cache_root / "taskproc" / model.task_name / "results" / str(model.task_id)
    value = path / "result.pkl"
    data = bytearray(value.read_bytes())
    data[-3] ^= 0xFF
    value.write_bytes(bytes(data))
    found = verify_task(tasks.Score())
    assert found.status is Status.NOT_REPRODUCIBLE
    assert found.difference is not None
    assert found.difference.startswith(
        "cannot be recomputed: the cached value of upstream task Model() is damaged"
    )


def test_the_model_file_pattern_verifies_under_the_plugin(pytester: pytest.Pytester) -> None:
    project = Project(pytester)
    project.task_file(
        "task_model.py",
        """
        class Train(TaskBase):
            def run_task(self) -> str:
                log("Train")
                path = self.task_directory / "model.bin"
                path.write_bytes(os.environ.get("WEIGHTS", "w1").encode())
                return str(path)
        """,
    )
    assert project.run().ret == 0
    verified = project.run("--taskproc-verify", "-n", "2")
    assert verified.ret == 0, verified.stdout.str()
    assert "1 verified" in verified.stdout.str()
    os.environ["WEIGHTS"] = "w2"
    try:
        changed = project.run("--taskproc-verify")
    finally:
        del os.environ["WEIGHTS"]
    assert changed.ret == 1
    changed.stdout.fnmatch_lines(["*the files it wrote into its task_directory differ: model.bin*"])
