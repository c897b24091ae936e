"""Task construction: arguments frozen when the task is made, and slots declared before use.

A sweep that reuses one ``params`` dict for every task must give one task per
value (issue: the tasks used to share the caller's dict, so the last value
was cached under every key); a task kept in an attribute that is not a
requirement slot is an error at build time, never a silent hang later.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import TaskModules
from taskproject import Project

from pytest_taskproc.executors import InlineExecutor

SWEEP = """
class Train(TaskBase):
    def build_task(self, params: dict) -> None:
        self.lr = params["lr"]
        params["seen"] = True  # build_task may change its private copy freely

    def run_task(self) -> float:
        log("run", "Train", self.lr)
        return self.lr * 10


class Sweep(TaskBase):
    scores: RequiresList[float]

    def build_task(self) -> None:
        params = {"lr": 0.0, "layers": [1, 2]}
        tasks = []
        for lr in (0.1, 0.2, 0.3):
            params["lr"] = lr
            params["layers"].append(lr)
            tasks.append(Train(params))
        self.scores = tasks

    def run_task(self) -> list:
        log("run", "Sweep")
        return self.scores
"""


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_sweep_reusing_one_dict_makes_one_task_per_value(modules: TaskModules, pool: str) -> None:
    mod = modules.load("sweep", SWEEP)
    executor = ThreadPoolExecutor(2) if pool == "thread" else ProcessPoolExecutor(2)
    with executor:
        assert mod.Sweep().run_graph(executor=executor) == [1.0, 2.0, 3.0]
    assert sorted(modules.runs()) == ["run Sweep", *(f"run Train {lr}" for lr in (0.1, 0.2, 0.3))]
    trains = mod.Sweep()._tp_req_scores
    assert len({t.task_id for t in trains}) == 3
    # task_args shows what each task was given, not what the caller's dict became
    assert [t.task_args["params"]["layers"] for t in trains] == [
        [1, 2, 0.1],
        [1, 2, 0.1, 0.2],
        [1, 2, 0.1, 0.2, 0.3],
    ]
    assert all("seen" not in t.task_args["params"] for t in trains)


def test_task_args_stay_faithful_and_tasks_in_arguments_stay_themselves(
    modules: TaskModules,
) -> None:
    mod = modules.load(
        "faithful",
        """
        class Up(TaskBase):
            def run_task(self) -> int:
                return 1


        class Holder(TaskBase):
            given: Requires[int]

            def build_task(self, shape: tuple, names: dict, up: Any = None) -> None:
                self.shape = shape
                self.names = names
                self.given = up if up is not None else Const(0)

            def run_task(self) -> int:
                return 0
        """.replace("Any = None", "object = None"),
    )
    names: dict[Any, Any] = {0: "a", 1: ["b"]}
    up = mod.Up()
    task = mod.Holder((1, 2), names, up)
    names[1].append("c")
    args = task.task_args
    assert args["shape"] == (1, 2) and type(args["shape"]) is tuple
    assert args["names"] == {0: "a", 1: ["b"]} and list(args["names"]) == [0, 1]
    assert args["up"] is up and task._tp_req_given is up
    args["names"][1].append("changed by the caller")  # a copy: the task does not change
    assert task.task_args["names"] == {0: "a", 1: ["b"]}
    assert mod.Holder((1, 2), {0: "a", 1: ["b"]}, up) is task


def test_a_sweep_in_the_plugin_computes_each_value(pytester: pytest.Pytester) -> None:
    project = Project(pytester)
    project.task_file("task_sweep.py", SWEEP.replace('log("run", ', "log("))
    result = project.run("-p", "no:randomly")
    assert result.ret == 0, result.stdout.str()
    assert sorted(project.runs()) == ["Sweep", "Train 0.1", "Train 0.2", "Train 0.3"]
    again = project.run("-p", "no:randomly")
    assert again.ret == 0
    assert project.runs() == []


SHARED_CONST = """
BASE = {"layers": [1, 2]}


class Grow(TaskBase):
    config: Requires[dict]

    def build_task(self, extra: int) -> None:
        self.config = Const(BASE)
        self.extra = extra

    def run_task(self) -> int:
        self.config["layers"].append(self.extra)  # changes its own copy in place
        log("run", "Grow", self.extra)
        return sum(self.config["layers"])


