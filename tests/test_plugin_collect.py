"""End-to-end: which task files and tasks ``pytest --taskproc`` collects, named and ordered how.

Every run is a pytest subprocess in a ``pytester`` directory with its own
cache; tasks append a line to ``run.log`` whenever ``run_task`` is called.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from taskproject import HEADER, Project

CHOOSE = """
@infer_task_type
class Choose(TaskBase):
    prev1: Requires[int]
    prev2: Requires[int]

    def build_task(self, n: int, k: int) -> None:
        if 0 < k < n:
            self.prev1 = Choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)
        elif k == 0 or k == n:
            self.prev1 = Const(0)
            self.prev2 = Const(1)
        else:
            raise ValueError((n, k))

    def run_task(self) -> int:
        log("Choose", self.task_args["n"], self.task_args["k"])
        return self.prev1 + self.prev2
"""

ROOTS = """
class Root(TaskBase):
    top: Requires[int]

    def build_task(self) -> None:
        self.top = Choose(4, 2)

    def run_task(self) -> int:
        log("Root")
        return self.top


@pytest.mark.parametrize("n", [3, 5])
class Half(TaskBase):
    mid: Requires[int]

    def build_task(self, n: int) -> None:
        self.mid = Choose(n, n // 2)

    def run_task(self) -> int:
        log("Half", self.task_args["n"])
        return self.mid
"""

#: The tasks reached from Root, Half[3] and Half[5].
CHOOSE_ITEMS = {
    f"Choose[{n}-{k}]"
    for n, k in [
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
        (2, 2),
        (3, 0),
        (3, 1),
        (3, 2),
        (4, 1),
        (4, 2),
        (5, 2),
    ]
}
ALL_ITEMS = CHOOSE_ITEMS | {"Root", "Half[3]", "Half[5]"}


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


PLAIN_TEST = """
def test_plain():
    assert 1 + 1 == 2
"""


# -- off means off ----------------------------------------------------------------
def test_without_the_flag_task_files_are_not_collected(project: Project) -> None:
    project.task_file("task_binom.py", CHOOSE, ROOTS)
    project.pytester.makepyfile(test_plain=PLAIN_TEST)
    result = project.run("-v", taskproc=False)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["test_plain.py::test_plain PASSED*"])
    result.stdout.no_fnmatch_line("*task_binom*")
    result.stdout.no_fnmatch_line("taskproc:*")
    assert project.runs() == []
    assert not project.cache.exists()


def test_with_the_flag_plain_tests_run_beside_tasks(project: Project) -> None:
    project.task_file("task_binom.py", CHOOSE, ROOTS)
    project.pytester.makepyfile(test_plain=PLAIN_TEST)
    result = project.run("-v")
    result.assert_outcomes(passed=len(ALL_ITEMS) + 1)
    result.stdout.fnmatch_lines(["test_plain.py::test_plain PASSED*"])
    result.stdout.fnmatch_lines(["task_binom.py::Root PASSED*"])
    assert result.ret == pytest.ExitCode.OK


# -- roots, names, one item per task -----------------------------------------------
def test_roots_and_parametrized_roots_make_one_item_per_task(project: Project) -> None:
    project.task_file("task_binom.py", CHOOSE, ROOTS)
    ids = project.collected()
    assert len(ids) == len(set(ids))
    assert {i.split("::", 1)[1] for i in ids} == ALL_ITEMS
    assert all(i.startswith("task_binom.py::") for i in ids)


def test_items_are_named_by_their_arguments_like_pytest_ids(project: Project) -> None:
    project.task_file(
        "task_named.py",
        CHOOSE,
        """
        pytest.mark.parametrize("n, k", [(6, 3)])(Choose)


        @pytest.mark.parametrize(
            "x, label", [(1, "a"), pytest.param(2, "b", id="second")], ids=["first", "unused"]
        )
        class Labelled(TaskBase):
            def build_task(self, x: int, label: str) -> None:
                pass

            def run_task(self) -> int:
                return 0


        @pytest.mark.parametrize("word", ["hello", "two words", None, 1.5, True])
        class Word(TaskBase):
            def build_task(self, word: object) -> None:
                pass

            def run_task(self) -> int:
                return 0
        """,
    )
    names = [i.split("::", 1)[1] for i in project.collected()]
    assert "Choose[6-3]" in names
    assert sum(n.startswith("Choose[") for n in names) == 15  # (n, k) with k <= 3, n - k <= 3
    assert [n for n in names if n.startswith("Labelled")] == ["Labelled[first]", "Labelled[second]"]
    assert [n for n in names if n.startswith("Word")] == [
        "Word[hello]",
        "Word[two words]",
        "Word[None]",
        "Word[1.5]",
        "Word[True]",
    ]


def test_a_task_reached_from_several_roots_and_files_is_one_item(project: Project) -> None:
    project.task_file("task_lib.py", CHOOSE)  # library tasks only: no roots here
    for name in ("use", "more"):
        project.task_file(
            f"task_{name}.py",
            f"""
            from task_lib import Choose


            class {name.title()}(TaskBase):
                shared: Requires[int]

                def build_task(self) -> None:
                    self.shared = Choose(3, 1)

                def run_task(self) -> int:
                    log("{name.title()}")
                    return self.shared
            """,
        )
    ids = project.collected()
    choose = {"Choose[3-1]", "Choose[2-0]", "Choose[2-1]", "Choose[1-0]", "Choose[1-1]"}
    # Placed under the file defining the class, though its roots are elsewhere.
    assert sorted(ids) == sorted(
        [f"task_lib.py::{c}" for c in choose] + ["task_more.py::More", "task_use.py::Use"]
    )

    result = project.run()
    result.assert_outcomes(passed=7)
    assert sorted(project.runs()) == sorted(
        ["Choose 3 1", "Choose 2 0", "Choose 2 1", "Choose 1 0", "Choose 1 1", "Use", "More"]
    )

    # When the defining file is not collected, the items live under the root's file.
    only = project.collected("task_use.py")
    assert sorted(only) == sorted([f"task_use.py::{c}" for c in choose] + ["task_use.py::Use"])


def test_items_are_ordered_upstream_first(project: Project) -> None:
    project.task_file("task_binom.py", CHOOSE, ROOTS)
    project.pytester.makepyfile(test_plain=PLAIN_TEST)
    # pytest-randomly would shuffle the files; task items keep their order either way
    # (see test_plugin_nodeids), the place of ordinary tests is what is checked here.
    ids = project.collected("-p", "no:randomly")
    names = [i.split("::", 1)[1] for i in ids]
    position = {name: index for index, name in enumerate(names)}
    for name in CHOOSE_ITEMS:
        n, k = map(int, re.findall(r"\d+", name))
        if 0 < k < n:
            assert position[f"Choose[{n - 1}-{k - 1}]"] < position[name]
            assert position[f"Choose[{n - 1}-{k}]"] < position[name]
    assert position["Choose[4-2]"] < position["Root"]
    assert position["Choose[3-1]"] < position["Half[3]"]
    assert position["Choose[5-2]"] < position["Half[5]"]
    # Independent roots keep the order of their definitions.
    assert position["Root"] < position["Half[3]"] < position["Half[5]"]
    # Ordinary tests keep their own place.
    assert ids[-1] == "test_plain.py::test_plain"


def test_a_root_whose_build_task_raises_is_a_collection_error_for_that_root_only(
    project: Project,
) -> None:
    project.task_file(
        "task_mixed.py",
        """
        class Broken(TaskBase):
            def build_task(self) -> None:
                raise ValueError("cannot build Broken")

            def run_task(self) -> int:
                return 0


        @pytest.mark.parametrize("n", [2, -1])
        class Square(TaskBase):
            def build_task(self, n: int) -> None:
                if n < 0:
                    raise ValueError(f"negative n: {n}")
                self.n = n

            def run_task(self) -> int:
                log("Square", self.n)
                return self.n * self.n


        class Fine(TaskBase):
            def run_task(self) -> int:
                log("Fine")
                return 1
        """,
    )
    result = project.run("-ra")
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "ERROR task_mixed.py::Broken - ValueError: cannot build Broken",
            "ERROR task_mixed.py::Square[-1] - ValueError: negative n: -1",
        ]
    )
    assert sorted(project.runs()) == ["Fine", "Square 2"]
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_task_file_may_import_a_helper_module_beside_it(project: Project) -> None:
    (project.path / "helpers.py").write_text(
        HEADER.format(log=str(project.log))
        + textwrap.dedent(
            """
            def offset() -> int:
                return 100


            class Square(TaskBase):
                def build_task(self, x: int) -> None:
                    self.x = x

                def run_task(self) -> int:
                    log("Square", self.x)
                    return self.x * self.x
            """
        ),
        encoding="utf-8",
    )
    project.task_file(
        "task_main.py",
        """
        from helpers import Square, offset


        class Total(TaskBase):
            a: Requires[int]
            b: Requires[int]

            def build_task(self) -> None:
                self.a = Square(2)
                self.b = Square(3)

            def run_task(self) -> int:
                log("Total", self.a + self.b + offset())
                return self.a + self.b
        """,
    )
    assert project.collected() == [
        "task_main.py::Square[2]",
        "task_main.py::Square[3]",
        "task_main.py::Total",
    ]
    project.run().assert_outcomes(passed=3)
    assert project.runs() == ["Square 2", "Square 3", "Total 113"]


def test_collect_only_runs_nothing_and_lists_what_would_be_computed(project: Project) -> None:
    project.task_file("task_binom.py", CHOOSE, ROOTS)
    result = project.run("--collect-only")
    assert project.runs() == []
    result.stdout.fnmatch_lines(
        [
            f"*collected {len(ALL_ITEMS)} items*",
            "*taskproc dry run*",
            f"taskproc: {len(ALL_ITEMS)} of {len(ALL_ITEMS)} tasks would be computed",
            "  task_binom.py::Choose[2-0]: no result yet",
        ]
    )
    result.stdout.no_fnmatch_line("taskproc: * computed, *")

    # After Half[3]'s graph is made, only the rest would be computed, each with its reason.
    project.run("-k", "Half and 3").assert_outcomes(passed=1, deselected=len(ALL_ITEMS) - 1)
    assert len(project.runs()) == 6  # five Choose tasks and Half 3
    project.log.write_text("", encoding="utf-8")
    result = project.run("--collect-only")
    assert project.runs() == []
    result.stdout.fnmatch_lines(
        [
            f"taskproc: {len(ALL_ITEMS) - 6} of {len(ALL_ITEMS)} tasks would be computed",
        ]
    )
    result.stdout.fnmatch_lines_random(
        [
            "  task_binom.py::Choose[4-2]: no result yet",
            "  task_binom.py::Root: no result yet",
            "  task_binom.py::Half[[]5]: no result yet",
        ]
    )
    result.stdout.no_fnmatch_line("  task_binom.py::Half[[]3]:*")
    result.stdout.no_fnmatch_line("  task_binom.py::Choose[[]3-1]:*")


# -- runs that would otherwise end silently empty ---------------------------------------
LONELY = """
class Lonely(TaskBase):
    def build_task(self, alpha: float) -> None:
        self.alpha = alpha

    def run_task(self) -> float:
        log("Lonely")
        return self.alpha


class Alone(Lonely):
    pass
"""


def test_a_python_file_named_on_the_command_line_is_collected_whatever_its_name(
    project: Project,
) -> None:
    experiment = project.task_file("experiment.py", CHOOSE, ROOTS)
    project.pytester.makepyfile(test_plain=PLAIN_TEST)
    ids = project.collected("experiment.py")
    assert {i.split("::", 1)[1] for i in ids} == ALL_ITEMS
    assert all(i.startswith("experiment.py::") for i in ids)
    # Not named: not a task file by its name.
    assert project.collected() == ["test_plain.py::test_plain"]
    # A test file named beside it stays a test module.
    result = project.run(str(experiment), "test_plain.py")
    result.assert_outcomes(passed=len(ALL_ITEMS) + 1)
    assert "Root" in project.runs()


def test_a_run_without_the_flag_that_finds_only_task_files_says_how_to_run_them(
    project: Project,
) -> None:
    project.task_file("task_binom.py", CHOOSE, ROOTS)
    project.task_file("experiment.py", CHOOSE, ROOTS)
    hint = "taskproc: no tests collected, but task files were found ({}); run their tasks with: "
    result = project.run(taskproc=False)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines([hint.format("task_binom.py") + "pytest --taskproc"])
    result = project.run("experiment.py", taskproc=False)
    result.stdout.fnmatch_lines([hint.format("experiment.py") + "pytest --taskproc"])
    assert project.runs() == []
    assert not project.cache.exists()


def test_a_class_that_needs_arguments_and_that_nothing_reaches_is_named_in_one_line(
    project: Project,
) -> None:
    project.task_file("task_binom.py", CHOOSE, ROOTS, LONELY)
    note = (
        "taskproc note: task_binom.py::Lonely, task_binom.py::Alone need arguments, are not "
        "parametrized and no collected task requires them, so they never run (parametrize "
        "them with @pytest.mark.parametrize or require them from a task that runs)"
    )
    result = project.run()
    result.assert_outcomes(passed=len(ALL_ITEMS))
    assert [line for line in result.outlines if "taskproc note" in line] == [note]
    # Choose needs arguments too, but Root and Half require it: not named.
    assert "Lonely" not in project.runs()


def test_collection_errors_show_the_users_frames_not_the_librarys(project: Project) -> None:
    project.task_file(
        "task_roots.py",
        """
        def check(n: int) -> int:
            if n < 0:
                raise ValueError(f"negative n: {n}")
            return n


        class Up(TaskBase):
            def build_task(self, n: int) -> None:
                self.n = check(n)

            def run_task(self) -> int:
                return self.n


        class Root(TaskBase):
            up: Requires[int]

            def build_task(self) -> None:
                self.up = Up(-1)

            def run_task(self) -> int:
                return self.up
        """,
    )
    # An error raised inside the library while the file is imported (a bad class keyword).
    project.task_file("task_keyword.py", "class Bad(TaskBase, compress_level=12):\n    pass\n")
    result = project.run()
    text = result.stdout.str()
    assert re.search(r"pytest_taskproc[/\\]\w+\.py:\d+", text) is None, text
    lines = result.outlines
    header = next(line for line in lines if "ERROR collecting task_roots" in line)
    first_frame = lines[lines.index(header) + 1]
    assert re.fullmatch(r"task_roots\.py:\d+: in build_task", first_frame), text
    # Root failed to build, so whether it requires Up is unknown: no note claims it does not.
    assert "taskproc note" not in text
    result.stdout.fnmatch_lines(["*ERROR collecting task_keyword.py*", "*", "task_keyword.py:*"])
