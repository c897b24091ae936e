"""End-to-end: marks on task classes and on ``pytest.param`` work as on any test.

``skip``/``skipif``/``xfail`` on a class apply to its items; ``pytest.param(...,
marks=...)`` to that root; custom marks select with ``-m``.  A task skipped
by its mark is not computed for a downstream item either: that item is
skipped naming it, unless a fresh cached result can serve.
"""

from __future__ import annotations

import pytest
from taskproject import Project, assert_counts_agree

MARKED = """
import sys


@pytest.mark.skip(reason="needs a GPU")
class Train(TaskBase):
    def run_task(self) -> int:
        log("Train")
        return 1


class Evaluate(TaskBase):
    model: Requires[int]

    def build_task(self) -> None:
        self.model = Train()

    def run_task(self) -> int:
        log("Evaluate")
        return self.model


@pytest.mark.skipif(sys.platform != "nowhere", reason="only on the nowhere platform")
class Platform(TaskBase):
    def run_task(self) -> int:
        log("Platform")
        return 1


@pytest.mark.xfail(reason="known bug", strict=True)
class Known(TaskBase):
    def run_task(self) -> int:
        log("Known")
        raise ValueError("the bug")


@pytest.mark.xfail(reason="fixed meanwhile")
class Fixed(TaskBase):
    def run_task(self) -> int:
        log("Fixed")
        return 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "n",
    [
        1,
        pytest.param(2, marks=pytest.mark.heavy),
        pytest.param(3, marks=pytest.mark.skip("too big")),
    ],
)
class Sized(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log("Sized", self.n)
        return self.n
"""

INI = "[pytest]\nmarkers =\n    slow: a slow task\n    heavy: a memory-heavy task\n"


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    pytester.makeini(INI)
    return Project(pytester)


def test_skip_skipif_and_xfail_marks_apply_to_task_items(project: Project) -> None:
    project.task_file("task_marked.py", MARKED)
    result = project.run("-rsxX", "-v")
    assert sorted(project.runs()) == ["Fixed", "Known", "Sized 1", "Sized 2"]
    assert assert_counts_agree(result) == {
        "computed": 2,
        "cached": 0,
        "failed": 0,
        "skipped": 4,
        "xfailed": 1,
        "xpassed": 1,
    }
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED [[]1[]] task_marked.py: needs a GPU",
            "SKIPPED [[]1[]] task_marked.py:*: upstream task Train() is skipped by its mark: "
            "needs a GPU",
            "SKIPPED [[]1[]] task_marked.py:*: only on the nowhere platform",
            "SKIPPED [[]1[]] task_marked.py: too big",
            "XFAIL task_marked.py::Known - known bug",
            "XPASS task_marked.py::Fixed*fixed meanwhile",
        ]
    )


def test_custom_marks_and_param_marks_select_with_m(project: Project) -> None:
    project.task_file("task_marked.py", MARKED)
    heavy = project.run("-m", "heavy")
    heavy.assert_outcomes(passed=1, deselected=7)
    assert project.runs() == ["Sized 2"]

    light = project.run("-m", "slow and not heavy", "-rs")
    assert assert_counts_agree(light) == {"computed": 1, "cached": 0, "failed": 0, "skipped": 1}
    assert project.runs() == ["Sized 1"]
    light.stdout.fnmatch_lines(["SKIPPED [[]1[]] task_marked.py: too big"])


def test_a_fresh_result_of_a_skipped_task_still_serves_downstream(project: Project) -> None:
    """The mark skips the item, not the cache: a result made before is used."""
    project.task_file(
        "task_marked.py", MARKED.replace('@pytest.mark.skip(reason="needs a GPU")', "")
    )
    project.run("-k", "Train").assert_outcomes(passed=1, deselected=7)
    assert project.runs() == ["Train"]
    project.task_file("task_marked.py", MARKED)
    result = project.run("-k", "Train or Evaluate", "--taskproc-no-source-check")
    assert assert_counts_agree(result) == {"computed": 1, "cached": 0, "failed": 0, "skipped": 1}
    assert project.runs() == ["Evaluate"]


def test_marks_on_a_base_class_apply_to_subclasses_items(project: Project) -> None:
    project.task_file(
        "task_based.py",
        """
        @pytest.mark.heavy
        class Heavy(TaskBase):
            '''A base class: neither build_task nor run_task.'''


        class Big(Heavy):
            def run_task(self) -> int:
                log("Big")
                return 1


        class Small(TaskBase):
            def run_task(self) -> int:
                log("Small")
                return 1
        """,
    )
    assert project.collected("-m", "heavy") == ["task_based.py::Big"]
    project.run("-m", "not heavy").assert_outcomes(passed=1, deselected=1)
    assert project.runs() == ["Small"]
