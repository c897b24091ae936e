"""A full disk and a read-only cache, on real mounts (SPEC 4).

A full disk fails the one task that could not be written with a
``CacheAccessError`` naming the path, and leaves nothing behind that would
keep the disk full: no value without a record, no temporary file, no
half-made id table.  A read-only cache fails the tasks that need writing with
the same error, shows no earlier run's output as this run's, and skips what
is downstream of them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules, forget_stores, open_tables, unmount_all

from pytest_taskproc import Context
from pytest_taskproc.errors import CacheAccessError, ResultMissingError

TASKS = """
class Small(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> list[int]:
        log("run", "Small", self.n)
        return [self.n] * 100


class Chatty(TaskBase):
    def run_task(self) -> int:
        log("run", "Chatty")
        for _ in range(30):
            print("x" * 10_000)
        return 1


class Page(TaskBase):
    def run_task(self) -> bytes:
        log("run", "Page")
        return os.urandom(3000)  # one page of the tmpfs, with its pickle header
"""


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` up, then free ``leave`` bytes; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    if leave:
        os.truncate(filler, os.path.getsize(filler) - leave)
    return filler


def leftovers(disk: Path) -> list[str]:
    """Temporary files, and values without a record, anywhere under ``disk``."""
    found = []
    for folder, _, names in os.walk(disk):
        for name in names:
            if ".tmp-" in name:
                found.append(os.path.join(folder, name))
            if name.startswith("result.pkl") and "record.json" not in names:
                found.append(os.path.join(folder, name))
    return found


@pytest.fixture
def full_disk(
    modules: TaskModules, monkeypatch: pytest.MonkeyPatch, tmpfs: Callable[[str], Path]
) -> tuple[Path, ModuleType]:
    disk = tmpfs("1m")
    monkeypatch.setattr(Context, "cache_dir", disk)
    monkeypatch.setattr(Context, "executor_name", "thread")
    return disk, modules.load("fulldisk17", TASKS)


def test_id_table_that_cannot_grow_is_an_access_error_naming_it(
    full_disk: tuple[Path, ModuleType], modules: TaskModules
) -> None:
    disk, mod = full_disk
    assert mod.Small(0).run_graph() == [0] * 100
    filler = fill(disk)
    with pytest.raises(CacheAccessError) as info:
        mod.Small(1).run_graph()
    message = str(info.value)
    assert "id_table" in message and str(disk) in message, message
    assert "No space left" in message, message
    assert leftovers(disk) == []
    # The connection diskcache opened before the disk stopped it is closed, not
    # left to the exception's frames (a ResourceWarning whenever they are collected).
    assert open_tables(disk) == []
    # With room again the same process goes on, without taking its table for damaged
    # (a CacheCorruptionWarning would be an error here: filterwarnings = error).
    filler.unlink()
    assert [mod.Small(n).run_graph()[0] for n in range(1, 20)] == list(range(1, 20))
    forget_stores()
    assert mod.Small(0).get_task_result() == [0] * 100
    assert mod.Small(19).get_task_result() == [19] * 100


def test_id_table_that_cannot_be_created_leaves_no_half_made_table(
    full_disk: tuple[Path, ModuleType],
) -> None:
    disk, mod = full_disk
    mod.Small(0).run_graph()
    filler = fill(disk)
    with pytest.raises(CacheAccessError, match="id_table"):
        mod.Page().run_graph()
    filler.unlink()
    assert len(mod.Page().run_graph()) == 3000  # no warning about an empty table


def test_output_that_fills_the_disk_fails_the_task_and_leaves_no_temporary_file(
    full_disk: tuple[Path, ModuleType], modules: TaskModules
) -> None:
    disk, mod = full_disk
    mod.Chatty().task_id  # noqa: B018 - the id table and folder exist before the disk fills
    filler = fill(disk, leave=200_000)
    with pytest.raises(CacheAccessError) as info:
        mod.Chatty().run_graph()
    message = str(info.value)
    assert "stdout.txt" in message and str(disk) in message, message
    assert leftovers(disk) == []
    with pytest.raises(ResultMissingError):
        mod.Chatty().get_task_result()
    filler.unlink()
    assert mod.Chatty().run_graph() == 1


def test_record_that_cannot_be_written_leaves_no_orphan_value(
    full_disk: tuple[Path, ModuleType], modules: TaskModules
) -> None:
    disk, mod = full_disk
    assert len(mod.Page().run_graph()) == 3000
    mod.Page().clear_task()  # its folder and id stay: recomputing it writes no table
    folder = disk / "taskproc" / "fulldisk17.Page" / "results" / "0"
    filler = fill(disk, leave=4096)  # room for the value, none for its record
    with pytest.raises(CacheAccessError) as info:
        mod.Page().run_graph()
    assert "record.json" in str(info.value), info.value
    assert modules.runs("run")[-1] == "run Page"
    assert sorted(os.listdir(folder)) == ["args.json"]
    assert leftovers(disk) == []
    filler.unlink()
    assert len(mod.Page().run_graph()) == 3000


# -- a read-only cache under the plugin ----------------------------------------------------


@pytest.fixture
def read_only_bind(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """``make_read_only(dir)`` bind-mounts a directory read-only onto itself."""
    mounted: list[Path] = []

    def make_read_only(target: Path) -> None:
        done = subprocess.run(["mount", "--bind", str(target), str(target)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot bind-mount (needs root): {done.stderr.decode().strip()}")
        mounted.append(target)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)

    try:
        yield make_read_only
    finally:
        unmount_all(mounted)


READ_ONLY_TASKS = """
from pytest_taskproc import Requires, TaskBase


class A(TaskBase):
    def run_task(self) -> int:
        print("printed by the first run of A")
        return 1


class B(TaskBase):
    a: Requires[int]

    def build_task(self) -> None:
        self.a = A()

    def run_task(self) -> int:
        return self.a + 1
"""

NEW_TASKS = """

class C(TaskBase):
    def run_task(self) -> int:
        return 3


class D(TaskBase):
    c: Requires[int]

    def build_task(self) -> None:
        self.c = C()

    def run_task(self) -> int:
        return self.c + 1
"""


def test_read_only_cache_fails_stale_tasks_clearly_and_skips_their_downstream(
    pytester: pytest.Pytester, read_only_bind: Callable[[Path], None]
) -> None:
    cache = pytester.path / "cache"
    cache.mkdir()
    pytester.makepyfile(task_ro=READ_ONLY_TASKS)
    first = pytester.runpytest_subprocess("--taskproc", f"--taskproc-cache-dir={cache}")
    first.assert_outcomes(passed=2)
    # A stale task that has an id (A's code changed), and new tasks that have none.
    pytester.makepyfile(task_ro=READ_ONLY_TASKS.replace("return 1", "return 10") + NEW_TASKS)
    read_only_bind(cache)
    result = pytester.runpytest_subprocess(
        "--taskproc", f"--taskproc-cache-dir={cache}", "-rs", "-p", "no:randomly", timeout=120
    )
    result.assert_outcomes(failed=2, skipped=2)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            f"CacheAccessError: cannot open the lock file {cache}*task_ro.A*: Read-only*",
            f"CacheAccessError: cannot * {cache}*task_ro.C*: Read-only file system*",
            "SKIPPED * upstream task A() failed (CacheAccessError: *",
            "SKIPPED * upstream task C() failed (CacheAccessError: *",
        ],
        consecutive=False,
    )
    assert "printed by the first run of A" not in output
    assert "Traceback" not in output and "PermissionError" not in output, output
    assert "INTERNALERROR" not in output + result.stderr.str()
