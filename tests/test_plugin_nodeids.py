"""End-to-end: node ids of task items that pytest parses back, and item order.

``--lf``, ``--ff``, ``--nf`` and ``--sw`` store node ids in pytest's cache and
match them against the items of the next run; pytest 9 parses a stored
``task_sq.py::Square[2]`` into a name and its parameters, so an item must
be built the way pytest parses it.  pytest-randomly shuffles items; task
items keep their upstream-first order among themselves.
"""

from __future__ import annotations

import pytest
from taskproject import Project

SQUARES = """
def failing() -> set[int]:
    # Data, not code: which tasks fail is read from a file, so "fixing" one
    # edits no code that the other tasks' records name.
    with open(os.path.join(os.path.dirname(__file__), "failing.txt")) as handle:
        return {int(word) for word in handle.read().split()}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
class Square(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log("Square", self.n)
        if self.n in failing():
            raise ValueError(f"{self.n} fails")
        return self.n * self.n
"""


class CachingProject(Project):
    """Runs with pytest's cache plugin on, which ``--lf`` and friends need."""

    def options(self, taskproc: bool = True) -> list[str]:
        return [o for o in super().options(taskproc) if o not in ("-p", "no:cacheprovider")]

    def squares(self, *failing: int) -> None:
        (self.path / "failing.txt").write_text(" ".join(map(str, failing)))
        self.task_file("task_sq.py", SQUARES)


@pytest.fixture
def project(pytester: pytest.Pytester) -> CachingProject:
    return CachingProject(pytester)


def test_last_failed_reruns_only_the_failed_parametrized_task(project: CachingProject) -> None:
    project.squares(2, 3)
    project.run().assert_outcomes(passed=2, failed=2)
    assert sorted(project.runs()) == ["Square 1", "Square 2", "Square 3", "Square 4"]

    again = project.run("--lf", "-p", "no:randomly")
    again.stdout.fnmatch_lines(["run-last-failure: rerun previous 2 failures*"])
    assert again.parseoutcomes() == {"failed": 2}, again.stdout.str()
    assert project.runs() == ["Square 2", "Square 3"]


def test_failed_first_puts_the_failed_parametrized_task_first(project: CachingProject) -> None:
    project.squares(3)
    project.run().assert_outcomes(passed=3, failed=1)
    project.runs()
    project.squares()  # fixed
    again = project.run("--ff", "-v", "-p", "no:randomly")
    assert again.parseoutcomes() == {"passed": 1, "cached": 3}, again.stdout.str()
    items = [line.split()[0] for line in again.outlines if line.startswith("task_sq.py::")]
    assert items[0] == "task_sq.py::Square[3]", again.stdout.str()
    assert project.runs() == ["Square 3"]


def test_new_first_puts_a_new_parametrized_task_first(project: CachingProject) -> None:
    project.squares()
    project.run().assert_outcomes(passed=4)
    project.task_file("task_sq.py", SQUARES.replace("[1, 2, 3, 4]", "[1, 2, 3, 4, 5]"))
    # The decorator is part of the class's code: ignore that edit, to see --nf alone.
    again = project.run("--nf", "-v", "-p", "no:randomly", "--taskproc-no-source-check")
    items = [line.split()[0] for line in again.outlines if line.startswith("task_sq.py::")]
    assert items[0] == "task_sq.py::Square[5]", again.stdout.str()
    assert again.parseoutcomes() == {"passed": 1, "cached": 4}


def test_stepwise_continues_from_the_failed_parametrized_task(project: CachingProject) -> None:
    project.squares(2)
    first = project.run("--sw", "-p", "no:randomly")
    assert first.parseoutcomes() == {"passed": 1, "failed": 1}, first.stdout.str()
    assert project.runs() == ["Square 1", "Square 2"]

    project.squares()  # fixed
    second = project.run("--sw", "-p", "no:randomly")
    # Square[1] passed last time: stepwise deselects it and starts at Square[2].
    assert second.parseoutcomes() == {"passed": 3, "deselected": 1}, second.stdout.str()
    assert project.runs() == ["Square 2", "Square 3", "Square 4"]


