"""The on-disk cache: layout, result encoding, and recovery from damaged files."""

from __future__ import annotations

import gc
import gzip
import hashlib
import json
import os
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules, forget_stores, open_tables, result_folder
from conftest import run_on_threads as run

from pytest_taskproc import Context
from pytest_taskproc.cache import CacheCorruptionWarning
from pytest_taskproc.spec import spec_of

TASKS = """
class Value(TaskBase):
    def build_task(self, n: int, label: str = "v") -> None:
        self.n = n
        self.label = label

    def run_task(self) -> dict[str, object]:
        log("run", "Value", self.n)
        print("value", self.n)
        return {"n": self.n, "label": self.label}


class Total(TaskBase):
    parts: RequiresList[dict[str, object]]

    def build_task(self, count: int) -> None:
        self.parts = [Value(i) for i in range(count)]

    def run_task(self) -> int:
        log("run", "Total")
        return sum(int(part["n"]) for part in self.parts)


class Zeros(TaskBase):
    def run_task(self) -> bytes:
        log("run", "Zeros")
        return bytes(1_000_000)


class Noise(TaskBase):
    def run_task(self) -> bytes:
        log("run", "Noise")
        return os.urandom(1_500_000)


class Raw(TaskBase, compress_level=0):
    def run_task(self) -> bytes:
        log("run", "Raw")
        return bytes(500_000)


class Packed(TaskBase, compress_level=9):
    def run_task(self) -> list[int]:
        log("run", "Packed")
        return [1, 2, 3]
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    return modules.load("tasks", TASKS)


def result_files(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("result"))


# -- layout ---------------------------------------------------------------------------


def test_layout_of_a_class_folder(tasks: ModuleType, cache_root: Path) -> None:
    task = tasks.Value(3, label="x")
    run(task)
    base = cache_root / "taskproc" / "tasks.Value"
    folder = base / "results" / str(task.task_id)
    assert json.loads((folder / "args.json").read_text()) == {"n": 3, "label": "x"}
    assert (folder / "args.json").read_text() == spec_of(task).key
    assert result_files(folder) == ["result.pkl"]
    with open(folder / "result.pkl", "rb") as handle:
        assert pickle.load(handle) == {"n": 3, "label": "x"}
    assert (folder / "stdout.txt").read_text() == "value 3\n"
    assert (base / "id_table").is_dir()
    record = json.loads((folder / "record.json").read_text())
    assert record["task"] == "tasks.Value"
    assert record["args"] == {"n": 3, "label": "x"}
    assert record["upstream"] == []
    with open(folder / "result.pkl", "rb") as handle:
        data = handle.read()
    assert record["value"]["digest"] == hashlib.sha256(data).hexdigest()
    assert record["value"]["size"] == len(data)
    assert record["value"]["file"] == "result.pkl"
    assert set(record["code"]["parts"]) >= {"tasks.Value"}
    assert record["made"]["python"] and record["made"]["host"]
    assert not (base / "source.txt").exists()


def test_cache_root_is_marked_for_backup_tools_and_git(tasks: ModuleType, cache_root: Path) -> None:
    run(tasks.Value(1))
    top = cache_root / "taskproc"
    assert (top / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (
        (top / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    assert "only load a cache you trust" in (top / "README.md").read_text()


def test_no_temporary_files_are_left_behind(tasks: ModuleType, cache_root: Path) -> None:
    run(tasks.Total(4))
    leftovers = [path for path in (cache_root / "taskproc").rglob("*") if ".tmp-" in path.name]
    assert leftovers == []


def test_cache_root_follows_the_environment_when_not_set_in_code(
    tasks: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Context, "cache_dir", None)
    monkeypatch.setenv("CP_CACHE_DIR", str(tmp_path / "from-env"))
    assert Context.get_cache_root() == tmp_path / "from-env"
    run(tasks.Value(1))
    assert (tmp_path / "from-env" / "taskproc" / "tasks.Value" / "results").is_dir()

    monkeypatch.delenv("CP_CACHE_DIR")
    monkeypatch.chdir(tmp_path)
    assert Context.get_cache_root() == tmp_path / ".cache"


# -- result encoding --------------------------------------------------------------------


def test_compress_level_0_writes_a_raw_pickle(tasks: ModuleType, cache_root: Path) -> None:
    run(tasks.Raw())
    folder = result_folder(cache_root, tasks.Raw())
    assert result_files(folder) == ["result.pkl"]
    with open(folder / "result.pkl", "rb") as handle:
        assert pickle.load(handle) == bytes(500_000)


def test_compress_level_9_writes_gzip(tasks: ModuleType, cache_root: Path) -> None:
    run(tasks.Packed())
    folder = result_folder(cache_root, tasks.Packed())
    assert result_files(folder) == ["result.pkl.gz"]
    with gzip.open(folder / "result.pkl.gz", "rb") as handle:
        assert pickle.load(handle) == [1, 2, 3]
    assert tasks.Packed().get_task_result() == [1, 2, 3]


def test_by_default_only_large_compressible_results_are_compressed(
    tasks: ModuleType, cache_root: Path
) -> None:
    run(tasks.Value(1))
    run(tasks.Noise())
    run(tasks.Zeros())
    assert result_files(result_folder(cache_root, tasks.Value(1))) == ["result.pkl"]
    assert result_files(result_folder(cache_root, tasks.Noise())) == ["result.pkl"]
    zeros = result_folder(cache_root, tasks.Zeros())
    assert result_files(zeros) == ["result.pkl.gz"]
    assert (zeros / "result.pkl.gz").stat().st_size < 50_000
    with gzip.open(zeros / "result.pkl.gz", "rb") as handle:
        assert pickle.load(handle) == bytes(1_000_000)
    assert tasks.Zeros().get_task_result() == bytes(1_000_000)


def test_a_new_result_replaces_the_old_one_whatever_its_encoding(
    modules: TaskModules, cache_root: Path
) -> None:
    mod = modules.load(
        "switching",
        """
        SIZE = os.path.join(os.path.dirname(LOG), "size")

        class Switch(TaskBase):
            def run_task(self) -> bytes:
                with open(SIZE) as handle:
                    return bytes(int(handle.read()))
        """,
    )
    size = cache_root.parent / "size"
    size.write_text("1000000")
    run(mod.Switch())
    folder = result_folder(cache_root, mod.Switch())
    assert result_files(folder) == ["result.pkl.gz"]
    size.write_text("10")
    mod.Switch().clear_task()
    assert run(mod.Switch()) == bytes(10)
    assert result_files(folder) == ["result.pkl"]


ARRAYS = """
import numpy as np

