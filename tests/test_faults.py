"""Fault injection: killed runs, interrupts, damaged caches, full and read-only disks, bad input.

Each test provokes one failure the SPEC (section 4) and the README's
"Guarantees" promise to survive, then checks the promise itself: no result
that loads wrong, only missing work redone, one clear error naming the culprit.

Runs that are killed use plain subprocesses in their own session, so that
SIGKILL reaches the whole process group (pool workers, xdist workers).  Tasks
append ``start LABEL`` / ``done LABEL`` lines to a log named by ``$FAULT_LOG``;
the tests poll that log (or the cache folder, for a result being written)
rather than sleeping to reach an instant, and then wait a seeded random few
milliseconds so that kills land all over the run.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import TaskModules, forget_stores
from taskproject import unused_plugins

from pytest_taskproc import (
    CacheAccessError,
    Context,
    ResultMissingError,
    ResultNotPicklableError,
    TaskArgumentError,
    TaskCycleError,
    UnsetRequirementError,
)
from pytest_taskproc.cache import CacheCorruptionWarning

pytestmark = pytest.mark.slow

if not sys.platform.startswith("linux"):
    pytest.skip("fault injection uses process groups, /proc and mount", allow_module_level=True)

RUN_TIMEOUT = 180.0

# -- an experiment with several-MB results, for the kill tests -------------------------------

KILL_TASKS = '''\
"""An experiment with several-MB results, killed at random instants by test_faults.py."""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from pytest_taskproc import Requires, RequiresList, TaskBase

N = 6
BIG_SIZE = 500_000
BLOB_REPEAT = 200_000


def log(event: str, label: str) -> None:
    with open(os.environ["FAULT_LOG"], "a", encoding="utf-8") as handle:
        handle.write(f"{event} {label}\\n")


class Big(TaskBase):
    """4 MB of random floats: incompressible, stored as a raw pickle."""

    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> np.ndarray:
        log("start", f"Big:{self.n}")
        value = np.random.default_rng(self.n).random(BIG_SIZE)
        log("done", f"Big:{self.n}")
        return value


class Blob(TaskBase):
    """6.4 MB of repetitive bytes: compressible, stored gzipped."""

    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> bytes:
        log("start", f"Blob:{self.n}")
        value = hashlib.sha256(bytes([self.n])).digest() * BLOB_REPEAT
        log("done", f"Blob:{self.n}")
        return value


class Small(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log("start", f"Small:{self.n}")
        time.sleep(0.01)  # stands in for some computing
        log("done", f"Small:{self.n}")
        return self.n * self.n


class Mid(TaskBase):
    big: Requires[np.ndarray]
    small: Requires[int]

    def build_task(self, n: int) -> None:
        self.n = n
        self.big = Big(n)
        self.small = Small(n)

    def run_task(self) -> float:
        log("start", f"Mid:{self.n}")
        value = float(self.big.sum()) + self.small
        log("done", f"Mid:{self.n}")
        return value


class Top(TaskBase):
    mids: RequiresList[float]
    blobs: RequiresList[bytes]

    def build_task(self) -> None:
        self.mids = [Mid(n) for n in range(N)]
        self.blobs = [Blob(n) for n in range(2)]

    def run_task(self) -> dict[str, list[object]]:
        log("start", "Top")
        value = {
            "mids": list(self.mids),
            "blobs": [hashlib.sha256(b).hexdigest() for b in self.blobs],
        }
        log("done", "Top")
        return value
'''

KILL_DRIVER = """\
import json
import sys

from pytest_taskproc import Context

import task_killexp

if __name__ == "__main__":
    Context.cache_dir = sys.argv[1]
    print(json.dumps(task_killexp.Top().run_graph(max_workers=2)))
