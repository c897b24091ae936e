"""``--taskproc-prune[=delete]``: results no collected item reaches, listed, then deleted."""

from __future__ import annotations

import pytest

GRID = """
import pytest
from pytest_taskproc import Requires, TaskBase

SEEDS = [1, 2, 3]


class Train(TaskBase):
    def build_task(self, seed: int) -> None:
        self.seed = seed

    def run_task(self) -> list[int]:
        return [self.seed] * 1000


@pytest.mark.parametrize("seed", SEEDS)
class Score(TaskBase):
    train: Requires[list[int]]

    def build_task(self, seed: int) -> None:
        self.train = Train(seed)

    def run_task(self) -> int:
        return sum(self.train)
"""

OTHER = """
import pytest
from pytest_taskproc import TaskBase


@pytest.mark.parametrize("n", [1, 2])
class Other(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        return self.n
"""


def results(pytester: pytest.Pytester, name: str) -> list[str]:
    folder = pytester.path / ".cache" / "taskproc" / name / "results"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def shrunk(pytester: pytest.Pytester) -> pytest.Pytester:
    """A cache holding seeds 1-3 of the grid and two Other results; seed 3 then removed."""
    pytester.makepyfile(task_grid=GRID, task_other=OTHER)
    pytester.runpytest_subprocess("--taskproc").assert_outcomes(passed=8)
    pytester.makepyfile(task_grid=GRID.replace("[1, 2, 3]", "[1, 2]"))
    return pytester


def test_prune_lists_unreachable_results_with_sizes_and_deletes_nothing(
    shrunk: pytest.Pytester,
) -> None:
    # A -k slice never narrows what is reachable: Score[2] stays.
    result = shrunk.runpytest_subprocess("--taskproc-prune", "-k", "Score and 1", "-p",
                                         "no:randomly")  # fmt: skip
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*= taskproc prune =*",
            "  task_grid.Score[[]seed=3[]]  *B  id 2  */task_grid.Score/results/2",
            "  task_grid.Train[[]seed=3[]]  *KiB  id 2  */task_grid.Train/results/2",
            "taskproc prune: 2 results (* KiB) that no collected item reaches; "
            "delete them with --taskproc-prune=delete",
        ]
    )
    assert "Other" not in result.stdout.str()
    assert results(shrunk, "task_grid.Score") == ["0", "1", "2"]
    assert results(shrunk, "task_grid.Train") == ["0", "1", "2"]


def test_prune_delete_removes_them_and_nothing_else(shrunk: pytest.Pytester) -> None:
    # Only task_grid.py is collected: Other's results, which no collected
    # item reaches, belong to a class no collected file defines.
    result = shrunk.runpytest_subprocess("task_grid.py", "--taskproc-prune=delete")
    result.stdout.fnmatch_lines(
        ["taskproc prune: deleted 2 results (* KiB) that no collected item reaches"]
    )
    assert results(shrunk, "task_grid.Score") == ["0", "1"]
    assert results(shrunk, "task_grid.Train") == ["0", "1"]
    assert results(shrunk, "task_other.Other") == ["0", "1"]
    # What is left is what the collection needs, and a new prune finds nothing.
    outcomes = shrunk.runpytest_subprocess("--taskproc").parseoutcomes()
    assert "failed" not in outcomes and "skipped" not in outcomes, outcomes
    assert results(shrunk, "task_grid.Train") == ["0", "1"]
    again = shrunk.runpytest_subprocess("--taskproc-prune")
    again.stdout.fnmatch_lines(
        ["nothing to prune: every cached result of the 3 collected task classes is reached"]
    )


def test_prune_delete_deletes_nothing_when_collection_had_errors(
    shrunk: pytest.Pytester,
) -> None:
    shrunk.makepyfile(task_broken="raise RuntimeError('half-edited task file')\n")
    result = shrunk.runpytest_subprocess("--taskproc-prune=delete")
    result.stdout.fnmatch_lines(["taskproc prune: deleted nothing: the collection had errors*"])
    assert results(shrunk, "task_grid.Train") == ["0", "1", "2"]


def test_prune_takes_no_other_value_and_refuses_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(task_grid=GRID)
    result = pytester.runpytest("--taskproc-prune=all")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--taskproc-prune=all: use --taskproc-prune to list*"])
    result = pytester.runpytest_subprocess("--taskproc-prune", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--taskproc-prune runs without xdist: drop -n*"])