KINDS = {
    "c-order": lambda: np.random.default_rng(0).random((300, 700)),
    "f-order": lambda: np.asfortranarray(np.random.default_rng(1).random((300, 700))),
    "strided": lambda: np.arange(400_000, dtype=np.int64)[::3],
    "structured": lambda: np.zeros(50_000, dtype=[("a", "i4"), ("b", "f8")]),
    "mixed": lambda: {
        "text": "x" * 200_000,
        "noise": np.random.default_rng(2).bytes(200_000),
        "n": np.ones(9),
    },
}

class Array(TaskBase):
    def build_task(self, kind: str) -> None:
        self.kind = kind

    def run_task(self) -> object:
        log("run", "Array", self.kind)
        return KINDS[self.kind]()
"""


@pytest.mark.parametrize("kind", ["c-order", "f-order", "strided", "structured", "mixed"])
def test_a_streamed_value_is_named_by_the_digest_of_its_pickle(
    modules: TaskModules, cache_root: Path, kind: str
) -> None:
    import cloudpickle  # type: ignore[import-untyped]
    import numpy as np

    mod = modules.load("arrays", ARRAYS)
    task = mod.Array(kind)
    run(task)
    expected = mod.KINDS[kind]()
    record = task.task_record["value"]
    pickled = cloudpickle.dumps(expected, protocol=pickle.HIGHEST_PROTOCOL)
    assert record["digest"] == hashlib.sha256(pickled).hexdigest()
    assert record["size"] == len(pickled)
    folder = result_folder(cache_root, task)
    assert result_files(folder) == [record["file"]]
    assert (folder / record["file"]).stat().st_size == record["stored_size"]
    forget_stores()
    got = task.get_task_result()
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        assert all(np.array_equal(got[k], expected[k]) for k in expected)
    else:
        assert np.array_equal(got, expected) and got.dtype == expected.dtype


def test_a_large_value_changed_in_place_after_this_process_wrote_it_is_an_error(
    tasks: ModuleType, cache_root: Path
) -> None:
    from pytest_taskproc import CorruptResultError

    run(tasks.Noise())
    path = result_folder(cache_root, tasks.Noise()) / "result.pkl"
    size = path.stat().st_size
    with open(path, "r+b") as handle:  # same size, same inode: only its times say it changed
        handle.seek(size // 2)
        handle.write(b"\x00" * 16)
    with pytest.raises(CorruptResultError, match=r"result\.pkl of tasks\.Noise .* is damaged"):
        tasks.Noise().get_task_result()


LARGE = """
import random


