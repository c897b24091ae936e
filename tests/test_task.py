"""Task classes: construction, requirement slots, properties and cache methods."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules

from pytest_taskproc import (
    Const,
    ResultMissingError,
    TaskArgumentError,
    TaskBase,
    TaskType,
    infer_task_type,
)
from pytest_taskproc.requires import MappedTask
from pytest_taskproc.spec import spec_of

TASKS = """
class Leaf(TaskBase):
    def build_task(self, n: int, scale: int = 1) -> None:
        log("build", os.getpid(), "Leaf", n, scale)
        self.n = n
        self.scale = scale

    def run_task(self) -> int:
        log("run", "Leaf", self.n)
        print("leaf says", self.n)
        print("leaf warns", self.n, file=sys.stderr)
        return self.n * self.scale


@infer_task_type
class Sum(TaskBase):
    parts: RequiresList[int]

    def build_task(self, ns: list[int]) -> None:
        self.parts = [Leaf(n) for n in ns]

    def run_task(self) -> int:
        log("run", "Sum")
        return sum(self.parts)


class Pair(TaskBase):
    left: Requires[int]
    right = Req()

    def build_task(self, a: int, b: int) -> None:
        self.left = Leaf(a)
        self.right = Const(b) if b < 0 else Leaf(b)

    def run_task(self) -> tuple[int, int]:
        log("run", "Pair")
        return (self.left, self.right)


class NoArgs(TaskBase):
    def run_task(self) -> str:
        log("run", "NoArgs")
        return "plain"
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    return modules.load("tasks", TASKS)


def builds_here(modules: TaskModules) -> list[str]:
    pid = str(os.getpid())
    return [line for line in modules.runs("build") if line.split()[1] == pid]


# -- construction and identity ------------------------------------------------


def test_equal_arguments_give_one_instance_built_once(
    tasks: ModuleType, modules: TaskModules
) -> None:
    first = tasks.Leaf(1)
    assert tasks.Leaf(1) is first
    assert tasks.Leaf(n=1) is first
    assert tasks.Leaf(1, 1) is first
    assert tasks.Leaf(1, scale=1) is first
    assert tasks.Leaf(1, 2) is not first
    assert builds_here(modules) == [
        f"build {os.getpid()} Leaf 1 1",
        f"build {os.getpid()} Leaf 1 2",
    ]


def test_class_without_build_task_takes_no_arguments(tasks: ModuleType) -> None:
    assert tasks.NoArgs() is tasks.NoArgs()
    assert tasks.NoArgs().task_args == {}
    with pytest.raises(TaskArgumentError, match=r"^NoArgs: too many positional arguments"):
        tasks.NoArgs(1)
    assert tasks.NoArgs().run_graph() == "plain"


def test_wrong_arguments_name_the_class(tasks: ModuleType) -> None:
    with pytest.raises(TypeError, match=r"^Leaf: .*unexpected keyword argument 'm'"):
        tasks.Leaf(1, m=1)
    with pytest.raises(TypeError, match=r"^Leaf: missing a required argument: 'n'"):
        tasks.Leaf()


def test_failed_build_task_registers_nothing(modules: TaskModules) -> None:
    mod = modules.load(
        "flaky_build",
        """
        ATTEMPTS = []

        class Flaky(TaskBase):
            def build_task(self) -> None:
                ATTEMPTS.append(1)
                if len(ATTEMPTS) == 1:
                    raise ValueError("first build fails")

            def run_task(self) -> None:
                pass
        """,
    )
    with pytest.raises(ValueError, match="first build fails"):
        mod.Flaky()
    task = mod.Flaky()
    assert mod.Flaky() is task
    assert len(mod.ATTEMPTS) == 2


def test_a_task_pickles_as_class_and_arguments(tasks: ModuleType) -> None:
    task = tasks.Sum(list(range(50)))
    blob = pickle.dumps(task)
    assert pickle.loads(blob) is task
    # the 50 upstream tasks are rebuilt by build_task, not shipped along
    assert len(blob) < 600
    assert b"Leaf" not in blob