"""

N = 6
BIG_SIZE = 500_000
BLOB_REPEAT = 200_000
ALL_LABELS = frozenset(
    [f"{cls}:{n}" for cls in ("Big", "Small", "Mid") for n in range(N)]
    + [f"Blob:{n}" for n in range(2)]
    + ["Top"]
)
LARGE = ("Big:", "Blob:")


@functools.cache
def big(n: int) -> np.ndarray:
    return np.random.default_rng(n).random(BIG_SIZE)


def blob(n: int) -> bytes:
    return hashlib.sha256(bytes([n])).digest() * BLOB_REPEAT


def expected_top() -> dict[str, list[Any]]:
    return {
        "mids": [float(big(n).sum()) + n * n for n in range(N)],
        "blobs": [hashlib.sha256(blob(n)).hexdigest() for n in range(2)],
    }


def assert_expected(label: str, value: Any) -> None:
    cls, _, arg = label.partition(":")
    if cls == "Big":
        assert isinstance(value, np.ndarray), label
        assert np.array_equal(value, big(int(arg))), label
    elif cls == "Blob":
        assert value == blob(int(arg)), label
    elif cls == "Small":
        assert value == int(arg) ** 2, label
    elif cls == "Mid":
        assert value == float(big(int(arg)).sum()) + int(arg) ** 2, label
    else:
        assert value == expected_top(), label


# -- running, killing and inspecting child processes ------------------------------------------


def child_env(log: Path) -> dict[str, str]:
    """The environment of a child run: no settings leaking in from this pytest run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CP_"))}
    env["FAULT_LOG"] = str(log)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def pytest_command(cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pytest", "--taskproc", "-p", "no:cacheprovider", "-q",
        *unused_plugins((), cache.parent), f"--taskproc-cache-dir={cache}", *extra,
    ]  # fmt: skip


def complete_lines(log: Path) -> list[str]:
    """The log's lines, without a last line still being written."""
    try:
        text = log.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return text.split("\n")[:-1]


def started(lines: list[str]) -> list[str]:
    return [line.split(" ", 1)[1] for line in lines if line.startswith("start ")]


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies do not count)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group and wait until every member is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=RUN_TIMEOUT)
    deadline = time.monotonic() + 30
    while group_alive(proc.pid):
        assert time.monotonic() < deadline, f"process group {proc.pid} survived SIGKILL"
        time.sleep(0.005)


def wait_for(proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> bool:
    """Poll until ``ready()`` holds; False if the process ended first."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while proc.poll() is None:
        if ready():
            return True
        if time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError("the run never reached the instant it was to be killed at")
        time.sleep(0.001)
    return False


def results_being_written(cache: Path, known: set[Path]) -> bool:
    """Whether a result not in ``known`` is being written: a value file in a folder whose
    record (the commit point) is not there yet, or a record's temporary file."""
    top = cache / "taskproc"
    try:
        class_dirs = os.listdir(top)
    except FileNotFoundError:
        return False
    for class_dir in class_dirs:
        results = top / class_dir / "results"
        try:
            folders = os.listdir(results)
            for folder in folders:
                names = os.listdir(results / folder)
                for name in names:
                    uncommitted = name.startswith("result.pkl") and "record.json" not in names
                    temporary = name.startswith(".record.json") and ".tmp-" in name
                    if (uncommitted or temporary) and results / folder / name not in known:
                        return True
        except (FileNotFoundError, NotADirectoryError):
            continue
    return False


def result_files(cache: Path) -> dict[str, list[Path]]:
    """Label -> result files of every task that has a result in the cache."""
    found: dict[str, list[Path]] = {}
    top = cache / "taskproc"
    if not top.is_dir():
        return found
    for class_dir in top.iterdir():
        results = class_dir / "results"
        if class_dir.name.startswith(".") or not results.is_dir():
            continue
        cls = class_dir.name.rsplit(".", 1)[1]
        for folder in results.iterdir():
            files = [folder / n for n in ("result.pkl", "result.pkl.gz") if (folder / n).exists()]
            # A value counts only once its record is there: the record is the commit point.
            if not folder.name.isdigit() or not files or not (folder / "record.json").exists():
                continue
            args = json.loads((folder / "args.json").read_text(encoding="utf-8"))
            found[f"{cls}:{args['n']}" if args else cls] = files
    return found


def load_file(path: Path) -> Any:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return pickle.loads(data)


def check_cache(cache: Path) -> set[str]:
    """Every result in the cache loads and equals what its task computes; their labels."""
    found = result_files(cache)
    for label, files in found.items():
        for path in files:
            assert_expected(label, load_file(path))
    return set(found)


def temporary_files(cache: Path) -> set[Path]:
    return {p for p in cache.rglob(".*") if ".tmp-" in p.name}


def uncommitted_values(cache: Path) -> set[Path]:
    """Value files whose record is missing: written, but not (yet) a result."""
    return {
        p
        for p in cache.rglob("result.pkl*")
        if p.parent.name.isdigit() and not (p.parent / "record.json").exists()
    }


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def outcome_counts(text: str) -> dict[str, int]:
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last_line(text))}


