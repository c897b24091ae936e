"""Damaged results are never served as fresh, and damage once found leads to a recompute.

Planning trusts a value file only while its stat is the one its writer
recorded; a file changed since (bytes damaged in place, another task's file
copied over it) is hashed again first.  A cache that was only copied or
touched is hashed once and then remembered, not read on every run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import TaskModules, forget_stores, result_folder
from conftest import run_on_threads as run

from pytest_taskproc import Context, CorruptResultError
from pytest_taskproc.errors import CacheCorruptionWarning

TASKS = """
class Value(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> list:
        log("run", "Value", self.n)
        return [self.n] * 100


class Total(TaskBase):
    values: RequiresList[list]

    def build_task(self) -> None:
        self.values = [Value(1), Value(2)]

    def run_task(self) -> int:
        log("run", "Total")
        return sum(sum(v) for v in self.values)
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    return modules.load("damage_tasks", TASKS)


def value_file(cache_root: Path, task: Any) -> Path:
    return result_folder(cache_root, task) / "result.pkl"


@pytest.mark.parametrize("how", ["bytes damaged in place", "another task's file copied over it"])
def test_a_damaged_value_is_found_by_planning_and_recomputed(
    tasks: ModuleType, modules: TaskModules, cache_root: Path, how: str
) -> None:
    assert run(tasks.Total()) == 300
    path = value_file(cache_root, tasks.Value(1))
    if how == "bytes damaged in place":
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF  # same size: only the bytes say it
        path.write_bytes(bytes(data))
    else:
        shutil.copyfile(value_file(cache_root, tasks.Value(2)), path)
    modules.clear_log()
    with pytest.warns(CacheCorruptionWarning, match=r"damage_tasks\.Value .* is damaged"):
        assert run(tasks.Total()) == 300
    assert sorted(modules.runs()) == ["run Total", "run Value 1"]
    modules.clear_log()
    assert run(tasks.Total()) == 300
    assert modules.runs() == []


def test_damage_found_by_get_task_result_makes_the_next_run_recompute(
    tasks: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    run(tasks.Total())
    path = value_file(cache_root, tasks.Value(2))
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # "bit rot": the old date
    with pytest.raises(CorruptResultError) as caught:
        tasks.Value(2).get_task_result()
    assert "the next run recomputes it" in str(caught.value)
    modules.clear_log()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to warn about: it is simply stale
        assert run(tasks.Total()) == 300
    assert sorted(modules.runs()) == ["run Total", "run Value 2"]


COUNT_READS = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pytest_taskproc import Context
Context.cache_dir = sys.argv[2]
import damage_tasks
opened = []
sys.addaudithook(lambda event, args: event == "open" and opened.append(str(args[0])))
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(1) as pool:
    damage_tasks.Total().run_graph(executor=pool)
print(json.dumps(sum(1 for name in opened if "result.pkl" in name)))
"""


def test_a_copied_cache_is_hashed_once_not_on_every_run(
    tasks: ModuleType, modules: TaskModules, cache_root: Path, tmp_path: Path
) -> None:
    run(tasks.Total())
    copy = tmp_path / "copied-cache"
    shutil.copytree(cache_root, copy)  # new inodes and dates, same bytes
    old = 1_000_000_000
    for path in copy.rglob("result.pkl"):
        os.utime(path, (old, old))  # not "racily" new: the stat may be remembered

    def reads() -> int:
        done = subprocess.run(
            [sys.executable, "-c", COUNT_READS, str(modules.directory), str(copy)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout.split()[-1]))

    modules.clear_log()
    assert reads() == 4  # 3 values hashed once, the root's value loaded
    assert reads() == 1  # only the root's value is loaded
    assert modules.runs() == []


def test_deciding_freshness_of_a_copied_cache_writes_nothing(
    tasks: ModuleType, cache_root: Path, tmp_path: Path
) -> None:
    from pytest_taskproc.context import forget_fixed_root
    from pytest_taskproc.freshness import plan
    from pytest_taskproc.graph import TaskGraph

    run(tasks.Total())
    copy = tmp_path / "copied-cache"
    shutil.copytree(cache_root, copy)
    for path in copy.rglob("result.pkl"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    forget_stores()
    Context.cache_dir = copy
    forget_fixed_root()
    states = plan(TaskGraph([tasks.Total()]), copy, True)
    assert not any(state.stale for state in states.values())  # hashed, found intact
    assert tasks.Value(1).get_task_result() == [1] * 100
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
