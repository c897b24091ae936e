"""Where the cache is: a run that creates one says so; a missing result names the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TaskModules

from pytest_taskproc.errors import ResultMissingError

TASKS = """
from pytest_taskproc import TaskBase


class Answer(TaskBase):
    def run_task(self) -> int:
        return 42
"""


def test_a_run_that_creates_a_cache_says_where_and_how_to_pin_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(task_answer=TASKS)
    first = pytester.runpytest_subprocess("--taskproc")
    first.stdout.fnmatch_lines(
        [
            f"created a new taskproc cache at {pytester.path / '.cache'}; pin it with "
            "`taskproc_cache_dir = .cache` under [[]pytest[]] in pytest.ini*",
            "taskproc: 1 computed*",
        ]
    )
    second = pytester.runpytest_subprocess("--taskproc")
    assert "new taskproc cache" not in second.stdout.str()
    second.assert_outcomes(passed=0)


def test_a_pinned_cache_is_named_without_the_hint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(task_answer=TASKS)
    pytester.makeini("[pytest]\ntaskproc_cache_dir = results\n")
    result = pytester.runpytest_subprocess("--taskproc")
    result.stdout.fnmatch_lines([f"created a new taskproc cache at {pytester.path / 'results'}"])
    assert "pin it" not in result.stdout.str()


def test_result_missing_error_names_the_cache_it_looked_in(
    modules: TaskModules, cache_root: Path
) -> None:
    mod = modules.load("answers", TASKS)
    with pytest.raises(ResultMissingError) as info:
        mod.Answer().get_task_result()
    assert f"in the cache {cache_root} " in str(info.value)
    mod.Answer().run_graph(executor=None, max_workers=1)
    mod.Answer().clear_task()
    with pytest.raises(ResultMissingError) as info:
        mod.Answer().get_task_result()  # has an id: the store's own message
    assert f"in the cache {cache_root} " in str(info.value)
