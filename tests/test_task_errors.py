"""Short, specific errors from the library: what failed, where, and what to do about it.

- a failing ``run_task`` in a pool process shows its own file and line (the
  remote traceback is chained to the error, as taskproc 0.11.2 does);
- ``task['key']`` naming an item the upstream result lacks names the slot,
  the upstream task and the keys it has;
- a requirement slot read inside ``build_task`` is one error, cold or warm;
- a class with ``build_task`` and no ``run_task`` runs and caches None with
  a warning at its definition (a base class, ``abc.ABC`` or neither method,
  cannot run); so does a ``run_task`` without any ``return`` statement.
"""

from __future__ import annotations

import abc
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules

from pytest_taskproc import TaskBase
from pytest_taskproc.errors import (
    MissingItemError,
    ResultNotPicklableError,
    SlotReadInBuildError,
    TaskDefinitionError,
    TaskDefinitionWarning,
    TaskprocError,
)

FAILING = """
class Boom(Exception):
    pass


class Fails(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        if self.n > 1:
            raise Boom(f"n is {self.n}")  # the line to find
        return self.n


class Exits(TaskBase):
    def run_task(self) -> int:
        raise SystemExit(3)
"""


def line_of(module: ModuleType, text: str) -> int:
    lines = Path(str(module.__file__)).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_default_process_pool_shows_the_failing_run_task_line(modules: TaskModules) -> None:
    mod = modules.load("failing", FAILING)
    with pytest.raises(mod.Boom, match="n is 2") as info:
        mod.Fails(2).run_graph()  # the default executor: a process pool
    shown = "".join(traceback.format_exception(info.value))
    where = f'File "{mod.__file__}", line {line_of(mod, "# the line to find")}, in run_task'
    assert where in shown
    assert type(info.value.__cause__).__name__ == "RemoteTraceback"


def test_system_exit_in_a_pool_task_fails_that_task_with_its_traceback(
    modules: TaskModules,
) -> None:
    mod = modules.load("exiting", FAILING)
    with pytest.raises(SystemExit) as info:
        mod.Exits().run_graph(max_workers=1)
    # Its status survives the pool, also once distributed's exception reducers
    # (registered by any import of Dask in the process) would drop it.
    assert info.value.code == 3 and info.value.args == (3,)
    assert "in run_task" in str(info.value.__cause__)
    with pytest.raises(FileNotFoundError):
        mod.Exits().get_task_result()


# -- items of upstream results ---------------------------------------------------------------

ITEMS = """
class Data(TaskBase):
    def run_task(self) -> dict[str, object]:
        return {"train": [1, 2], "test": [3], "meta": {"n": 3}}


class Fit(TaskBase):
    data: Requires[list[int]]

    def build_task(self, key: str) -> None:
        self.data = Data()[key]

    def run_task(self) -> int:
        return sum(self.data)


class Deep(TaskBase):
    xs: RequiresList[int]

    def build_task(self) -> None:
        self.xs = [Data()["meta"]["n"], Data()["train"][5]]

    def run_task(self) -> int:
        return sum(self.xs)
"""


def test_missing_item_key_names_slot_upstream_task_and_its_keys(modules: TaskModules) -> None:
    mod = modules.load("items", ITEMS)
    with ThreadPoolExecutor(1) as pool, pytest.raises(MissingItemError) as info:
        mod.Fit("tset").run_graph(executor=pool)
    assert str(info.value) == (
        "Fit('tset'): requirement slot 'data' reads Data()['tset'], but the dict Data() has "
        "no key 'tset'; its keys: 'train', 'test', 'meta'"
    )
    assert isinstance(info.value, (TaskprocError, LookupError))
    assert mod.Fit("train").run_graph(executor=ThreadPoolExecutor(1)) == 3


def test_missing_nested_index_names_the_level_that_lacks_it(modules: TaskModules) -> None:
    mod = modules.load("deep", ITEMS)
    with pytest.raises(MissingItemError) as info:
        mod.Deep().run_graph()  # from a process pool: the message survives pickling
    assert str(info.value) == (
        "Deep(): requirement slot 'xs' reads Data()['train'][5], but the list Data()['train'] "
        "has 2 items, so no index 5"
    )


# -- slots inside build_task ------------------------------------------------------------------

READS_SLOT = """
class Up(TaskBase):
    def run_task(self) -> int:
        return 1


class Peek(TaskBase):
    up: Requires[int]

    def build_task(self) -> None:
        self.up = Up()
        self.doubled = self.up * 2

    def run_task(self) -> int:
        return self.up
"""


def test_reading_a_slot_inside_build_task_is_the_same_error_cold_or_warm(
    modules: TaskModules,
) -> None:
    mod = modules.load("peek", READS_SLOT)
    with pytest.raises(SlotReadInBuildError) as cold:
        mod.Peek()
    mod.Up().run_graph(max_workers=1)  # now the upstream result is cached
    with pytest.raises(SlotReadInBuildError) as warm:
        mod.Peek()
    assert str(cold.value) == str(warm.value)
    assert str(cold.value).startswith(
        "Peek: requirement slot 'up' was read inside build_task of Peek(); a slot gives the "
        "upstream result only inside run_task."
    )