class Large(TaskBase):
    def build_task(self, seed: int) -> None:
        self.seed = seed

    def run_task(self) -> bytes:
        log("run", "Large", self.seed)
        return random.Random(self.seed).randbytes(1_500_000)


class LargeGzip(TaskBase, compress_level=9):
    def run_task(self) -> bytes:
        log("run", "LargeGzip")
        return random.Random(7).randbytes(1_500_000)


class Length(TaskBase):
    large: Requires[bytes]

    def build_task(self, seed: int) -> None:
        self.seed = seed
        self.large = Large(seed)

    def run_task(self) -> int:
        log("run", "Length", self.seed)
        return len(self.large) + self.large[0]
"""


def test_a_large_value_another_process_wrote_is_loaded_whole_and_damage_is_still_found(
    modules: TaskModules, cache_root: Path
) -> None:
    import random

    from pytest_taskproc import CorruptResultError

    mod = modules.load("large", LARGE)
    expected = random.Random(3).randbytes(1_500_000)
    assert mod.Length(3).run_graph(max_workers=2) == len(expected) + expected[0]
    forget_stores()  # as a new process: nothing remembered of the pool's writes
    assert mod.Large(3).get_task_result() == expected
    assert mod.LargeGzip().run_graph(max_workers=2) == random.Random(7).randbytes(1_500_000)
    forget_stores()
    assert mod.LargeGzip().get_task_result() == random.Random(7).randbytes(1_500_000)
    path = result_folder(cache_root, mod.Large(3)) / "result.pkl"
    stat = path.stat()
    with open(path, "r+b") as handle:  # same size, same inode, the old date: only ctime says it
        handle.seek(stat.st_size // 2)
        handle.write(bytes(b ^ 0xFF for b in expected[:16]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    forget_stores()
    with pytest.raises(CorruptResultError, match=r"result\.pkl of large\.Large .* is damaged"):
        mod.Large(3).get_task_result()
    modules.clear_log()
    assert mod.Length(3).run_graph(max_workers=2) == len(expected) + expected[0]
    assert sorted(modules.runs()) == ["run Large 3", "run Length 3"]


def test_a_large_value_in_a_copied_cache_loads_and_damage_after_the_copy_is_found(
    modules: TaskModules, cache_root: Path, tmp_path: Path
) -> None:
    import random

    from pytest_taskproc import CorruptResultError
    from pytest_taskproc.context import forget_fixed_root

    mod = modules.load("large", LARGE)
    expected = random.Random(5).randbytes(1_500_000)
    run(mod.Length(5))
    copy = tmp_path / "copied-cache"
    shutil.copytree(cache_root, copy)  # new inodes and dates: no writer's stat matches
    for path in copy.rglob("result.pkl"):
        os.utime(path, (1_000_000_000, 1_000_000_000))  # not racily new: remembered
    forget_stores()
    Context.cache_dir = copy
    forget_fixed_root()
    modules.clear_log()
    assert run(mod.Length(5)) == len(expected) + expected[0]  # hashed once by planning
    assert mod.Large(5).get_task_result() == expected
    assert modules.runs() == []
    path = result_folder(copy, mod.Large(5)) / "result.pkl"
    stat = path.stat()
    with open(path, "r+b") as handle:  # same size, inode and date as remembered: not ctime
        handle.seek(stat.st_size // 2)
        handle.write(bytes(b ^ 0xFF for b in expected[:16]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(CorruptResultError, match=r"result\.pkl of large\.Large .* is damaged"):
        mod.Large(5).get_task_result()


@pytest.mark.parametrize("how", ["truncated", "appended", "garbage"])
def test_a_value_file_read_straight_from_disk_must_hold_one_whole_pickle(
    tmp_path: Path, how: str
) -> None:
    from pytest_taskproc import serialize

    blob = pickle.dumps(bytes(range(256)) * 5000, protocol=5)
    path = tmp_path / "result.pkl"
    damage_to = {
        "truncated": blob[: len(blob) // 2],
        "appended": blob + b"\x00",
        "garbage": b"not a pickle" * 100,
    }
    path.write_bytes(blob)
    with open(path, "rb") as handle:
        assert serialize.load_file(serialize.RAW_NAME, handle) == bytes(range(256)) * 5000
    path.write_bytes(damage_to[how])
    with open(path, "rb") as handle, pytest.raises(ValueError):
        serialize.load_file(serialize.RAW_NAME, handle)


# -- damaged files -----------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    blob = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"this is not a pickle at all" * 10)
    elif how == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif how == "appended":
        path.write_bytes(blob + b"\x00trailing bytes")
    elif how == "empty":
        path.write_bytes(b"")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["garbage", "truncated", "appended", "empty"])
@pytest.mark.parametrize("task_name", ["Value", "Packed", "Zeros"])
def test_damaged_result_of_the_root_warns_and_is_recomputed(
    tasks: ModuleType, modules: TaskModules, cache_root: Path, how: str, task_name: str
) -> None:
    task = tasks.Value(1) if task_name == "Value" else getattr(tasks, task_name)()
    expected = run(task)
    folder = result_folder(cache_root, task)
    (name,) = result_files(folder)
    damage(folder / name, how)
    modules.clear_log()
    with pytest.warns(CacheCorruptionWarning, match=rf"{name} of tasks\.{task_name}"):
        assert run(task) == expected
    assert len(modules.runs()) == 1
    assert task.get_task_result() == expected


def test_damaged_upstream_result_warns_and_is_recomputed_before_use(
    tasks: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    run(tasks.Total(3))
    damage(result_folder(cache_root, tasks.Value(1)) / "result.pkl", "truncated")
    tasks.Total(3).clear_task()
    modules.clear_log()
    with pytest.warns(CacheCorruptionWarning, match=r"tasks\.Value"):
        assert run(tasks.Total(3)) == 3
    assert sorted(modules.runs()) == ["run Total", "run Value 1"]


def test_damaged_upstream_result_in_a_process_pool(
    tasks: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    run(tasks.Total(2))
    damage(result_folder(cache_root, tasks.Value(0)) / "result.pkl", "garbage")
    tasks.Total(2).clear_task()
    modules.clear_log()
    with pytest.warns(CacheCorruptionWarning, match=r"tasks\.Value"):
        assert tasks.Total(2).run_graph(max_workers=2) == 1
    assert sorted(modules.runs()) == ["run Total", "run Value 0"]


def test_damaged_result_read_directly_is_an_error_not_a_wrong_value(
    tasks: ModuleType, cache_root: Path
) -> None:
    from pytest_taskproc import CorruptResultError

    run(tasks.Value(2))
    damage(result_folder(cache_root, tasks.Value(2)) / "result.pkl", "truncated")
    with pytest.raises(CorruptResultError, match=r"result\.pkl of tasks\.Value .* is damaged"):
        tasks.Value(2).get_task_result()


@pytest.mark.parametrize("how", ["other arguments", "unreadable bytes", "another task's"])
def test_result_whose_record_does_not_match_warns_and_is_recomputed(
    tasks: ModuleType, modules: TaskModules, cache_root: Path, how: str
) -> None:
    run(tasks.Total(2))
    run(tasks.Value(7))
    record = result_folder(cache_root, tasks.Value(1)) / "record.json"
    if how == "other arguments":
        record.write_text(record.read_text().replace('"n": 1', '"n": 7'))
    elif how == "unreadable bytes":
        record.write_bytes(b"\xff\xfe\x00")
    else:  # another task's valid result copied over this one
        other = result_folder(cache_root, tasks.Value(7))
        for name in ("record.json", "result.pkl", "args.json"):
            shutil.copy(other / name, record.parent / name)
    modules.clear_log()
    with pytest.warns(CacheCorruptionWarning, match=r"record\.json .*tasks\.Value"):
        assert run(tasks.Total(2)) == 1
    assert sorted(modules.runs()) == ["run Total", "run Value 1"]
    assert json.loads(record.read_text())["args"] == {"n": 1, "label": "v"}
    modules.clear_log()
    run(tasks.Total(2))
    assert modules.runs() == []


def test_deleted_record_means_no_result(
    tasks: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    run(tasks.Total(2))
    (result_folder(cache_root, tasks.Value(1)) / "record.json").unlink()
    modules.clear_log()
    assert run(tasks.Total(2)) == 1
    assert sorted(modules.runs()) == ["run Total", "run Value 1"]


def test_damaged_id_table_is_rebuilt_with_the_same_ids(
    tasks: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    run(tasks.Total(3))
    ids = {n: tasks.Value(n).task_id for n in range(3)}
    forget_stores()  # what a new process would see: nothing in memory
    table = cache_root / "taskproc" / "tasks.Value" / "id_table"
    for path in table.iterdir():
        path.write_bytes(b"garbage, not an sqlite database " * 100)
    modules.clear_log()
    # Reading needs no table: the result folders say which id is whose.
    assert run(tasks.Total(3)) == 3
    assert modules.runs() == []
    assert tasks.Value(1).get_task_result() == {"n": 1, "label": "v"}
    # The first new id rebuilds the table with the same ids, never reusing one.
    with pytest.warns(CacheCorruptionWarning, match=r"id table of tasks\.Value .* rebuilding"):
        new_id = tasks.Value(99).task_id
    assert new_id not in ids.values()
    assert {n: tasks.Value(n).task_id for n in range(3)} == ids
    # a connection leaked by the failed open would raise ResourceWarning (3.13+) here
    gc.collect()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_ids_assigned_in_a_pool_thread_leave_no_connection_open(
    tasks: ModuleType, cache_root: Path
) -> None:
    """A connection left in a thread's locals outlives the work; on Python 3.13 its
    collection is a ResourceWarning, failing a suite that passed (seen with Slurm tests)."""
    with ThreadPoolExecutor(1) as caller:
        assert caller.submit(run, tasks.Total(3)).result() == run(tasks.Total(3))
        # the pool thread still lives, its connection does not
        assert open_tables(cache_root.resolve()) == []


def test_ids_survive_a_new_process(tasks: ModuleType, cache_root: Path) -> None:
    run(tasks.Total(3))
    ids = [tasks.Value(n).task_id for n in range(3)]
    forget_stores()
    assert [tasks.Value(n).task_id for n in (2, 1, 0)] == ids[::-1]


def test_clear_all_tasks_removes_the_results_folder(tasks: ModuleType, cache_root: Path) -> None:
    run(tasks.Total(2))
    results = cache_root / "taskproc" / "tasks.Value" / "results"
    assert sorted(os.listdir(results)) == ["0", "1"]
    tasks.Value.clear_all_tasks()
    assert not results.exists() or os.listdir(results) == []
    assert (cache_root / "taskproc" / "tasks.Total" / "results" / "0").is_dir()


def test_clear_task_removes_the_result_and_the_data_directory(
    tasks: ModuleType, cache_root: Path
) -> None:
    run(tasks.Value(5))
    folder = result_folder(cache_root, tasks.Value(5))
    (tasks.Value(5).task_directory / "file").write_text("data")
    tasks.Value(5).clear_task()
    assert result_files(folder) == []
    assert not (folder / "data").exists()


def test_temporary_files_of_dead_writers_are_removed_on_the_next_run(
    modules: TaskModules, cache_root: Path
) -> None:
    """A SIGKILL mid-write leaves a hidden temporary file; the next computation sweeps it."""
    mod = modules.load(
        "leftover",
        """
class Once(TaskBase):
    def run_task(self) -> int:
        return 7
""",
    )
    task = mod.Once()
    assert task.run_graph() == 7
    folder = cache_root / "taskproc" / "leftover.Once" / "results" / str(task.task_id)
    orphan = folder / ".result.pkl.tmp-99999-deadbeef"
    orphan.write_bytes(b"half a pickle")
    task.clear_task()
    assert task.run_graph() == 7
    assert not orphan.exists()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
