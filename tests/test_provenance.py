"""Provenance: manifests of records, and verifying cached results by recomputing them."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import TaskModules
from conftest import run_on_threads as run

from pytest_taskproc.compare import first_difference
from pytest_taskproc.provenance import (
    Status,
    Verification,
    build_manifest,
    dump_manifest,
    manifest_entry,
    verify_task,
    write_manifest,
)

TASKS = """
import random

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def setting(name: str, default: str) -> str:
    # What the tests change between computing and verifying, to make run_task
    # return another value (or the same value built another way).
    path = os.path.join(HERE, name + ".txt")
    if not os.path.exists(path):
        return default
    with open(path) as handle:
        return handle.read()


class Load(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> dict:
        log("run", "Load", self.n, self.task_directory)
        print("loading", self.n)
        (self.task_directory / "raw.txt").write_text(str(self.n) * 3)
        return {"n": self.n, "values": [self.n * i / 7 for i in range(5)]}


class Total(TaskBase):
    loads: RequiresList[dict]

    def build_task(self, size: int) -> None:
        self.loads = [Load(n) for n in range(size)]

    def run_task(self) -> float:
        log("run", "Total", self.task_directory)
        print("total of", len(self.loads))
        print("to stderr", file=sys.stderr)
        (self.task_directory / "sum.txt").write_text("sum")
        return sum(sum(load["values"]) for load in self.loads) + int(setting("offset", "0"))


class Noise(TaskBase):
    def run_task(self) -> float:
        log("run", "Noise")
        return random.random()


class Ordered(TaskBase):
    def run_task(self) -> dict:
        log("run", "Ordered")
        keys = setting("order", "abc")
        return {key: ord(key) for key in keys}


class Grid(TaskBase):
    def run_task(self) -> object:
        log("run", "Grid")
        grid = np.arange(6, dtype=float).reshape(2, 3)
        how = setting("grid", "C")
        if how == "F":
            return np.asfortranarray(grid)
        if how == "bump":
            grid[1, 2] += 0.5
        return grid


class Fails(TaskBase):
    def run_task(self) -> int:
        log("run", "Fails")
        if setting("fail", "no") == "yes":
            raise ValueError("the instrument is offline")
        return 1
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    return modules.load("provtasks", TASKS)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every file and folder under ``root``: kind, size, modification time and content."""
    found: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() else None
        size = info.st_size if path.is_file() else None
        found[str(path.relative_to(root))] = (path.is_dir(), size, info.st_mtime_ns, content)
    return found


# -- verification -----------------------------------------------------------


def test_a_deterministic_dag_verifies_by_recomputing_every_task(
    tasks: ModuleType, modules: TaskModules
) -> None:
    total = tasks.Total(3)
    run(total)
    modules.clear_log()
    results = [verify_task(t) for t in (tasks.Load(0), tasks.Load(1), tasks.Load(2), total)]
    assert [r.status for r in results] == [Status.VERIFIED] * 4
    assert all(r.same_bytes and r.difference is None and not r.failed for r in results)
    assert [line.split(" ")[1] for line in modules.runs()] == ["Load"] * 3 + ["Total"]
    assert results[3].describe() == "Total(3): verified"


def test_an_unseeded_random_value_is_not_reproducible(
    tasks: ModuleType, modules: TaskModules
) -> None:
    cached = run(tasks.Noise())
    result = verify_task(tasks.Noise())
    assert result.status is Status.NOT_REPRODUCIBLE and result.failed
    assert result.difference is not None
    assert result.difference.startswith(f"value: cached {cached!r}, recomputed ")
    assert result.describe() == f"Noise(): not reproducible: {result.difference}"
    assert modules.runs() == ["run Noise", "run Noise"]
    assert tasks.Noise().get_task_result() == cached  # the cache keeps its value


def test_an_equal_value_pickled_differently_verifies(
    tasks: ModuleType, modules: TaskModules
) -> None:
    assert list(run(tasks.Ordered())) == ["a", "b", "c"]
    (modules.directory / "order.txt").write_text("cba")
    result = verify_task(tasks.Ordered())
    assert result == Verification(tasks.Ordered(), Status.VERIFIED, None, same_bytes=False)
    assert result.describe() == "Ordered(): verified (equal value, pickled differently)"
    (modules.directory / "order.txt").write_text("abd")
    assert verify_task(tasks.Ordered()).difference == "value: key 'c' only in the cached value"


def test_numpy_arrays_are_compared_elementwise(tasks: ModuleType, modules: TaskModules) -> None:
    run(tasks.Grid())
    assert verify_task(tasks.Grid()).same_bytes
    (modules.directory / "grid.txt").write_text("F")  # equal elements, another memory layout
    fortran = verify_task(tasks.Grid())
    assert fortran.status is Status.VERIFIED and not fortran.same_bytes
    (modules.directory / "grid.txt").write_text("bump")
    bumped = verify_task(tasks.Grid())
    assert bumped.status is Status.NOT_REPRODUCIBLE
    assert bumped.difference == "value[1, 2]: cached 5.0, recomputed 5.5 (1 of 6 elements differ)"


def test_a_failing_recomputation_is_not_reproducible(
    tasks: ModuleType, modules: TaskModules
) -> None:
    run(tasks.Fails())
    (modules.directory / "fail.txt").write_text("yes")
    result = verify_task(tasks.Fails())
    assert result.status is Status.NOT_REPRODUCIBLE
    assert result.difference == "run_task raised ValueError: the instrument is offline"


def test_damaged_cached_bytes_are_not_verified(
    tasks: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    run(tasks.Load(4))
    folder = cache_root / "taskproc" / "provtasks.Load" / "results" / str(tasks.Load(4).task_id)
    pickle_file = folder / json.loads((folder / "record.json").read_text())["value"]["file"]
    data = bytearray(pickle_file.read_bytes())
    data[-2] ^= 1
    pickle_file.write_bytes(bytes(data))
    result = verify_task(tasks.Load(4))
    assert result.status is Status.NOT_CACHED
    assert result.difference is not None
    assert "does not have the digest its record names" in result.difference


def test_a_task_without_a_result_is_not_cached(tasks: ModuleType, modules: TaskModules) -> None:
    assert verify_task(tasks.Noise()) == Verification(tasks.Noise(), Status.NOT_CACHED)
    assert verify_task(tasks.Noise()).describe() == "Noise(): not cached"
    assert modules.runs() == []


def test_verifying_leaves_the_cache_byte_for_byte_as_it_was(
    tasks: ModuleType, modules: TaskModules, cache_root: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run(tasks.Total(2))
    run(tasks.Noise())
    run(tasks.Grid())
    (modules.directory / "grid.txt").write_text("F")
    before = snapshot(cache_root)
    stdout = tasks.Total(2).task_stdout
    assert stdout.read_text() == "total of 2\n"
    modules.clear_log()
    capsys.readouterr()

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    verified = [
        verify_task(t, scratch_dir=scratch)
        for t in (tasks.Load(0), tasks.Load(1), tasks.Total(2), tasks.Noise(), tasks.Grid())
    ]
    assert [v.status.value for v in verified] == ["verified"] * 3 + ["not reproducible", "verified"]
    assert snapshot(cache_root) == before
    assert stdout.read_text() == "total of 2\n"
    assert list(scratch.iterdir()) == []  # the scratch folders are gone too
    # The tasks did run, with their directories (and prints) outside the cache.
    runs = modules.runs()
    assert [line.split(" ")[1] for line in runs] == ["Load", "Load", "Total", "Noise", "Grid"]
    for line in runs[:3]:
        directory = line.rsplit(" ", 1)[1]
        assert directory.startswith(str(scratch)) and not directory.startswith(str(cache_root))
    assert capsys.readouterr() == ("", "")


def test_an_upstream_value_replaced_since_the_record_is_reported_not_compared(
    tasks: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    run(tasks.Total(2))
    load = tasks.Load(1)
    folder = cache_root / "taskproc" / "provtasks.Load" / "results" / str(load.task_id)
    record = json.loads((folder / "record.json").read_text())
    # Another session recomputed the upstream task: its record names a new lineage.
    load.clear_task()
    run(load)
    modules.clear_log()
    result = verify_task(tasks.Total(2))
    assert result.status is Status.STALE and not result.failed
    assert result.difference == "an upstream result changed (Load(1))"
    assert modules.runs() == []

    # The upstream bytes replaced under an unchanged record (same size, other digest).
    run(tasks.Total(2))
    pickle_file = folder / record["value"]["file"]
    data = bytearray(pickle_file.read_bytes())
    data[-2] ^= 1
    pickle_file.write_bytes(bytes(data))
    modules.clear_log()
    damaged = verify_task(tasks.Total(2))
    assert damaged.status is Status.NOT_REPRODUCIBLE  # reported, not passed over as stale
    assert damaged.difference is not None
    assert damaged.difference.startswith(
        "cannot be recomputed: the cached value of upstream task Load(1) is damaged"
    )
    assert "does not have the digest its record names" in damaged.difference
    assert modules.runs() == []

    load.clear_task()
    gone = verify_task(tasks.Total(2))
    assert gone.difference == "upstream task Load(1) has no cached result"


def test_verifying_another_cache_root(tasks: ModuleType, cache_root: Path, tmp_path: Path) -> None:
    run(tasks.Total(1))
    copy = tmp_path / "restored"
    shutil.copytree(cache_root, copy)
    shutil.rmtree(cache_root)
    assert verify_task(tasks.Total(1)).status is Status.NOT_CACHED
    assert verify_task(tasks.Load(0), cache_root=copy).status is Status.VERIFIED
    assert verify_task(tasks.Total(1), cache_root=copy).status is Status.VERIFIED
    assert not cache_root.exists()


# -- comparing values -------------------------------------------------------


@dataclasses.dataclass
class Fit:
    name: str
    weights: Any
    error: float


def test_first_difference_names_the_place_and_the_values() -> None:
    nan = float("nan")
    assert first_difference({"a": [1, 2.5, nan]}, {"a": [1, 2.5, float("nan")]}) is None
    assert (
        first_difference({"a": [1, 2.5]}, {"a": [1, 2.25]})
        == "value['a'][1]: cached 2.5, recomputed 2.25"
    )
    assert first_difference((1, 2), [1, 2]) == "value: type differs: cached tuple, recomputed list"
    assert first_difference(1, 1.0) == "value: type differs: cached int, recomputed float"
    assert first_difference([1, 2], [1, 2, 3]) == "value: length differs: cached 2, recomputed 3"
    assert (
        first_difference({"a": 1}, {"a": 1, "b": 2})
        == "value: key 'b' only in the recomputed value"
    )
    assert first_difference({"x", "y"}, {"y", "x"}) is None
    # A path is its text, however it was joined (Python 3.13 keeps the pieces).
    assert first_difference(Path("/r") / "sub" / "m.bin", Path("/r/sub/m.bin")) is None
    assert first_difference(Path("/r/a"), Path("/r/b")) == (
        "value: cached PosixPath('/r/a'), recomputed PosixPath('/r/b')"
    )
    assert first_difference({"x", "y"}, {"x", "z"}) == (
        "value: set differs: 'y' only in the cached value; 'z' only in the recomputed value"
    )
    long = "a" * 100
    assert first_difference(long, long[:70] + "b" + long[71:]) == (
        "value: differs from position 70 on (cached length 100, recomputed 100): "
        "cached 'aaaaaaaaaaaaaaaaaaaa', recomputed 'baaaaaaaaaaaaaaaaaaa'"
    )  # fmt: skip
    one = Fit("ols", np.array([1.0, nan]), nan)
    assert first_difference(one, Fit("ols", np.array([1.0, nan]), nan)) is None
    assert first_difference(one, Fit("ols", np.array([1.0, 2.0]), nan)) == (
        "value.weights[1]: cached nan, recomputed 2.0 (1 of 2 elements differ)"
    )
    looped: list[Any] = [1]
    looped.append(looped)
    again: list[Any] = [1]
    again.append(again)
    assert first_difference(looped, again) is None


def test_first_difference_of_numpy_arrays() -> None:
    grid = np.arange(6.0).reshape(2, 3)
    assert first_difference(grid, np.asfortranarray(grid.copy())) is None
    assert first_difference(grid, grid.reshape(3, 2)) == (
        "value: shape differs: cached (2, 3), recomputed (3, 2)"
    )
    assert first_difference(grid, grid.astype(np.float32)) == (
        "value: dtype differs: cached float64, recomputed float32"
    )
    bumped = grid.copy()
    bumped[1, 0] = -1
    bumped[1, 2] = 9
    assert first_difference(grid, bumped) == (
        "value[1, 0]: cached 3.0, recomputed -1.0 (2 of 6 elements differ)"
    )
    assert first_difference(np.float64(0.5), np.float64(0.5)) is None
    assert first_difference(np.float64(0.5), 0.5) == (
        "value: type differs: cached numpy.float64, recomputed float"
    )
    words = np.array(["a", "b"], dtype=object)
    assert first_difference({"w": words}, {"w": np.array(["a", "c"], dtype=object)}) == (
        "value['w'][1]: cached 'b', recomputed 'c'"
    )
    assert first_difference(np.array(3), np.array(4)) == (
        "value: cached 3, recomputed 4 (1 of 1 elements differ)"
    )


# -- manifests --------------------------------------------------------------


def test_a_manifest_lists_each_task_with_its_record_and_status(
    tasks: ModuleType, cache_root: Path, tmp_path: Path
) -> None:
    total = tasks.Total(2)
    assert manifest_entry(total) == {
        "task": "provtasks.Total", "args": {"size": 2}, "id": None, "record": None,
    }  # fmt: skip
    run(total)
    listed = [tasks.Load(0), tasks.Load(1), total]
    manifest = build_manifest(listed, statuses={total: "computed", tasks.Load(0): "cached"})
    assert manifest["cache"] == str(cache_root)
    entries = manifest["tasks"]
    assert [(e["task"], e["args"], e["id"], e.get("status")) for e in entries] == [
        ("provtasks.Load", {"n": 0}, 0, "cached"),
        ("provtasks.Load", {"n": 1}, 1, None),
        ("provtasks.Total", {"size": 2}, 0, "computed"),
    ]
    assert [e["record"] for e in entries] == [t.task_record for t in listed]
    reads = entries[2]["record"]["upstream"]
    assert [u["digest"] for u in reads] == [e["record"]["value"]["digest"] for e in entries[:2]]

    path = tmp_path / "artifacts" / "manifest.json"
    write_manifest(path, manifest)
    text = path.read_text()
    assert json.loads(text) == manifest
    assert text == json.dumps(manifest, sort_keys=True, indent=1) + "\n" == dump_manifest(manifest)
    # Same cache, same manifest: two runs' manifests diff cleanly.
    write_manifest(path, build_manifest(listed, statuses={total: "computed", listed[0]: "cached"}))
    assert path.read_text() == text
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temporary left


def test_a_manifest_of_another_cache_root(
    tasks: ModuleType, cache_root: Path, tmp_path: Path
) -> None:
    run(tasks.Total(1))
    copy = tmp_path / "restored"
    shutil.copytree(cache_root, copy)
    record = tasks.Total(1).task_record
    tasks.Total(1).clear_task()
    manifest = build_manifest([tasks.Total(1)], cache_root=copy)
    assert manifest["cache"] == str(copy)
    assert manifest["tasks"][0]["record"] == record
    assert build_manifest([tasks.Total(1)])["tasks"][0]["record"] is None


# -- the app ------------------------------------------------------------------

TASKFILE = """
import os
import random

from pytest_taskproc import Requires, TaskBase

LOG = {log!r}


def log(line: str) -> None:
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(line + "\\n")


class Square(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log(f"Square {{self.n}}")
        return self.n * self.n


class Words(TaskBase):
    def run_task(self) -> set:
        log("Words")
        # Pickled in iteration order, which depends on the hash seed.
        return {{f"word{{i}}" for i in range(40)}}


class Main(TaskBase):
    square: Requires[int]
    words: Requires[set]

    def build_task(self) -> None:
        self.square = Square(7)
        self.words = Words()

    def run_task(self) -> int:
        log("Main")
        print("the answer is", self.square)
        return self.square + len(self.words)


class Noisy(TaskBase):
    square: Requires[int]

    def build_task(self) -> None:
        self.square = Square(7)

    def run_task(self) -> float:
        log("Noisy")
        return self.square + random.random()
"""


class App:
    """The task file above, and ``python -m pytest_taskproc.app`` runs of it."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "study"
        self.folder.mkdir()
        self.log = tmp_path / "run.log"
        self.taskfile = self.folder / "taskfile.py"
        self.taskfile.write_text(textwrap.dedent(TASKFILE.format(log=str(self.log))))
        self.cache = self.folder / ".cache"

    def __call__(self, *args: str, seed: int = 0) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
        env["PYTHONHASHSEED"] = str(seed)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # a same-size edit within a second is seen
        return subprocess.run(
            [sys.executable, "-m", "pytest_taskproc.app", str(self.taskfile), *args],
            cwd=self.folder, capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    def runs(self) -> list[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.write_text("")
        return lines


def test_app_manifest_after_a_run(tmp_path: Path) -> None:
    app = App(tmp_path)
    manifest = tmp_path / "out" / "manifest.json"
    first = app("--manifest", str(manifest), "--dont-show-progress", "-t", "thread")
    assert first.returncode == 0, first.stderr
    assert "the answer is 49" in first.stdout
    document = json.loads(manifest.read_text())
    assert document["cache"] == str(app.cache)
    entries = document["tasks"]
    assert [(e["task"], e["args"], e["status"]) for e in entries] == [
        ("taskfile.Square", {"n": 7}, "computed"),
        ("taskfile.Words", {}, "computed"),
        ("taskfile.Main", {}, "computed"),
    ]
    on_disk = app.cache / "taskproc" / "taskfile.Main" / "results" / "0" / "record.json"
    assert entries[2]["record"] == json.loads(on_disk.read_text())

    again = app("--manifest", str(manifest), "--dont-force-entrypoint", "-t", "thread")
    assert again.returncode == 0, again.stderr
    text = manifest.read_text()
    assert [e["status"] for e in json.loads(text)["tasks"]] == ["cached"] * 3
    assert app("--manifest", str(manifest), "--dont-force-entrypoint").returncode == 0
    assert manifest.read_text() == text  # nothing changed, nothing differs

    forced = app("--manifest", str(manifest), "-t", "thread")
    assert [e["status"] for e in json.loads(manifest.read_text())["tasks"]] == [
        "cached", "cached", "computed",
    ]  # fmt: skip
    assert forced.returncode == 0


def test_app_verify_passes_a_set_of_strings_under_another_hash_seed(tmp_path: Path) -> None:
    app = App(tmp_path)
    assert app("--dont-show-progress", "-t", "thread", seed=1).returncode == 0
    assert sorted(app.runs()) == ["Main", "Square 7", "Words"]
    before = sorted((p, p.stat().st_mtime_ns) for p in app.cache.rglob("*"))

    manifest = tmp_path / "verified.json"
    verified = app("--verify", "--manifest", str(manifest), seed=2)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.splitlines() == [
        "Square(7): verified",
        "Words(): verified (equal value, pickled differently)",
        "Main(): verified",
        "verify: 3 verified, 0 not reproducible, 0 stale, 0 not cached",
    ]
    assert app.runs() == ["Square 7", "Words", "Main"]
    assert [e["status"] for e in json.loads(manifest.read_text())["tasks"]] == ["verified"] * 3
    assert sorted((p, p.stat().st_mtime_ns) for p in app.cache.rglob("*")) == before


def test_app_verify_fails_when_a_value_is_not_reproducible(tmp_path: Path) -> None:
    app = App(tmp_path)
    nothing = app("-e", "Noisy", "--verify")
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.splitlines() == [
        "Square(7): not cached",
        "Noisy(): not cached",
        "verify: 0 verified, 0 not reproducible, 0 stale, 2 not cached",
    ]
    assert app.runs() == []

    assert app("-e", "Noisy", "-t", "thread").returncode == 0
    app.runs()
    noisy = app("-e", "Noisy", "--verify")
    assert noisy.returncode == 1, noisy.stderr
    lines = noisy.stdout.splitlines()
    assert lines[0] == "Square(7): verified"
    assert lines[1].startswith("Noisy(): not reproducible: value: cached 49.")
    assert ", recomputed 49." in lines[1]
    assert lines[2] == "verify: 1 verified, 1 not reproducible, 0 stale, 0 not cached"


def test_app_verify_reports_a_task_whose_code_changed_as_stale(tmp_path: Path) -> None:
    app = App(tmp_path)
    assert app("-t", "thread").returncode == 0
    app.runs()
    text = app.taskfile.read_text()
    app.taskfile.write_text(text.replace("return self.n * self.n", "return self.n**2"))
    result = app("--verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Square(7): stale: its code changed",
        "Words(): verified",
        "Main(): verified",
        "verify: 2 verified, 0 not reproducible, 1 stale, 0 not cached",
    ]
    assert app.runs() == ["Words", "Main"]
