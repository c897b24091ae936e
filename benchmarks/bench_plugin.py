"""The pytest plugin's own costs: planning once per run, deep graphs, the executor.

Every measurement is a fresh ``python -m pytest`` subprocess in a fresh
directory, timed from the outside (wall clock), with the pytest cache plugin
and pytest-randomly off; each ratio is taken within one invocation, so the
machine's speed cancels out.

* C: a fully cached run (``pytest --taskproc``, every task cached) of a graph
  of N tasks against plain pytest running N trivial test functions; goal: at
  most 2x.  Graphs: a chain, a binomial DAG, a wide fan-in (N = 10,000), and
  the chain of 300 that planning once per item made 10x slower than the floor.
* D: a chain of 100,000 tasks: collected and planned (``--collect-only``),
  computed, then run again fully cached.  Reported, no goal.
* E: the executor, on an empty cache: 8 tasks of ~0.5 s of CPU with
  ``--taskproc-executor=process:2`` against no executor (goal: at least 1.8x
  faster); the same with 2 s tasks (reported: start-up weighs less there);
  2,000 trivial tasks, the same two ways (goal: no slower).
* U: usage errors that must come within seconds: ``--taskproc-executor=dask:ADDRESS``
  with nothing listening at ADDRESS, against the same run with no executor
  (pytest's start-up included); goal: the usage error in under 25 s (Dask
  alone would wait 30 s per connection).  Needs ``dask[distributed]``.
* X: xdist, on an empty cache: the 8 CPU tasks (0.5 s, then 2 s) with ``-n 2``
  against ``-n 0``, next to plain tests doing the same work the same two ways;
  goal: at least 95% of plain xdist's speedup.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from bench_xdist import CPU_TASKS, CPU_TESTS, calibrate

CHAIN = """
from pytest_taskproc import Const, Requires, TaskBase


class Link(TaskBase):
    prev: Requires[int]

    def build_task(self, i: int) -> None:
        self.prev = Link(i - 1) if i else Const(0)

    def run_task(self) -> int:
        return self.prev + 1


class End(TaskBase):
    last: Requires[int]

    def build_task(self) -> None:
        self.last = Link({last})

    def run_task(self) -> int:
        return self.last
"""

BINOMIAL = """
from pytest_taskproc import Const, Requires, TaskBase, infer_task_type


@infer_task_type
class Choose(TaskBase):
    prev1: Requires[int]
    prev2: Requires[int]

    def build_task(self, n: int, k: int) -> None:
        if 0 < k < n:
            self.prev1 = Choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)
        else:
            self.prev1 = Const(0)
            self.prev2 = Const(1)

    def run_task(self) -> int:
        return self.prev1 + self.prev2