def test_repr_shows_class_and_arguments(tasks: ModuleType) -> None:
    assert repr(tasks.Leaf(3)) == "Leaf(3, 1)"
    assert repr(tasks.Sum([1, 2])) == "Sum([1, 2])"
    assert repr(tasks.Sum(list(range(100)))).endswith("...)")


def test_subclass_inherits_build_task_and_slots_but_is_its_own_class(
    modules: TaskModules,
) -> None:
    mod = modules.load(
        "inherit",
        """
        class Base(TaskBase):
            up: Requires[int]

            def build_task(self, n: int) -> None:
                self.up = Const(n)

            def run_task(self) -> int:
                return self.up

        class Child(Base):
            def run_task(self) -> int:
                return self.up * 100
        """,
    )
    assert mod.Child.task_name == "inherit.Child"
    assert mod.Child(2) is not mod.Base(2)
    assert mod.Child(2).run_graph() == 200
    assert mod.Base(2).run_graph() == 2


@pytest.mark.parametrize(
    ("keywords", "error", "pattern"),
    [
        ("compress_level=10", ValueError, r"^Bad: compress_level must be an int from -1 to 9"),
        ("compress_level='9'", ValueError, r"^Bad: compress_level must be an int"),
        ("channel=['<gpu>', 3]", TypeError, r"^Bad: channel must be a str or a list of str"),
        ("channel=3", TypeError, r"^Bad: channel must be a str or a list of str, not 3$"),
        ("job_prefix='srun -c 4'", TypeError, r"^Bad: job_prefix must be a list of strings"),
    ],
)
def test_class_keywords_are_checked_when_the_class_is_defined(
    modules: TaskModules, keywords: str, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        modules.load("badkw", f"class Bad(TaskBase, {keywords}):\n    pass\n")


def test_class_keywords_are_recorded(modules: TaskModules, tmp_path: Path) -> None:
    mod = modules.load(
        "kw",
        f"""
        class Configured(
            TaskBase,
            channel=["<gpu>", "<net>"],
            compress_level=3,
            job_prefix=[{str(tmp_path)!r}, "-x"],
            detach_output=False,
        ):
            pass

        class Plain(TaskBase):
            pass
        """,
    )
    config = mod.Configured._tp_config
    assert config.channels == ("kw.Configured", "<gpu>", "<net>")
    assert config.compress_level == 3
    assert config.job_prefix == (str(tmp_path), "-x")
    assert config.detach_output is False
    plain = mod.Plain._tp_config
    assert (plain.channels, plain.compress_level, plain.job_prefix, plain.detach_output) == (
        ("kw.Plain",),
        None,
        None,
        True,
    )


def test_infer_task_type_returns_the_class_itself(tasks: ModuleType) -> None:
    assert tasks.Sum.__name__ == "Sum"
    assert infer_task_type(tasks.Leaf) is tasks.Leaf

    class NotATask:
        def build_task(self) -> None: ...

        def run_task(self) -> int:
            return 1

    with pytest.raises(TypeError, match="must subclass TaskBase"):
        infer_task_type(NotATask)


def test_task_type_itself_cannot_be_constructed() -> None:
    with pytest.raises(TypeError, match="TaskType is not a task class; subclass TaskBase"):
        TaskType()
    assert issubclass(TaskBase, TaskType)


# -- requirement slots ----------------------------------------------------------


def test_annotated_and_assigned_slots_hold_upstream_results(tasks: ModuleType) -> None:
    assert tasks.Pair(2, 3).run_graph() == (2, 3)
    assert tasks.Pair(2, -5).run_graph() == (2, -5)


def test_slots_list_the_upstream_tasks(tasks: ModuleType) -> None:
    assert set(spec_of(tasks.Pair(2, 3)).upstream) == {tasks.Leaf(2), tasks.Leaf(3)}
    assert spec_of(tasks.Pair(2, -5)).upstream == (tasks.Leaf(2),)
    # the same upstream task in two places is one edge
    assert spec_of(tasks.Sum([1, 1, 2])).upstream == (tasks.Leaf(1), tasks.Leaf(2))


def test_requires_list_keeps_order_and_mixes_tasks_and_consts(modules: TaskModules) -> None:
    mod = modules.load(
        "lists",
        """
        class Num(TaskBase):
            def build_task(self, n: int) -> None:
                self.n = n

            def run_task(self) -> int:
                return self.n

        class Collect(TaskBase):
            items: RequiresList[int]
            named: RequiresDict[str, int]

            def build_task(self) -> None:
                self.items = [Num(3), Const(-1), Num(1), Num(3)]
                self.named = {"x": Num(7), "y": Const(8)}

            def run_task(self) -> tuple[list[int], dict[str, int]]:
                return self.items, self.named
        """,
    )
    items, named = mod.Collect().run_graph()
    assert items == [3, -1, 1, 3]
    assert named == {"x": 7, "y": 8}


def test_empty_list_and_dict_slots_are_allowed(modules: TaskModules) -> None:
    mod = modules.load(
        "empties",
        """
        class Empty(TaskBase):
            items: RequiresList[int]
            named: RequiresDict[str, int]

            def build_task(self) -> None:
                self.items = []
                self.named = {}

            def run_task(self) -> tuple[list[int], dict[str, int]]:
                return self.items, self.named
        """,
    )
    assert spec_of(mod.Empty()).upstream == ()
    assert mod.Empty().run_graph() == ([], {})


ITEMS = """
class Multi(TaskBase):
    def run_task(self) -> dict[str, object]:
        log("run", "Multi")
        return {"a": {"b": [10, 11, 12]}, "c": 5}

class Pick(TaskBase):
    one: Requires[int]
    several: RequiresList[int]
    by_name: RequiresDict[str, object]

    def build_task(self) -> None:
        self.one = Multi()["a"]["b"][2]
        self.several = [Multi()["a"]["b"][0], Multi()["c"]]
        self.by_name = {"whole": Multi()["a"]}

    def run_task(self) -> tuple[int, list[int], dict[str, object]]:
        return self.one, self.several, self.by_name

class Keyed(TaskBase):
    def build_task(self, ref: object) -> None:
        pass

    def run_task(self) -> None:
        pass
"""


def test_item_access_selects_nested_parts_of_a_result(
    modules: TaskModules,
) -> None:
    mod = modules.load("items", ITEMS)
    one, several, by_name = mod.Pick().run_graph()
    assert one == 12
    assert several == [10, 5]
    assert by_name == {"whole": {"b": [10, 11, 12]}}
    assert modules.runs() == ["run Multi"]


def test_item_references_know_their_origin_and_path(modules: TaskModules) -> None:
    mod = modules.load("items", ITEMS)
    ref = mod.Multi()["a"]["b"][2]
    assert isinstance(ref, MappedTask)
    assert ref.get_origin() is mod.Multi()
    assert ref.get_args() == ["a", "b", 2]
    assert repr(ref) == "Multi()['a']['b'][2]"
    assert ref == mod.Multi()["a"]["b"][2]
    assert ref != mod.Multi()["a"]["b"][1]
    assert spec_of(mod.Pick()).upstream == (mod.Multi(),)
    mod.Pick().run_graph()
    assert ref.get_task_result() == 12


def test_item_references_as_arguments_are_distinct_tasks(modules: TaskModules) -> None:
    mod = modules.load("items", ITEMS)
    assert mod.Keyed(mod.Multi()["a"]) is mod.Keyed(mod.Multi()["a"])
    assert mod.Keyed(mod.Multi()["a"]) is not mod.Keyed(mod.Multi()["c"])
    assert mod.Keyed(mod.Multi()["a"]) is not mod.Keyed(mod.Multi())
    assert mod.Keyed(mod.Multi()["a"]).task_args == {"ref": mod.Multi()["a"]}
    assert mod.Keyed(mod.Multi()["a"]).task_args["ref"].get_origin() is mod.Multi()


def test_tasks_as_arguments_serialise_as_references(tasks: ModuleType) -> None:
    class WithTask(TaskBase):
        def build_task(self, upstream: TaskBase) -> None:
            self.upstream_arg = upstream

        def run_task(self) -> None:
            pass

    first = WithTask([tasks.Leaf(1)])
    assert WithTask([tasks.Leaf(1)]) is first
    assert WithTask([tasks.Leaf(1, 2)]) is not first
    assert WithTask([tasks.Sum([1])]) is not first
    assert first.task_args == {"upstream": [tasks.Leaf(1)]}
    assert first.task_args["upstream"][0] is tasks.Leaf(1)
    # an argument is not a requirement: only slots make edges
    assert spec_of(first).upstream == ()


def test_const_is_a_frozen_value() -> None:
    const = Const([1, 2])
    assert const.get_task_result() == [1, 2]
    assert Const(1) == Const(1)
    with pytest.raises(AttributeError):
        const.value = [3]  # type: ignore[misc]


def test_reading_a_slot_outside_run_task_reads_the_cache(tasks: ModuleType) -> None:
    with pytest.raises(ResultMissingError):
        _ = tasks.Sum([1, 2]).parts
    tasks.Sum([1, 2]).run_graph()
    assert tasks.Sum([1, 2]).parts == [1, 2]


# -- properties -------------------------------------------------------------------


def test_task_name_is_module_and_qualname(tasks: ModuleType) -> None:
    assert tasks.Leaf.task_name == "tasks.Leaf"
    assert tasks.Leaf(1).task_name == "tasks.Leaf"
    assert tasks.Sum.task_name == "tasks.Sum"


def test_task_ids_are_small_distinct_and_stable(tasks: ModuleType) -> None:
    ids = [tasks.Leaf(n).task_id for n in (5, 6, 7)]
    assert sorted(ids) == [0, 1, 2]
    assert tasks.Sum([5, 6, 7]).task_id == 0  # ids count per class
    tasks.Sum([5, 6, 7, 8]).run_graph()
    assert [tasks.Leaf(n).task_id for n in (5, 6, 7)] == ids
    assert tasks.Leaf(8).task_id == 3


def test_task_args_are_the_bound_arguments_as_given(tasks: ModuleType) -> None:
    assert tasks.Leaf(4).task_args == {"n": 4, "scale": 1}
    assert tasks.Leaf(n=4, scale=2).task_args == {"n": 4, "scale": 2}
    assert tasks.Sum([3, 4]).task_args == {"ns": [3, 4]}
    # tuples stay tuples and integer keys stay integers: no internal tags
    assert tasks.Sum((3, 4)).task_args == {"ns": (3, 4)}
    assert type(tasks.Sum((3, 4)).task_args["ns"]) is tuple
    assert tasks.Leaf({0: "a", 1: (2,)}).task_args == {"n": {0: "a", 1: (2,)}, "scale": 1}


def test_task_directory_is_created_emptied_per_run_and_kept(
    modules: TaskModules, cache_root: Path
) -> None:
    mod = modules.load(
        "dirs",
        """
        class Writer(TaskBase):
            def run_task(self) -> list[str]:
                before = sorted(os.listdir(self.task_directory))
                (self.task_directory / "made.txt").write_text("by the task")
                return before
        """,
    )
    task = mod.Writer()
    directory = task.task_directory
    assert directory == cache_root / "taskproc" / "dirs.Writer" / "results" / "0" / "data"
    assert directory.is_dir()
    (directory / "stale.txt").write_text("left over")
    assert task.run_graph() == []
    assert sorted(os.listdir(directory)) == ["made.txt"]
    task.run_graph()  # fresh: nothing runs, nothing is emptied
    assert (directory / "made.txt").read_text() == "by the task"
    task.clear_task()
    assert not directory.exists()


def test_task_stdout_and_stderr_hold_the_last_run_prints(
    tasks: ModuleType, cache_root: Path
) -> None:
    leaf = tasks.Leaf(9)
    folder = cache_root / "taskproc" / "tasks.Leaf" / "results" / str(leaf.task_id)
    assert leaf.task_stdout == folder / "stdout.txt"
    assert leaf.task_stderr == folder / "stderr.txt"
    assert leaf.task_stdout.read_text() == ""  # never ran: empty, but there
    leaf.run_graph()
    assert leaf.task_stdout.read_text() == "leaf says 9\n"
    assert leaf.task_stderr.read_text() == "leaf warns 9\n"


def test_silent_task_has_empty_output_files(tasks: ModuleType) -> None:
    tasks.NoArgs().run_graph()
    assert tasks.NoArgs().task_stdout.read_text() == ""
    assert tasks.NoArgs().task_stderr.read_text() == ""


# -- cache methods ------------------------------------------------------------------


def test_get_task_result_reads_without_running(tasks: ModuleType, modules: TaskModules) -> None:
    with pytest.raises(ResultMissingError, match=r"no cached result for tasks\.Leaf") as info:
        tasks.Leaf(1).get_task_result()
    assert isinstance(info.value, FileNotFoundError)
    assert modules.runs() == []
    tasks.Leaf(1).run_graph()
    modules.clear_log()
    assert tasks.Leaf(1).get_task_result() == 1
    assert modules.runs() == []


def test_clear_task_forgets_one_result(tasks: ModuleType, modules: TaskModules) -> None:
    assert tasks.Sum([1, 2]).run_graph() == 3
    tasks.Leaf(1).clear_task()
    with pytest.raises(ResultMissingError):
        tasks.Leaf(1).get_task_result()
    assert tasks.Leaf(2).get_task_result() == 2
    assert tasks.Sum([1, 2]).get_task_result() == 3
    modules.clear_log()
    assert tasks.Sum([1, 2]).run_graph() == 3
    assert sorted(modules.runs()) == ["run Leaf 1", "run Sum"]


def test_clear_task_of_a_task_that_never_ran_is_harmless(tasks: ModuleType) -> None:
    tasks.Leaf(42).clear_task()
    assert tasks.Leaf(42).run_graph() == 42


def test_clear_all_tasks_forgets_one_class_only(tasks: ModuleType, modules: TaskModules) -> None:
    tasks.Sum([1, 2]).run_graph()
    tasks.Pair(3, -1).run_graph()
    tasks.Leaf.clear_all_tasks()
    for n in (1, 2, 3):
        with pytest.raises(ResultMissingError):
            tasks.Leaf(n).get_task_result()
    assert tasks.Sum([1, 2]).get_task_result() == 3
    modules.clear_log()
    result, stats = tasks.Sum([1, 2]).run_graph_with_stats()
    assert result == 3
    assert stats["stats"] == {"tasks.Leaf": 2, "tasks.Sum": 1}
    assert sorted(modules.runs()) == ["run Leaf 1", "run Leaf 2", "run Sum"]


def test_clear_all_tasks_before_any_run_is_harmless(tasks: ModuleType) -> None:
    tasks.Leaf.clear_all_tasks()
    assert tasks.Leaf(1).run_graph() == 1


def test_slots_read_upstream_values_without_writing_into_the_task(
    modules: TaskModules,
) -> None:
    """The values slots give inside run_task live outside the task's own ``__dict__``."""
    mod = modules.load(
        "selfcheck",
        """
class Up(TaskBase):
    def run_task(self) -> int:
        return 7


class Down(TaskBase):
    up: Requires[int]

    def build_task(self) -> None:
        self.up = Up()

    def run_task(self) -> tuple[int, list[str]]:
        return self.up, sorted(vars(self))
""",
    )
    task = mod.Down()
    before = sorted(vars(task))
    value, seen = task.run_graph()
    assert value == 7
    assert seen == before
    assert sorted(vars(task)) == before
