"""Parallel pytest runs: speedup with xdist workers, and per-task overhead against plain tests.

Two measurements, each a ratio taken in one invocation so machine speed cancels out:

* S1: 8 CPU-bound tasks of about 0.5 s plus a reduce, ``pytest --taskproc -n 0``
  against ``-n 2`` on an empty cache; goal: at least 1.8x faster with 2 workers.
* S2: N trivial tasks under ``pytest --taskproc -n 2`` against N trivial plain
  test functions under ``pytest -n 2``; goal: within 2x of plain pytest.

Every run is a fresh ``python -m pytest`` subprocess in a fresh directory, timed
from the outside (wall clock), with the pytest cache plugin off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

BURN = """
def burn(i: int, iterations: int) -> int:
    total = 0
    for j in range(iterations):
        total += (j * i) % 7
    return total
"""

CPU_TASKS = (
    BURN
    + """
import pytest
from pytest_taskproc import RequiresList, TaskBase

ITERATIONS = {iterations}


class Burn(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        return burn(self.i, ITERATIONS)


class Reduce(TaskBase):
    parts: RequiresList[int]

    def build_task(self) -> None:
        self.parts = [Burn(i) for i in range(8)]

    def run_task(self) -> int:
        return sum(self.parts)
"""
)

CPU_TESTS = (
    BURN
    + """
import pytest

ITERATIONS = {iterations}


@pytest.mark.parametrize("i", list(range(8)))
def test_burn(i: int) -> None:
    assert burn(i, ITERATIONS) >= 0
"""
)

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

TRIVIAL_TESTS = """
import pytest


@pytest.mark.parametrize("i", list(range({n})))
def test_trivial(i: int) -> None:
    assert i >= 0
"""


def calibrate(seconds: float, samples: int = 5) -> int:
    """Iterations of the tasks' own ``burn`` loop that take about ``seconds`` here.

    The median of ``samples`` timings of a loop of at least 0.1 s: on a machine
    whose speed comes and goes, one timing can be off by a third.
    """
    namespace: dict[str, Any] = {}
    exec(BURN, namespace)

    def timed(n: int) -> float:
        start = time.perf_counter()
        namespace["burn"](3, n)
        return time.perf_counter() - start

    n = 200_000
    while timed(n) <= 0.1:
        n *= 2
    return int(n * seconds / statistics.median(timed(n) for _ in range(samples)))


def timed_pytest(source: str, filename: str, *args: str) -> float:
    """Wall time of one fresh ``pytest`` run over ``source`` written to ``filename``."""
    with tempfile.TemporaryDirectory(prefix="bench-xdist-") as tmp:
        folder = Path(tmp)
        (folder / filename).write_text(textwrap.dedent(source))
        (folder / "pytest.ini").write_text("[pytest]\n")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
        env = {**os.environ, "CP_CACHE_DIR": str(folder / "cache")}
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"pytest {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return elapsed


def best_of(repeat: int, *run: str) -> float:
    return min(timed_pytest(*run) for _ in range(repeat))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="trivial tasks for S2")
    parser.add_argument("--repeat", type=int, default=3, help="keep the best of N runs")
    args = parser.parse_args()

    iterations = calibrate(0.5)
    cpu = CPU_TASKS.format(iterations=iterations)
    serial = best_of(args.repeat, cpu, "task_cpu.py", "--taskproc", "-n", "0")
    parallel = best_of(args.repeat, cpu, "task_cpu.py", "--taskproc", "-n", "2")
    plain_cpu = CPU_TESTS.format(iterations=iterations)
    plain_serial = best_of(args.repeat, plain_cpu, "test_cpu.py", "-n", "0")
    plain_parallel = best_of(args.repeat, plain_cpu, "test_cpu.py", "-n", "2")
    tasks = best_of(
        args.repeat, TRIVIAL_TASKS.format(n=args.tasks), "task_trivial.py", "--taskproc", "-n", "2"
    )
    plain = best_of(args.repeat, TRIVIAL_TESTS.format(n=args.tasks), "test_trivial.py", "-n", "2")

    speedup = serial / parallel
    overhead = tasks / plain
    print("| measurement | baseline (s) | ours (s) | ratio | goal | verdict |")
    print("|---|---:|---:|---:|---|---|")
    print(
        f"| S1 8 x 0.5 s CPU tasks, -n 0 vs -n 2 | {serial:.2f} | {parallel:.2f} | "
        f"{speedup:.2f}x faster | >= 1.8x | {'PASS' if speedup >= 1.8 else 'FAIL'} |"
    )
    ceiling = plain_serial / plain_parallel
    print(
        f"| S1-ref the same CPU work as plain tests, -n 0 vs -n 2 | {plain_serial:.2f} | "
        f"{plain_parallel:.2f} | {ceiling:.2f}x faster | (xdist's ceiling) | |"
    )
    print(
        f"| S2 {args.tasks} trivial tasks vs plain tests, -n 2 | {plain:.2f} | {tasks:.2f} | "
        f"{overhead:.2f}x slower | <= 2x | {'PASS' if overhead <= 2 else 'FAIL'} |"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average (1 min) at the end: {load:.2f}; best of {args.repeat} runs each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