class Both(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Grow(10), Grow(20)]

    def run_task(self) -> list:
        return self.parts
"""


@pytest.mark.parametrize("pool", ["inline", "thread", "process"])
def test_a_const_value_changed_in_place_by_one_task_is_not_what_the_next_computes_from(
    modules: TaskModules, pool: str
) -> None:
    # One module dict given to Const by a sweep: each run_task gets its own copy, so
    # the second task computes from the value its record names, not from what the
    # first task left in it (in a pool, jobs of one chunk share one unpickled copy).
    mod = modules.load("shared_const", SHARED_CONST)
    makers = {
        "inline": InlineExecutor,
        "thread": ThreadPoolExecutor,
        "process": ProcessPoolExecutor,
    }
    with makers[pool]() as executor:
        assert mod.Both().run_graph(executor=executor) == [13, 23]
    assert mod.BASE == {"layers": [1, 2]}
    assert sorted(modules.runs()) == ["run Grow 10", "run Grow 20"]


CHANGES_ITSELF = """
class Scale(TaskBase):
    def build_task(self, params: dict) -> None:
        self.params = params
        self.history = []

    def run_task(self) -> float:
        self.params["lr"] *= 10  # in place, on the task object kept for this process
        self.history.append(self.params["lr"])
        log("run", "Scale", self.params["lr"])
        if os.path.exists(os.environ["FAIL_FLAG"]):
            raise RuntimeError("not yet")
        return self.params["lr"]
"""


def test_a_task_changing_its_own_attributes_in_place_computes_the_same_when_run_again(
    modules: TaskModules, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # build_task runs once per process: a run after a failure (a notebook fixing what
    # failed) or after clear_task must not start from what the last run left behind.
    flag = tmp_path / "fail"
    flag.touch()
    monkeypatch.setenv("FAIL_FLAG", str(flag))
    mod = modules.load("changes_itself", CHANGES_ITSELF)
    with pytest.raises(RuntimeError, match="not yet"):
        mod.Scale({"lr": 0.1}).run_graph(executor=InlineExecutor())
    flag.unlink()
    assert mod.Scale({"lr": 0.1}).run_graph(executor=InlineExecutor()) == 1.0
    mod.Scale({"lr": 0.1}).clear_task()
    assert mod.Scale({"lr": 0.1}).run_graph(executor=InlineExecutor()) == 1.0
    assert modules.runs() == ["run Scale 1.0"] * 3
    task = mod.Scale({"lr": 0.1})
    assert (task.params, task.history) == ({"lr": 0.1}, [])


UNDECLARED = """
from pytest_taskproc import InputFile


class Data(TaskBase):
    def run_task(self) -> list:
        return [1, 2, 3]


class Total(TaskBase):
    def build_task(self, what: str) -> None:
        if what == "task":
            self.data = Data()
        elif what == "item":
            self.data = Data()[0]
        elif what == "const":
            self.data = Const([1, 2])
        elif what == "file":
            self.data = InputFile("data.csv")
        else:
            self.data = ["plain", "values"]

    def run_task(self) -> int:
        return sum(list(self.data))
"""


@pytest.mark.parametrize("what", ["task", "item", "const", "file"])
def test_a_requirement_in_an_undeclared_attribute_is_an_error_at_build_time(
    modules: TaskModules, what: str
) -> None:
    from pytest_taskproc.errors import TaskDefinitionError

    mod = modules.load("undeclared", UNDECLARED)
    with pytest.raises(TaskDefinitionError) as caught:
        mod.Total(what)
    message = str(caught.value)
    assert message.startswith("Total: ")
    assert "'data'" in message and "data: Requires[...]" in message
    with pytest.raises(TaskDefinitionError):  # nothing of the failed construction stays
        mod.Total(what)


def test_plain_values_in_attributes_stay_allowed(modules: TaskModules) -> None:
    mod = modules.load("undeclared", UNDECLARED)
    assert mod.Total("plain").data == ["plain", "values"]


def test_a_task_is_never_iterable(modules: TaskModules) -> None:
    mod = modules.load("undeclared", UNDECLARED)
    with pytest.raises(TypeError, match="cannot be iterated"):
        list(mod.Data())
    with pytest.raises(TypeError, match="cannot be iterated"):
        list(mod.Data()[0])