TOTAL_FIRST = """
class Total(TaskBase):
    squares: RequiresList[int]

    def build_task(self) -> None:
        self.squares = [Square(n) for n in range(4)]

    def run_task(self) -> int:
        log("Total")
        return sum(self.squares)

""" + SQUARES.replace("[1, 2, 3, 4]", "[0, 1, 2, 3]")


@pytest.mark.parametrize("skip", [False, True], ids=["sw", "sw-skip"])
def test_stepwise_resumes_at_the_failed_task_and_runs_everything_after_it(
    project: CachingProject, skip: bool
) -> None:
    """The issue's case: a root defined before the tasks it reaches, collected first."""
    (project.path / "failing.txt").write_text("2")
    project.task_file("task_sq.py", TOTAL_FIRST)
    first = project.run("--sw", "-p", "no:randomly")
    assert first.parseoutcomes() == {"passed": 2, "failed": 1}, first.stdout.str()
    assert project.runs() == ["Square 0", "Square 1", "Square 2"]

    (project.path / "failing.txt").write_text("3" if skip else "")
    second = project.run("--sw-skip" if skip else "--sw", "-p", "no:randomly", "-v")
    ran = [line.split()[0] for line in second.outlines if line.startswith("task_sq.py::")]
    if skip:
        # Square[2] passes now; Square[3] fails, the one failure --sw-skip lets
        # through, so the run goes on to Total, skipped for its failed upstream.
        assert ran[:2] == ["task_sq.py::Square[2]", "task_sq.py::Square[3]"], second.stdout.str()
        assert ran[2] == "task_sq.py::Total"
        outcomes = second.parseoutcomes()
        assert outcomes == {"passed": 1, "failed": 1, "skipped": 1, "deselected": 2}, outcomes
        assert project.runs() == ["Square 2", "Square 3"]
    else:
        assert ran == ["task_sq.py::Square[2]", "task_sq.py::Square[3]", "task_sq.py::Total"]
        assert second.parseoutcomes() == {"passed": 3, "deselected": 2}, second.stdout.str()
        assert project.runs() == ["Square 2", "Square 3", "Total"]


def test_a_parametrized_item_can_be_named_on_the_command_line(project: CachingProject) -> None:
    project.squares()
    project.run("task_sq.py::Square[3]").assert_outcomes(passed=1)
    assert project.runs() == ["Square 3"]


CHAIN = """
class Stage(TaskBase):
    prev: Requires[int]

    def build_task(self, i: int) -> None:
        self.prev = Stage(i - 1) if i else Const(0)

    def run_task(self) -> int:
        log("Stage", self.task_args["i"])
        return self.prev + 1


class Last(TaskBase):
    prev: Requires[int]

    def build_task(self) -> None:
        self.prev = Stage(6)

    def run_task(self) -> int:
        log("Last")
        return self.prev
"""

PLAIN = "\n".join(f"def test_plain_{i}():\n    pass\n" for i in range(8))


def test_pytest_randomly_shuffles_plain_tests_but_not_task_order(
    pytester: pytest.Pytester,
) -> None:
    pytest.importorskip("pytest_randomly")
    project = Project(pytester)
    project.task_file("task_chain.py", CHAIN)
    pytester.makepyfile(test_plain=PLAIN)
    defined = [f"test_plain.py::test_plain_{i}" for i in range(8)]
    plain_orders = []
    for seed in ("1", "2", "3"):
        result = project.run("-v", f"--randomly-seed={seed}", "--taskproc-clear")
        assert result.ret == pytest.ExitCode.OK
        items = [line.split()[0] for line in result.outlines if "::" in line and " " in line]
        stages = [item for item in items if item.startswith("task_chain.py::")]
        assert stages == [*(f"task_chain.py::Stage[{i}]" for i in range(7)), "task_chain.py::Last"]
        # Every task ran as its own item, upstream first: none was computed for another.
        assert project.runs() == [*(f"Stage {i}" for i in range(7)), "Last"]
        plain = [item for item in items if item.startswith("test_plain.py::")]
        assert sorted(plain) == sorted(defined)
        plain_orders.append(plain)
    assert any(order != defined for order in plain_orders)  # randomly was at work