class Top(TaskBase):
    top: Requires[int]

    def build_task(self) -> None:
        self.top = Choose({n}, {n} // 2)

    def run_task(self) -> int:
        return self.top
"""

FAN_IN = """
from pytest_taskproc import RequiresList, TaskBase


class Leaf(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        return self.i


class Sum(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Leaf(i) for i in range({leaves})]

    def run_task(self) -> int:
        return sum(self.parts)
"""

TRIVIAL_TASKS = """
import pytest
from pytest_taskproc import TaskBase


@pytest.mark.parametrize("i", list(range({n})))
class Trivial(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        return self.i
"""

PLAIN_TESTS = """
import pytest


@pytest.mark.parametrize("i", range({n}))
def test_trivial(i: int) -> None:
    assert i >= 0
"""

BASE_ARGS = ("-q", "-p", "no:cacheprovider", "-p", "no:randomly")


def binomial_n(tasks: int) -> int:
    """The n whose Choose(n, n // 2) graph has about ``tasks`` tasks (it has ~(n/2 + 1)^2)."""
    n = 2
    while (n // 2 + 1) * (n - n // 2 + 1) < tasks:
        n += 2
    return n


def binomial_size(n: int) -> int:
    return (n // 2 + 1) * (n - n // 2 + 1) - 1 + 1  # Choose tasks (no (0, 0)) and Top


class Folder:
    """A scratch directory with one test or task file and a cache of its own."""

    def __init__(self, source: str, filename: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-plugin-")
        self.path = Path(self._tmp.name)
        (self.path / filename).write_text(textwrap.dedent(source))
        (self.path / "pytest.ini").write_text("[pytest]\n")

    def run(self, *args: str, timeout: float = 3600, expect_exit: int = 0) -> float:
        """Wall time of one fresh pytest run here; a run that ends otherwise ends the benchmark."""
        command = [sys.executable, "-m", "pytest", *BASE_ARGS, *args]
        # The default place, <rootdir>/.cache: pytest does not look into dot folders.
        env = {**os.environ, "CP_CACHE_DIR": str(self.path / ".cache")}
        start = time.perf_counter()
        proc = subprocess.run(
            command, cwd=self.path, env=env, capture_output=True, text=True, timeout=timeout
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != expect_exit:
            raise SystemExit(f"pytest {' '.join(args)} failed:\n{proc.stdout[-3000:]}")
        return elapsed

    def clear(self) -> None:
        subprocess.run(["rm", "-rf", str(self.path / ".cache")], check=True)

    def close(self) -> None:
        self._tmp.cleanup()


def compile_package() -> None:
    """Byte-compile the package measured, as an installed copy is.

    Where bytecode is not written (PYTHONDONTWRITEBYTECODE, an editable
    install), every run would compile the package again: tens of ms of
    start-up that no installed copy pays, and that only our side of a ratio pays.
    """
    import importlib.util

    spec = importlib.util.find_spec("pytest_taskproc")
    assert spec is not None and spec.origin is not None
    package = str(Path(spec.origin).parent)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


Row = tuple[str, float, float, str, str, str]


def cached_vs_plain(name: str, source: str, tasks: int, repeat: int) -> Row:
    graph = Folder(source, "task_graph.py")
    plain = Folder(PLAIN_TESTS.format(n=tasks), "test_plain.py")
    try:
        graph.run("--taskproc")  # fills the cache
        ours = best(repeat, lambda: graph.run("--taskproc"))
        floor = best(repeat, plain.run)
    finally:
        graph.close()
        plain.close()
    ratio = ours / floor
    verdict = "PASS" if ratio <= 2 else "FAIL"
    return (name, floor, ours, f"{ratio:.2f}x plain", "<= 2x", verdict)


def cold_pair(
    source: str, filename: str, base: tuple[str, ...], other: tuple[str, ...], repeat: int
) -> tuple[float, float]:
    """Best wall times of two ways to compute the same graph from an empty cache."""
    folder = Folder(source, filename)
    times: dict[tuple[str, ...], list[float]] = {base: [], other: []}
    try:
        for _ in range(repeat):
            for args in (base, other):  # interleaved, so load changes hit both
                folder.clear()
                times[args].append(folder.run(*args))
    finally:
        folder.close()
    return min(times[base]), min(times[other])


def unreachable_scheduler(repeat: int) -> list[Row]:
    """U1: how long a run takes to say that no Dask scheduler listens at the address."""
    import importlib.util
    import socket

    if importlib.util.find_spec("distributed") is None:
        print("U1 skipped: dask[distributed] is not installed", file=sys.stderr)
        return []
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = Folder(TRIVIAL_TASKS.format(n=4), "task_trivial.py")
    address = f"--taskproc-executor=dask:tcp://127.0.0.1:{port}"
    plain: list[float] = []
    failing: list[float] = []
    try:
        for _ in range(repeat):
            folder.clear()
            plain.append(folder.run("--taskproc"))
            folder.clear()
            failing.append(folder.run("--taskproc", address, expect_exit=4))
    finally:
        folder.close()
    base, ours = min(plain), min(failing)
    return [
        (
            "U1 unreachable Dask scheduler: the usage error vs a run without executor",
            base,
            ours,
            f"{ours - base:+.1f} s",
            "< 25 s",
            "PASS" if max(failing) < 25 else "FAIL",
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="keep the best of N runs")
    parser.add_argument("--tasks", type=int, default=10_000, help="graph size for C")
    parser.add_argument("--deep", type=int, default=100_000, help="chain length for D")
    parser.add_argument(
        "--only",
        default="C,D,E,U,X",
        help="comma-separated sections: C, D, E, U, X (default: all)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    compile_package()
    rows: list[Row] = []
    notes: list[str] = []
    load_start = os.getloadavg()[0]

    if "C" in only:
        n = args.tasks
        rows.append(
            cached_vs_plain(f"C1 chain of {n}, cached", CHAIN.format(last=n - 2), n, args.repeat)
        )
        b = binomial_n(n)
        size = binomial_size(b)
        rows.append(
            cached_vs_plain(
                f"C2 binomial DAG Choose({b}, {b // 2}), {size} tasks, cached",
                BINOMIAL.format(n=b),
                size,
                args.repeat,
            )
        )
        rows.append(
            cached_vs_plain(
                f"C3 fan-in of {n - 1} leaves, cached", FAN_IN.format(leaves=n - 1), n, args.repeat
            )
        )
        rows.append(
            cached_vs_plain("C4 chain of 300, cached", CHAIN.format(last=298), 300, args.repeat)
        )

    if "D" in only:
        deep = args.deep
        folder = Folder(CHAIN.format(last=deep - 2), "task_graph.py")
        try:
            collect = folder.run("--taskproc", "--collect-only")
            cold = folder.run("--taskproc")
            warm = folder.run("--taskproc")
        finally:
            folder.close()
        notes.append(
            f"D chain of {deep} tasks: --collect-only (collect + dry-run plan) {collect:.1f} s, "
            f"computed {cold:.1f} s ({1000 * cold / deep:.2f} ms per task), "
            f"fully cached {warm:.1f} s ({1000 * warm / deep:.2f} ms per task)"
        )

    if "E" in only:
        iterations = calibrate(0.5)
        serial, pooled = cold_pair(
            CPU_TASKS.format(iterations=iterations),
            "task_cpu.py",
            ("--taskproc",),
            ("--taskproc", "--taskproc-executor=process:2"),
            args.repeat,
        )
        speedup = serial / pooled
        rows.append(
            (
                "E1 8 x 0.5 s CPU tasks, no executor vs process:2",
                serial,
                pooled,
                f"{speedup:.2f}x faster",
                ">= 1.8x",
                "PASS" if speedup >= 1.8 else "FAIL",
            )
        )
        # The same with 2 s tasks: start-up weighs less, the pool's own efficiency shows.
        serial, pooled = cold_pair(
            CPU_TASKS.format(iterations=4 * iterations),
            "task_cpu.py",
            ("--taskproc",),
            ("--taskproc", "--taskproc-executor=process:2"),
            args.repeat,
        )
        rows.append(
            (
                "E3 8 x 2 s CPU tasks, no executor vs process:2",
                serial,
                pooled,
                f"{serial / pooled:.2f}x faster",
                "(reported)",
                "",
            )
        )
        serial, pooled = cold_pair(
            TRIVIAL_TASKS.format(n=2000),
            "task_trivial.py",
            ("--taskproc",),
            ("--taskproc", "--taskproc-executor=process:2"),
            args.repeat,
        )
        speedup = serial / pooled
        rows.append(
            (
                "E2 2,000 trivial tasks, no executor vs process:2",
                serial,
                pooled,
                f"{speedup:.2f}x faster",
                ">= 1x",
                "PASS" if speedup >= 1 else "FAIL",
            )
        )

    if "X" in only:
        iterations = calibrate(0.5)
        # 0.5 s tasks as in the issue; 2 s tasks show the split without start-up dominating.
        for label, scale in (("X1", 1), ("X2", 4)):
            seconds = 0.5 * scale
            serial, parallel = cold_pair(
                CPU_TASKS.format(iterations=scale * iterations),
                "task_cpu.py",
                ("--taskproc", "-n", "0"),
                ("--taskproc", "-n", "2"),
                args.repeat,
            )
            plain_serial, plain_parallel = cold_pair(
                CPU_TESTS.format(iterations=scale * iterations),
                "test_cpu.py",
                ("-n", "0"),
                ("-n", "2"),
                args.repeat,
            )
            ours, theirs = serial / parallel, plain_serial / plain_parallel
            rows.append(
                (
                    f"{label} 8 x {seconds:g} s CPU tasks, -n 0 vs -n 2",
                    serial,
                    parallel,
                    f"{ours:.2f}x faster",
                    f">= 0.95 x {theirs:.2f}x ({label}-ref)",
                    "PASS" if ours >= 0.95 * theirs else "FAIL",
                )
            )
            rows.append(
                (
                    f"{label}-ref the same work as plain tests, -n 0 vs -n 2",
                    plain_serial,
                    plain_parallel,
                    f"{theirs:.2f}x faster",
                    "(plain xdist)",
                    "",
                )
            )

    if "U" in only:
        rows.extend(unreachable_scheduler(args.repeat))

    print("| measurement | baseline (s) | ours (s) | ratio | goal | verdict |")
    print("|---|---:|---:|---:|---|---|")
    for name, base, ours_s, ratio, goal, verdict in rows:
        print(f"| {name} | {base:.2f} | {ours_s:.2f} | {ratio} | {goal} | {verdict} |")
    for note in notes:
        print(f"\n{note}")
    load_end = os.getloadavg()[0]
    print(
        f"\nload average (1 min): {load_start:.2f} at the start, {load_end:.2f} at the end; "
        f"best of {args.repeat} runs each"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