def test_reading_a_slot_after_the_run_gives_the_upstream_result(modules: TaskModules) -> None:
    mod = modules.load("peek_after", READS_SLOT.replace("        self.doubled = self.up * 2\n", ""))
    assert mod.Peek().run_graph(max_workers=1) == 1
    assert mod.Peek().up == 1


# -- unpicklable results ----------------------------------------------------------------------


def test_unpicklable_result_names_task_and_type(modules: TaskModules) -> None:
    mod = modules.load(
        "locky",
        """
        import threading

        class Locky(TaskBase):
            def run_task(self) -> object:
                return threading.Lock()
        """,
    )
    with ThreadPoolExecutor(1) as pool, pytest.raises(ResultNotPicklableError) as info:
        mod.Locky().run_graph(executor=pool)
    message = str(info.value)
    assert message.startswith("Locky(): run_task returned a lock that cloudpickle cannot")
    assert "nothing was cached" in message


# -- classes without run_task ------------------------------------------------------------------


def test_a_misspelt_run_task_is_a_warning_when_the_class_is_defined() -> None:
    with pytest.warns(TaskDefinitionWarning) as caught:

        class Train(TaskBase):
            def build_task(self, seed: int) -> None:
                self.seed = seed

            def run_tsak(self) -> int:
                return self.seed

    (warning,) = caught
    assert str(warning.message).endswith(
        ".<locals>.Train defines build_task but no run_task ('run_tsak' is defined: a "
        "misspelling?), so it runs and caches None, as in taskproc; define run_task(self) "
        "returning its result (a base class meant only to be subclassed should derive from abc.ABC)"
    )
    assert warning.filename == __file__  # at the class statement, not in the library
    # As in taskproc 0.11.2, it runs and caches None.
    with ThreadPoolExecutor(1) as pool:
        assert Train(1).run_graph(executor=pool) is None
    assert Train(1).task_record is not None


def test_base_classes_may_leave_run_task_out_but_cannot_run() -> None:
    class Shared(TaskBase):
        """Neither build_task nor run_task: a base holding helpers (or slots)."""

        def helper(self) -> int:
            return 2

    class Abstract(TaskBase, abc.ABC):
        def build_task(self, n: int) -> None:
            self.n = n

    class Concrete(Shared):
        def run_task(self) -> int:
            return self.helper()

    class FromAbstract(Abstract):
        def run_task(self) -> int:
            return self.n

    with ThreadPoolExecutor(1) as pool:
        assert Concrete().run_graph(executor=pool) == 2
        assert FromAbstract(4).run_graph(executor=pool) == 4
        with pytest.raises(TaskDefinitionError, match="Shared defines no run_task: it is a base"):
            Shared().run_graph(executor=pool)
    with pytest.warns(TaskDefinitionWarning, match="Child defines build_task but no run_task"):

        class Child(Shared):
            def build_task(self, n: int) -> None:
                pass


NO_RETURN = """
import abc


class Forgot(TaskBase):
    def run_task(self):
        total = 1 + 1


class Nested(TaskBase):
    def run_task(self):
        def inner():
            return 3

        inner()
"""

#: run_task methods that do not warn: None said, no value to lose, or no way to end normally
QUIET = """
import abc


class Explicit(TaskBase):
    def run_task(self):
        print("side effect")
        return None


class Bare(TaskBase):
    def run_task(self):
        if os.environ.get("NEVER_SET_IN_TESTS"):
            return
        print("side effect")


class Annotated(TaskBase):
    def run_task(self) -> None:
        print("side effect")


class Generator(TaskBase):
    def run_task(self):
        yield 1


class RaiseOnly(TaskBase):
    def run_task(self):
        message = "subclasses compute"
        raise NotImplementedError(message)


class Stub(TaskBase):
    def run_task(self):
        \"\"\"Filled in later.\"\"\"
        ...


class Exits(TaskBase):
    def run_task(self) -> int:
        print("cannot go on")
        sys.exit(3)


class Abstract(TaskBase, abc.ABC):
    @abc.abstractmethod
    def run_task(self):
        total = 1


class Value(TaskBase):
    def run_task(self):
        return 2
"""


def test_a_run_task_without_return_is_a_warning_naming_the_class(
    modules: TaskModules,
) -> None:
    with pytest.warns(TaskDefinitionWarning) as caught:
        module = modules.load("noreturn_mod", NO_RETURN)
    assert [str(w.message) for w in caught] == [
        f"{name}.run_task has no return statement, so {name} caches None as its result; "
        "return the value it computes ('-> None' or an explicit 'return None' says None is "
        "meant)"
        for name in ("Forgot", "Nested")
    ]
    assert {w.filename for w in caught} == {str(modules.directory / "noreturn_mod.py")}
    with ThreadPoolExecutor(1) as pool:
        assert module.Forgot().run_graph(executor=pool) is None


def test_no_warning_for_return_none_generators_raise_only_stubs_and_abstract_methods(
    modules: TaskModules,
) -> None:
    # filterwarnings = error: any warning fails the import.
    module = modules.load("quiet_mod", QUIET)
    with ThreadPoolExecutor(1) as pool:
        assert module.Value().run_graph(executor=pool) == 2
