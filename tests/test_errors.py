"""Bad input and the errors it gives: each names the task and the culprit (SPEC section 4)."""

from __future__ import annotations

import inspect
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import TaskModules

from pytest_taskproc import (
    RequirementTypeError,
    ResultMissingError,
    ResultNotPicklableError,
    TaskArgumentError,
    TaskCycleError,
    TaskprocError,
    UnsetRequirementError,
    errors,
)

TASKS = """
class T(TaskBase):
    def build_task(self, x: object) -> None:
        self.x = x

    def run_task(self) -> object:
        log("run", "T", repr(self.x))
        return self.x


class Keyword(TaskBase):
    def build_task(self, first: int = 0, *, option: object = None) -> None:
        pass

    def run_task(self) -> None:
        pass
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    return modules.load("bad", TASKS)


# -- arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ({1, 2}, "{1, 2}"),
        (object(), "<object object at"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (b"bytes", "b'bytes'"),
        (Path("/p"), "PosixPath('/p')"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, float) else repr(v),
)
def test_unsupported_argument_is_a_type_error_naming_class_argument_and_value(
    tasks: ModuleType, value: Any, shown: str
) -> None:
    with pytest.raises(TypeError) as info:
        tasks.T(value)
    assert isinstance(info.value, TaskArgumentError)
    message = str(info.value)
    assert message.startswith("T: argument 'x' has unsupported value ")
    assert shown in message


def test_unsupported_value_deep_inside_names_its_place(tasks: ModuleType) -> None:
    pattern = r"^Keyword: argument \"option\['k'\]\[1\]\" .*\{3\}"
    with pytest.raises(TaskArgumentError, match=pattern):
        tasks.Keyword(option={"k": [1, {3}]})


def test_unsupported_dict_key_is_named(tasks: ModuleType) -> None:
    pattern = r"^T: argument 'x key \(1, 2\)'.*dict keys must be"
    with pytest.raises(TaskArgumentError, match=pattern):
        tasks.T({(1, 2): "pair"})


def test_task_class_instead_of_a_task_is_rejected_naming_the_place(tasks: ModuleType) -> None:
    """A forgotten call: the class has the task methods too, but is no task."""
    pattern = r"^T: argument 'x\[0\]' has unsupported value <class"
    with pytest.raises(TaskArgumentError, match=pattern):
        tasks.T([tasks.Keyword])


def test_rejected_construction_leaves_no_task_behind(tasks: ModuleType) -> None:
    with pytest.raises(TaskArgumentError):
        tasks.T({1.5})
    assert tasks.T._tp_config.registry == {}


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ((1, 2), [1, 2]),
        ({0: "a"}, {"0": "a"}),
        ({True: "a"}, {1: "a"}),
        ({None: "a"}, {"null": "a"}),
        (1, True),
        (1, 1.0),
        (0, False),
        (0, None),
    ],
    ids=repr,
)
def test_accepted_values_that_json_would_merge_are_different_tasks(
    tasks: ModuleType, left: Any, right: Any
) -> None:
    assert tasks.T(left) is not tasks.T(right)
    assert tasks.T(left).task_id != tasks.T(right).task_id
    with ThreadPoolExecutor(1) as pool:
        left_result = tasks.T(left).run_graph(executor=pool)
        right_result = tasks.T(right).run_graph(executor=pool)
    assert type(left_result) is type(left)
    assert type(right_result) is type(right)
    assert left_result == left
    assert right_result == right


def test_accepted_values_round_trip_through_the_cache_unchanged(tasks: ModuleType) -> None:
    value = {"t": (1, (2.5, None)), 3: [True, {None: "n"}], "s": "text"}
    with ThreadPoolExecutor(1) as pool:
        assert tasks.T(value).run_graph(executor=pool) == value
    assert tasks.T(value) is tasks.T({"t": (1, (2.5, None)), 3: [True, {None: "n"}], "s": "text"})
    # Key order is part of the identity (build_task sees the dict as given).
    assert tasks.T(value) is not tasks.T(
        {"s": "text", 3: [True, {None: "n"}], "t": (1, (2.5, None))}
    )


# -- requirement slots ----------------------------------------------------------------------


def test_unset_slot_names_class_and_slot(modules: TaskModules) -> None:
    mod = modules.load(
        "unset",
        """
        class Forgetful(TaskBase):
            given: Requires[int]
            forgotten: Requires[int]

            def build_task(self, n: int) -> None:
                self.given = Const(n)

            def run_task(self) -> None:
                pass
        """,
    )
    with pytest.raises(UnsetRequirementError) as info:
        mod.Forgetful(4)
    message = str(info.value)
    assert message.startswith("Forgetful: requirement slot 'forgotten' was not set")
    assert "Forgetful(4)" in message
    assert isinstance(info.value, AttributeError)


@pytest.mark.parametrize(
    ("assignment", "culprit"),
    [
        ("5", "int 5"),
        ("[Const(1), 'text']", "str 'text'"),
        ("{'k': 2.5}", "float 2.5"),
        ("Plain", "type <class 'badslot.Plain'>"),  # a forgotten call
    ],
)
def test_slot_holding_something_else_names_class_slot_and_value(
    modules: TaskModules, assignment: str, culprit: str
) -> None:
    mod = modules.load(
        "badslot",
        f"""
        class Plain(TaskBase):
            pass

        class Holder(TaskBase):
            up: RequiresList[int]

            def build_task(self) -> None:
                self.up = {assignment}

            def run_task(self) -> None:
                pass
        """,
    )
    with pytest.raises(RequirementTypeError) as info:
        mod.Holder()
    message = str(info.value)
    assert message.startswith("Holder: requirement slot 'up' of Holder() holds ")
    assert culprit in message
    assert isinstance(info.value, TypeError)


# -- cycles -----------------------------------------------------------------------------------

CYCLES = """
class Ping(TaskBase):
    other: Requires[int]

    def build_task(self, n: int) -> None:
        self.other = Pong(n)

    def run_task(self) -> None:
        pass