class KillHarness:
    """Runs one kind of experiment over and over, killing runs at seeded random instants."""

    def __init__(self, workdir: Path, command: Callable[[Path], list[str]], seed: int) -> None:
        self.workdir = workdir
        self.command = command
        self.rng = random.Random(seed)
        self.runs = 0
        self.kills = 0
        self.mid_write = 0
        self.notes: list[str] = []

    def launch(self, cache: Path, kill: bool) -> tuple[list[str], str, int]:
        """One run on ``cache``, killed at a random instant if ``kill``: log, output, exit code."""
        self.runs += 1
        log = self.workdir / f"run{self.runs}.log"
        out = self.workdir / f"run{self.runs}.out"
        log.touch()
        missing = sorted(ALL_LABELS - set(result_files(cache)))
        with open(out, "wb") as sink:
            proc = subprocess.Popen(
                self.command(cache),
                cwd=self.workdir,
                env=child_env(log),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                if kill:
                    self._kill_at_random(proc, log, missing, cache)
                else:
                    proc.wait(timeout=RUN_TIMEOUT)
            finally:
                kill_group(proc)
        return complete_lines(log), out.read_text(errors="replace"), proc.returncode

    def _kill_at_random(
        self, proc: subprocess.Popen[bytes], log: Path, missing: list[str], cache: Path
    ) -> None:
        large = [label for label in missing if label.startswith(LARGE)]
        before = temporary_files(cache) | uncommitted_values(cache)
        dice = self.rng.random()
        if large and dice < 0.3:
            # The moment a temporary result file shows up: a result is being written.
            where = "while a result file was being written"
            delay = 0.0

            def ready() -> bool:
                return results_being_written(cache, before)

        elif large and dice < 0.6:
            # Just after run_task returned a large value: the kill lands while it
            # is pickled, compressed or written.
            label = self.rng.choice(large)
            delay = self.rng.uniform(0, 0.015)
            where = f"{delay * 1000:.1f} ms after 'done {label}'"

            def ready() -> bool:
                return f"done {label}" in complete_lines(log)

        else:
            count = self.rng.randint(1, 2 * len(missing))
            delay = self.rng.uniform(0, 0.03)
            where = f"{delay * 1000:.1f} ms after log line {count} of {2 * len(missing)}"

            def ready() -> bool:
                return len(complete_lines(log)) >= count

        if wait_for(proc, ready) and delay:
            time.sleep(delay)  # the random instant itself, not a synchronisation
        kill_group(proc)
        if proc.returncode != -signal.SIGKILL:
            self.notes.append(f"run {self.runs}: finished before the kill ({where})")
            return
        self.kills += 1
        new_tmp = (temporary_files(cache) | uncommitted_values(cache)) - before
        if any(p.name.startswith(("result", ".record")) for p in new_tmp):
            self.mid_write += 1
        kinds = sorted({p.name.split(".tmp-")[0] for p in new_tmp})
        self.notes.append(f"run {self.runs}: killed {where}; temporary files left: {kinds}")

    def round(self, cache: Path, kills: int, check: Callable[[str, set[str]], None]) -> None:
        """Kill ``kills`` consecutive runs on ``cache``, then complete it; check every step."""
        for _ in range(kills):
            present = check_cache(cache)
            if present == ALL_LABELS:
                break
            lines, _, _ = self.launch(cache, kill=True)
            computed = started(lines)
            assert set(computed).isdisjoint(present), (
                f"a killed run recomputed finished tasks: {sorted(set(computed) & present)}"
            )
            assert len(computed) == len(set(computed)), f"a task ran twice: {computed}"
            check_cache(cache)  # nothing that loads wrong
        present = check_cache(cache)
        lines, output, code = self.launch(cache, kill=False)
        assert code == 0, output
        assert sorted(started(lines)) == sorted(ALL_LABELS - present), (
            "the rerun must compute exactly what was missing"
        )
        assert check_cache(cache) == ALL_LABELS
        check(output, set(ALL_LABELS - present))

    def assert_nothing_recomputed(
        self, cache: Path, check: Callable[[str, set[str]], None]
    ) -> None:
        lines, output, code = self.launch(cache, kill=False)
        assert code == 0, output
        assert started(lines) == []
        check(output, set())

    def summary(self) -> str:
        return (
            f"{self.kills} kills ({self.mid_write} left a half-written result file) "
            f"in {self.runs} runs:\n  " + "\n  ".join(self.notes)
        )


def check_library_output(output: str, computed: set[str]) -> None:
    assert json.loads(last_line(output)) == expected_top()


def check_plugin_output(output: str, computed: set[str]) -> None:
    counts = outcome_counts(output)
    assert counts.get("passed", 0) == len(computed), output
    assert counts.get("cached", 0) == len(ALL_LABELS) - len(computed), output
    assert "failed" not in counts and "error" not in counts and "errors" not in counts, output


def kill_workdir(tmp_path: Path) -> Path:
    work = tmp_path / "experiment"
    work.mkdir()
    (work / "task_killexp.py").write_text(KILL_TASKS, encoding="utf-8")
    (work / "driver.py").write_text(KILL_DRIVER, encoding="utf-8")
    (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return work


# -- 1. SIGKILL at random instants ------------------------------------------------------------


def test_library_run_killed_at_random_instants(tmp_path: Path) -> None:
    """10 SIGKILLs of a ``run_graph(max_workers=2)`` script, two per fresh cache."""
    work = kill_workdir(tmp_path)
    harness = KillHarness(
        work, lambda cache: [sys.executable, str(work / "driver.py"), str(cache)], seed=1
    )
    for index in range(5):
        if index:
            shutil.rmtree(work / f"cache{index - 1}")  # 25 MB each
        harness.round(work / f"cache{index}", kills=2, check=check_library_output)
    harness.assert_nothing_recomputed(work / "cache4", check_library_output)
    print(harness.summary())
    assert harness.kills >= 8, harness.summary()


@pytest.mark.parametrize(("workers", "rounds"), [(None, 3), (2, 2)], ids=["inline", "xdist-2"])
def test_pytest_run_killed_at_random_instants(
    tmp_path: Path, workers: int | None, rounds: int
) -> None:
    """SIGKILLs of ``pytest --taskproc`` (6 in one process, 4 with ``-n 2``)."""
    work = kill_workdir(tmp_path)
    extra = ("-n", str(workers)) if workers else ("-p", "no:xdist")
    harness = KillHarness(work, lambda cache: pytest_command(cache, *extra), seed=2 + bool(workers))
    for index in range(rounds):
        if index:
            shutil.rmtree(work / f"cache{index - 1}")  # 25 MB each
        harness.round(work / f"cache{index}", kills=2, check=check_plugin_output)
    harness.assert_nothing_recomputed(work / f"cache{rounds - 1}", check_plugin_output)
    print(harness.summary())
    assert harness.kills >= 2 * rounds - 1, harness.summary()


# -- 2. SIGINT ---------------------------------------------------------------------------------

INTERRUPT_TASKS = """\
import os
import time

from pytest_taskproc import RequiresList, TaskBase

HOLD = {hold!r}


def log(line: str) -> None:
    with open(os.environ["FAULT_LOG"], "a", encoding="utf-8") as handle:
        handle.write(line + "\\n")


class Quick(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log(f"start Quick:{{self.n}}")
        return 10 * self.n


class Early(TaskBase):
    def run_task(self) -> str:
        log("start Early")
        return "early"


class Hang(TaskBase):
    quick: RequiresList[int]

    def build_task(self) -> None:
        self.quick = [Quick(n) for n in range(3)]

    def run_task(self) -> int:
        log("start Hang")
        deadline = time.monotonic() + 60
        while os.path.exists(HOLD) and time.monotonic() < deadline:
            time.sleep(0.01)  # held until the test removes HOLD (or a SIGINT arrives)
        return sum(self.quick)


class After(TaskBase):
    def run_task(self) -> str:
        log("start After")
        return "after"
"""


def test_sigint_stops_pytest_and_keeps_finished_results(tmp_path: Path) -> None:
    work = tmp_path / "interrupt"
    work.mkdir()
    hold = work / "hold"
    hold.touch()
    (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    source = INTERRUPT_TASKS.format(hold=str(hold))
    (work / "task_interrupt.py").write_text(source, encoding="utf-8")
    cache = work / "cache"
    log = work / "first.log"
    out = work / "first.out"
    command = pytest_command(cache, "-p", "no:xdist")
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            command, cwd=work, env=child_env(log), stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            hanging = wait_for(proc, lambda: "start Hang" in complete_lines(log))
            assert hanging, out.read_text()
            os.kill(proc.pid, signal.SIGINT)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("pytest did not stop within 60 s of SIGINT")
        finally:
            kill_group(proc)
    text = out.read_text()
    assert code == 2, text
    assert "KeyboardInterrupt" in text, text
    assert sorted(started(complete_lines(log))) == [
        "Early",
        "Hang",
        "Quick:0",
        "Quick:1",
        "Quick:2",
    ]

    # Finished results are kept; the interrupted task left nothing behind.
    results = result_files(cache)
    assert sorted(results) == ["Early", "Quick:0", "Quick:1", "Quick:2"]
    assert [load_file(results[f"Quick:{n}"][0]) for n in range(3)] == [0, 10, 20]
    assert temporary_files(cache) == set()

    hold.unlink()
    log = work / "second.log"
    try:
        rerun = subprocess.run(
            command, cwd=work, env=child_env(log), capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the run after an interrupted run hung")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    counts = outcome_counts(rerun.stdout)
    assert (counts.get("passed"), counts.get("cached")) == (2, 4), rerun.stdout
    assert sorted(started(complete_lines(log))) == ["After", "Hang"]
    assert load_file(result_files(cache)["Hang"][0]) == 30


# -- 3. damaged cache files --------------------------------------------------------------------

DAMAGE_TASKS = """
class Value(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> dict[str, int]:
        log("run", f"Value:{self.n}")
        return {"n": self.n, "square": self.n * self.n}


class Zeros(TaskBase):
    def run_task(self) -> bytes:
        log("run", "Zeros")
        return bytes(300_000)  # compressible: stored gzipped


class Total(TaskBase):
    parts: RequiresList[dict[str, int]]
    zeros: Requires[bytes]

    def build_task(self, count: int) -> None:
        self.parts = [Value(i) for i in range(count)]
        self.zeros = Zeros()

    def run_task(self) -> int:
        log("run", "Total")
        return sum(p["square"] for p in self.parts) + len(self.zeros)
"""

TOTAL = 0 + 1 + 4 + 300_000


def damage_file(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "empty":
        path.write_bytes(b"")
    else:
        raise AssertionError(how)


def folder_of(cache: Path, task: Any) -> Path:
    return Path(cache, "taskproc", task.task_name, "results", str(task.task_id))


def only_result(folder: Path) -> Path:
    (path,) = [p for p in folder.iterdir() if p.name.startswith("result.pkl")]
    return path


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize(
    ("victim", "encoding"),
    [("Value:1", "result.pkl"), ("Zeros", "result.pkl.gz"), ("Total", "result.pkl")],
)
def test_damaged_result_warns_and_is_recomputed(
    modules: TaskModules, cache_root: Path, how: str, victim: str, encoding: str
) -> None:
    mod = modules.load("damaged", DAMAGE_TASKS)
    with ThreadPoolExecutor(2) as pool:
        assert mod.Total(3).run_graph(executor=pool) == TOTAL
    task = {"Value:1": mod.Value(1), "Zeros": mod.Zeros(), "Total": mod.Total(3)}[victim]
    path = only_result(folder_of(cache_root, task))
    assert path.name == encoding
    damage_file(path, how)
    if victim != "Total":
        mod.Total(3).clear_task()  # so the damaged upstream result has to be read
    modules.clear_log()
    warns = pytest.warns(CacheCorruptionWarning, match=re.escape(path.name))
    with warns, ThreadPoolExecutor(2) as pool:
        assert mod.Total(3).run_graph(executor=pool) == TOTAL
    assert sorted(modules.runs()) == sorted({f"run {victim}", "run Total"})
    assert task.get_task_result() == load_file(only_result(folder_of(cache_root, task)))
    assert mod.Total(3).get_task_result() == TOTAL


def test_damaged_upstream_result_in_a_process_pool(modules: TaskModules, cache_root: Path) -> None:
    mod = modules.load("damaged_pool", DAMAGE_TASKS)
    assert mod.Total(3).run_graph(max_workers=2) == TOTAL
    damage_file(only_result(folder_of(cache_root, mod.Value(2))), "truncated")
    mod.Total(3).clear_task()
    modules.clear_log()
    with pytest.warns(CacheCorruptionWarning, match=r"damaged_pool\.Value"):
        assert mod.Total(3).run_graph(max_workers=2) == TOTAL
    assert sorted(modules.runs()) == ["run Total", "run Value:2"]


def test_missing_record_is_no_result(modules: TaskModules, cache_root: Path) -> None:
    mod = modules.load("norecord", DAMAGE_TASKS)
    with ThreadPoolExecutor(2) as pool:
        assert mod.Total(3).run_graph(executor=pool) == TOTAL
    (folder_of(cache_root, mod.Value(1)) / "record.json").unlink()
    modules.clear_log()
    with ThreadPoolExecutor(2) as pool:
        assert mod.Total(3).run_graph(executor=pool) == TOTAL
    # Value(1) is a new value (nothing says it equals the old one): Total follows.
    assert sorted(modules.runs()) == ["run Total", "run Value:1"]
    modules.clear_log()
    with ThreadPoolExecutor(2) as pool:
        assert mod.Total(3).run_graph(executor=pool) == TOTAL
    assert modules.runs() == []


def test_id_table_overwritten_with_garbage_warns_and_keeps_results(
    modules: TaskModules, cache_root: Path
) -> None:
    mod = modules.load("idtable", DAMAGE_TASKS)
    with ThreadPoolExecutor(2) as pool:
        assert mod.Total(3).run_graph(executor=pool) == TOTAL
    ids = [mod.Value(n).task_id for n in range(3)]
    forget_stores()  # as a new process would open it
    database = cache_root / "taskproc" / "idtable.Value" / "id_table" / "cache.db"
    assert database.is_file()
    database.write_bytes(os.urandom(8192))
    modules.clear_log()
    # Reading needs no table (the result folders name their arguments): no
    # warning, nothing recomputed, nothing written.
    with ThreadPoolExecutor(2) as pool:
        assert mod.Total(3).run_graph(executor=pool) == TOTAL
    assert [mod.Value(n).task_id for n in range(3)] == ids
    assert modules.runs() == []
    assert mod.Value(2).get_task_result() == {"n": 2, "square": 4}
    # The first new id rebuilds the table from args.json, keeping every id.
    with pytest.warns(CacheCorruptionWarning, match=r"id table of idtable\.Value"):
        assert mod.Value(7).task_id not in ids
    forget_stores()
    assert [mod.Value(n).task_id for n in range(3)] == ids


PLUGIN_DAMAGE_TASKS = """\
from pytest_taskproc import RequiresList, TaskBase

LOG = {log!r}


def log(line: str) -> None:
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(line + "\\n")


class Value(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log(f"start Value:{{self.n}}")
        return self.n * self.n


class Total(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Value(n) for n in range(3)]

    def run_task(self) -> int:
        log("start Total")
        return sum(self.parts)
"""


@pytest.mark.parametrize(
    "damage",
    [
        "upstream truncated",
        "upstream garbage",
        "root truncated",
        "record deleted",
        "id table garbage",
    ],
)
def test_damaged_cache_under_the_plugin(pytester: pytest.Pytester, damage: str) -> None:
    log = pytester.path / "run.log"
    pytester.makepyfile(task_damage=PLUGIN_DAMAGE_TASKS.format(log=str(log)))
    cache = pytester.path / "cache"
    args = ("--taskproc", f"--taskproc-cache-dir={cache}", "-p", "no:xdist", "-rA")
    first = pytester.runpytest_subprocess(*args, timeout=120)
    first.assert_outcomes(passed=4)
    base = cache / "taskproc"
    value1 = base / "task_damage.Value" / "results" / "1"
    total = base / "task_damage.Total" / "results" / "0"
    expected_runs = {
        "upstream truncated": ["Total", "Value:1"],
        "upstream garbage": ["Total", "Value:1"],
        "root truncated": ["Total"],
        "record deleted": ["Total", "Value:1"],
        "id table garbage": [],
    }[damage]
    warned = damage not in ("record deleted", "id table garbage")
    if damage.startswith("upstream"):
        damage_file(value1 / "result.pkl", damage.split()[1])
        # Total must be recomputed, so it has to read the damaged result of Value(1).
        (total / "result.pkl").unlink()
    elif damage == "root truncated":
        damage_file(total / "result.pkl", "truncated")
    elif damage == "record deleted":
        (value1 / "record.json").unlink()
    else:
        (base / "task_damage.Value" / "id_table" / "cache.db").write_bytes(os.urandom(8192))
    log.write_text("")
    second = pytester.runpytest_subprocess(*args, timeout=120)
    output = second.stdout.str()
    assert second.ret == 0, output
    assert ("CacheCorruptionWarning" in output) == warned, output
    assert sorted(started(complete_lines(log))) == expected_runs, output
    second.assert_outcomes(passed=len(expected_runs), warnings=int(warned))
    assert load_file(total / "result.pkl") == 5
    assert load_file(value1 / "result.pkl") == 1


# -- 4. and 5. full and read-only disks --------------------------------------------------------


DISK_TASKS = """
class Small(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> list[int]:
        log("run", f"Small:{self.n}")
        return [self.n] * 1000


class Huge(TaskBase):
    def run_task(self) -> bytes:
        log("run", "Huge")
        return os.urandom(4_000_000)  # incompressible, twice the size of the disk
"""


def test_full_disk_fails_the_task_cleanly_and_keeps_earlier_results(
    modules: TaskModules, monkeypatch: pytest.MonkeyPatch, tmpfs: Callable[[str], Path]
) -> None:
    disk = tmpfs("2m")
    monkeypatch.setattr(Context, "cache_dir", disk)
    mod = modules.load("fulldisk", DISK_TASKS)
    with ThreadPoolExecutor(2) as pool:
        assert mod.Small(1).run_graph(executor=pool) == [1] * 1000
        assert mod.Small(2).run_graph(executor=pool) == [2] * 1000
        with pytest.raises(OSError) as info:
            mod.Huge().run_graph(executor=pool)
    message = str(info.value)
    assert "No space left" in message or "ENOSPC" in message, message
    assert str(disk) in message
    folder = folder_of(disk, mod.Huge())
    left = sorted(p.name for p in folder.iterdir())
    assert not [name for name in left if name.startswith(".") and ".tmp-" in name], left
    assert not [name for name in left if name.startswith("result")], left
    with pytest.raises(ResultMissingError):
        mod.Huge().get_task_result()
    # Earlier results survive, load correctly and are not recomputed.
    forget_stores()
    modules.clear_log()
    assert mod.Small(1).get_task_result() == [1] * 1000
    with ThreadPoolExecutor(2) as pool:
        assert mod.Small(2).run_graph(executor=pool) == [2] * 1000
    assert modules.runs() == []


def test_read_only_cache_is_one_clear_error_naming_the_path(
    modules: TaskModules,
    monkeypatch: pytest.MonkeyPatch,
    tmpfs: Callable[[str], Path],
    pytester: pytest.Pytester,
) -> None:
    disk = tmpfs("1m")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    monkeypatch.setattr(Context, "cache_dir", disk)
    mod = modules.load("readonly", DISK_TASKS)
    with pytest.raises(CacheAccessError) as info:
        mod.Small(1).run_graph(max_workers=2)
    message = str(info.value)
    assert str(disk) in message, message
    assert "read-only" in message.lower(), message
    assert modules.runs() == []

    pytester.makepyfile(
        task_ro="from pytest_taskproc import TaskBase\n\n\nclass A(TaskBase): ...\n"
    )
    result = pytester.runpytest_subprocess("--taskproc", f"--taskproc-cache-dir={disk}", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = result.stderr.str()
    assert "--taskproc-cache-dir" in errors and str(disk) in errors, errors


# -- 6. bad input ------------------------------------------------------------------------------

BAD_TASKS = """
import threading


class Arg(TaskBase):
    def build_task(self, x: object) -> None:
        self.x = x

    def run_task(self) -> None:
        pass


class Forgetful(TaskBase):
    given: Requires[int]
    forgotten: Requires[int]

    def build_task(self) -> None:
        self.given = Const(1)

    def run_task(self) -> None:
        pass


class Ping(TaskBase):
    other: Requires[int]

    def build_task(self, n: int) -> None:
        self.other = Pong(n)

    def run_task(self) -> None:
        pass


class Pong(TaskBase):
    other: Requires[int]

    def build_task(self, n: int) -> None:
        self.other = Ping(n)

    def run_task(self) -> None:
        pass


class Locked(TaskBase):
    def run_task(self) -> object:
        log("run", "Locked")
        return threading.Lock()


class Good(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log("run", f"Good:{self.n}")
        return self.n


class Both(TaskBase):
    parts: RequiresList[object]

    def build_task(self) -> None:
        self.parts = [Good(1), Locked(), Good(2)]

    def run_task(self) -> None:
        log("run", "Both")
"""


@pytest.fixture
def bad(modules: TaskModules) -> ModuleType:
    return modules.load("badinput", BAD_TASKS)


@pytest.mark.parametrize(
    ("value", "shown"), [({1, 2}, "{1, 2}"), (float("nan"), "nan")], ids=["set", "nan"]
)
def test_bad_argument_is_a_type_error_naming_class_and_argument(
    bad: ModuleType, value: Any, shown: str
) -> None:
    with pytest.raises(TypeError) as info:
        bad.Arg(value)
    assert isinstance(info.value, TaskArgumentError)
    message = str(info.value)
    assert message.startswith("Arg: argument 'x' has unsupported value"), message
    assert shown in message


def test_unset_slot_names_class_and_slot(bad: ModuleType) -> None:
    with pytest.raises(UnsetRequirementError, match=r"^Forgetful: requirement slot 'forgotten'"):
        bad.Forgetful()


def test_cycle_names_the_tasks_on_it(bad: ModuleType) -> None:
    with pytest.raises(TaskCycleError, match=r"Ping\(3\) -> Pong\(3\) -> Ping\(3\)"):
        bad.Ping(3)


def test_unpicklable_result_names_the_task_and_keeps_other_results(
    bad: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    assert bad.Good(7).run_graph(max_workers=2) == 7
    modules.clear_log()
    with pytest.raises(ResultNotPicklableError) as info:
        bad.Both().run_graph(max_workers=2)
    message = str(info.value)
    assert message.startswith("Locked(): run_task returned a lock"), message
    assert "badinput.Locked" in message
    assert "run Both" not in modules.runs()
    folder = folder_of(cache_root, bad.Locked())
    assert not [p.name for p in folder.iterdir() if p.name.startswith("result")]
    with pytest.raises(ResultMissingError):
        bad.Locked().get_task_result()
    assert [bad.Good(n).get_task_result() for n in (1, 2, 7)] == [1, 2, 7]
    modules.clear_log()
    assert bad.Good(7).run_graph(max_workers=2) == 7
    assert bad.Good(1).run_graph(max_workers=2) == 1
    assert modules.runs() == []


GOOD_FILE = """\
from pytest_taskproc import Requires, TaskBase


class Base(TaskBase):
    def run_task(self) -> int:
        return 1


class Plus(TaskBase):
    base: Requires[int]

    def build_task(self) -> None:
        self.base = Base()

    def run_task(self) -> int:
        return self.base + 1
"""


def test_task_file_with_a_syntax_error_does_not_stop_other_files(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(task_good=GOOD_FILE, task_broken="def broken(:\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--taskproc", f"--taskproc-cache-dir={pytester.path / 'cache'}", timeout=120
    )
    result.assert_outcomes(passed=2, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*ERROR collecting task_broken.py*", "*SyntaxError*"])


ROOTS_FILE = """\
from pytest_taskproc import Requires, TaskBase


class Fine(TaskBase):
    def run_task(self) -> int:
        return 1


class Broken(TaskBase):
    up: Requires[int]

    def build_task(self) -> None:
        self.up = Fine()
        raise ValueError("Broken cannot be built today")

    def run_task(self) -> None:
        pass


class Other(TaskBase):
    def run_task(self) -> int:
        return 2
"""


def test_build_task_error_is_a_collection_error_for_that_root_only(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(task_roots=ROOTS_FILE, task_good=GOOD_FILE)
    result = pytester.runpytest_subprocess(
        "--taskproc", f"--taskproc-cache-dir={pytester.path / 'cache'}", "-rA", timeout=120
    )
    result.assert_outcomes(passed=4, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*ERROR collecting task_roots.py*", "E   ValueError: Broken cannot be built today"]
    )
    result.stdout.fnmatch_lines(
        ["ERROR task_roots.py::Broken - ValueError: Broken cannot be built today"]
    )
    result.stdout.fnmatch_lines(["PASSED task_roots.py::Fine", "PASSED task_roots.py::Other"])