class Pong(TaskBase):
    other: Requires[int]

    def build_task(self, n: int) -> None:
        self.other = Ping(n)

    def run_task(self) -> None:
        pass


class Ring(TaskBase):
    nxt: Requires[int]

    def build_task(self, i: int) -> None:
        self.nxt = Ring((i + 1) % 3)

    def run_task(self) -> None:
        pass


class Selfish(TaskBase):
    me: Requires[int]

    def build_task(self) -> None:
        self.me = Selfish()

    def run_task(self) -> None:
        pass


class Fine(TaskBase):
    def run_task(self) -> int:
        return 7
"""


@pytest.fixture
def cycles(modules: TaskModules) -> ModuleType:
    return modules.load("cycles", CYCLES)


def test_two_task_cycle_lists_the_tasks(cycles: ModuleType) -> None:
    with pytest.raises(TaskCycleError) as info:
        cycles.Ping(1)
    assert type(info.value) is TaskCycleError
    message = str(info.value)
    assert "cycle" in message
    assert "Ping(1) -> Pong(1) -> Ping(1)" in message


def test_longer_cycle_lists_every_task_in_order(cycles: ModuleType) -> None:
    with pytest.raises(TaskCycleError, match=r"Ring\(0\) -> Ring\(1\) -> Ring\(2\) -> Ring\(0\)"):
        cycles.Ring(0)


def test_task_requiring_itself_is_a_cycle(cycles: ModuleType) -> None:
    with pytest.raises(TaskCycleError, match=r"Selfish\(\) -> Selfish\(\)"):
        cycles.Selfish()


def test_a_cycle_leaves_construction_usable(cycles: ModuleType) -> None:
    with pytest.raises(TaskCycleError):
        cycles.Pong(2)
    with pytest.raises(TaskCycleError):
        cycles.Pong(2)
    assert cycles.Ping._tp_config.registry == {}
    assert cycles.Pong._tp_config.registry == {}
    assert cycles.Fine().run_graph() == 7


# -- results that cannot be stored ------------------------------------------------------------

UNPICKLABLE = """
import threading


class Locked(TaskBase):
    def run_task(self) -> object:
        log("run", "Locked")
        return {"lock": threading.Lock()}


class Good(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("run", "Good", self.i)
        return self.i


class Both(TaskBase):
    parts: RequiresList[object]

    def build_task(self) -> None:
        self.parts = [Good(1), Locked(), Good(2)]

    def run_task(self) -> None:
        log("run", "Both")
"""


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_unpicklable_result_names_the_task_and_caches_nothing(
    modules: TaskModules, cache_root: Path, pool: str
) -> None:
    mod = modules.load("unpicklable", UNPICKLABLE)
    with pytest.raises(ResultNotPicklableError) as info:
        if pool == "thread":
            with ThreadPoolExecutor(2) as executor:
                mod.Both().run_graph(executor=executor)
        else:
            mod.Both().run_graph(max_workers=2)
    message = str(info.value)
    assert message.startswith("Locked(): run_task returned a dict that cloudpickle cannot")
    assert "unpicklable.Locked" in message
    assert isinstance(info.value, TypeError)

    with pytest.raises(ResultMissingError):
        mod.Locked().get_task_result()
    folder = cache_root / "taskproc" / "unpicklable.Locked" / "results" / "0"
    assert not any(p.name.startswith("result") for p in folder.iterdir())
    with pytest.raises(ResultMissingError):
        mod.Both().get_task_result()
    assert mod.Good(1).get_task_result() == 1
    assert mod.Good(2).get_task_result() == 2
    assert "run Both" not in modules.runs()


# -- the exception classes themselves -----------------------------------------------------------

ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, TaskprocError) and cls.__module__ == errors.__name__
]


def test_every_error_is_listed() -> None:
    assert len(ERROR_CLASSES) >= 10
    assert TaskCycleError in ERROR_CLASSES


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_errors_survive_a_pickle_round_trip(cls: type[TaskprocError]) -> None:
    error = cls("Task(1): what went wrong")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error) == "Task(1): what went wrong"
    assert copy.args == error.args


def test_corrupt_result_error_keeps_its_details_through_pickle() -> None:
    error = errors.CorruptResultError("damaged", "mod.Task", '{"n":1}')
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.task_name, copy.task_key) == ("damaged", "mod.Task", '{"n":1}')


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_errors_refine_a_builtin(cls: type[TaskprocError]) -> None:
    builtin = [b for b in cls.__mro__ if b.__module__ == "builtins" and b is not object]
    assert builtin[0] is not Exception or cls is TaskprocError
