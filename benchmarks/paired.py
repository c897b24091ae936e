"""Paired A/B benchmarks: one command per row of the performance table, one ratio each.

Usage::

    python benchmarks/paired.py ROW [--pairs 5] [--where disk|tmpfs] [--a-src DIR] [--b-src DIR]
    python benchmarks/paired.py --list

A row compares two commands, A and B, each a fresh subprocess in its own
scratch folder.  They run as pairs, A B A B ..., after one warm-up pair that
is not counted; each pair gives the ratio A / B, and the row prints the median
of those ratios, their minimum and maximum, and the load average before and
after.  On a shared machine load comes and goes: a pair shares it, so the
ratio of a pair is far steadier than either time, and the median ignores the
pairs a burst hit unevenly.

``--a-src DIR`` / ``--b-src DIR`` run that side with the ``pytest_taskproc``
of another source tree (put first on ``PYTHONPATH``): the code before a change,
or the commit before records for the ``records-*`` rows (which need ``--b-src``).
``--where tmpfs`` puts the scratch folders (and so the caches) in ``/dev/shm``.
A package imported from such a tree costs a pytest run more start-up than the
installed one (measured: ``plugin-empty`` 1.8x instead of 1.2x), so compare
plugin rows run with ``--a-src`` only with each other.

Library rows time ``run_graph`` inside the subprocess; plugin rows time the
whole ``python -m pytest`` process from outside, since start-up is part of
what they measure.  Each row also prints the ratio of the CPU seconds (user +
system, of the subprocess and every process it waited for, pool workers
included): on a loaded machine that ratio is the steadier of the two, except
for the parallel rows, where only the wall-clock ratio means anything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench_library import (
    RESULT_MARKER,
    RUNNER_SOURCE,
    TASK_MODULE,
    big_array_module,
    choose_module,
    fan_in_module,
    raw_pickle_module,
)
from bench_plugin import BASE_ARGS, BINOMIAL, PLAIN_TESTS, TRIVIAL_TASKS
from bench_xdist import CPU_TASKS, CPU_TESTS, calibrate

PACKAGE = "pytest_taskproc"


@dataclass
class Side:
    """One command of a pair: the files of its folder and how one measurement runs."""

    label: str
    files: dict[str, str]
    #: a library run: run_graph(**params) of TASK_MODULE's make_root, timed inside
    params: dict[str, int] | None = None
    run_kwargs: dict[str, int] = field(default_factory=lambda: {"max_workers": 2})
    #: a pytest run: its arguments, timed from outside
    pytest_args: tuple[str, ...] = ()
    #: cleared before each measurement (cold), else filled once by the warm-up (cached)
    cold: bool = True
    src: str | None = None

    def prepare(self, base: Path) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="paired-", dir=base))
        for name, text in self.files.items():
            (folder / name).write_text(textwrap.dedent(text))
        (folder / "pytest.ini").write_text("[pytest]\n")
        return folder

    def measure(self, folder: Path) -> tuple[float, float]:
        """The time (``run_graph``'s or the whole process's) and the CPU seconds it used."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        elapsed = self._run(folder)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return elapsed, cpu

    def _run(self, folder: Path) -> float:
        cache = folder / ".cache"
        if self.cold:
            shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(exist_ok=True)
        env = {**os.environ, "CP_CACHE_DIR": str(cache), "PYTHONHASHSEED": "0"}
        paths = [p for p in (self.src, str(folder), env.get("PYTHONPATH")) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if self.params is not None:
            spec = {"params": self.params, "run_kwargs": self.run_kwargs, "package": PACKAGE}
            command = [sys.executable, "-c", RUNNER_SOURCE, json.dumps(spec)]
        else:
            command = [sys.executable, "-m", "pytest", *BASE_ARGS, *self.pytest_args]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{self.label} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        if self.params is None:
            return wall
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_MARKER):
                payload = json.loads(line[len(RESULT_MARKER) :])
                self._check_origin(payload["package_file"])
                return float(payload["run_s"])
        raise SystemExit(f"{self.label} printed no result:\n{proc.stdout[-3000:]}")

    def _check_origin(self, imported: str | None) -> None:
        if self.src is not None and (
            imported is None
            or not Path(imported).resolve().is_relative_to(Path(self.src).resolve())
        ):
            raise SystemExit(f"{self.label}: {PACKAGE} came from {imported}, not {self.src}")


def library(label: str, module: str, params: dict[str, int], **kw: object) -> Side:
    return Side(label, {f"{TASK_MODULE}.py": module}, params=params, **kw)  # type: ignore[arg-type]


def plugin(label: str, files: dict[str, str], *args: str, cold: bool = True) -> Side:
    return Side(label, files, pytest_args=args, cold=cold)


W4 = {"n": 20, "size": 20 * 2**17}  # 20 results of 20 MiB (float64)
EMPTY_TASKS = "from pytest_taskproc import TaskBase\n"
ONE_TEST = "def test_one() -> None:\n    pass\n"
W4_PLUGIN = """
import numpy as np
import pytest
from pytest_taskproc import RequiresList, TaskBase


@pytest.mark.parametrize("i", list(range(20)))
class Big(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> np.ndarray:
        return np.random.default_rng(self.i).random(20 * 2**17)


class Total(TaskBase):
    parts: RequiresList[np.ndarray]

    def build_task(self) -> None:
        self.parts = [Big(i) for i in range(20)]

    def run_task(self) -> float:
        return sum(float(part.mean()) for part in self.parts)
"""


def rows(items: int) -> dict[str, tuple[str, Callable[[], tuple[Side, Side]]]]:
    """Every row: its description and how to make its two sides."""
    pkg = PACKAGE
    n_w1 = 60  # Choose(60, 30): 960 tasks
    return {
        "w4-raw": (
            "W4 cold (20 x 20 MiB, 2 workers), ours vs writing the same pickles raw",
            lambda: (
                library("ours", big_array_module(pkg, ""), W4),
                library("raw pickles", raw_pickle_module(pkg), W4),
            ),
        ),
        "w4-raw-level0": (
            "W4 cold with compress_level=0, ours vs raw pickles",
            lambda: (
                library("ours", big_array_module(pkg, ", compress_level=0"), W4),
                library("raw pickles", raw_pickle_module(pkg), W4),
            ),
        ),
        "records-w2": (
            "cold W2 N=5000 (fan-in, 2 workers), --a-src vs --b-src (the commit before records)",
            lambda: (
                library("A", fan_in_module(pkg), {"n": 5000}),
                library("B", fan_in_module(pkg), {"n": 5000}),
            ),
        ),
        "records-w1": (
            "cold W1 n=60 (binomial DAG, 2 workers), --a-src vs --b-src",
            lambda: (
                library("A", choose_module(pkg), {"n": n_w1}),
                library("B", choose_module(pkg), {"n": n_w1}),
            ),
        ),
        "plugin-empty": (
            "pytest --taskproc on an empty task file vs plain pytest (plugin disabled)",
            lambda: (
                plugin(
                    "--taskproc",
                    {"task_empty.py": EMPTY_TASKS, "test_one.py": ONE_TEST},
                    "--taskproc",
                ),
                plugin(
                    "plain",
                    {"task_empty.py": EMPTY_TASKS, "test_one.py": ONE_TEST},
                    "-p",
                    "no:taskproc",
                ),
            ),
        ),
        "plugin-cached": (
            f"fully cached plugin run of {items} trivial tasks vs {items} plain tests",
            lambda: (
                plugin(
                    "cached",
                    {"task_trivial.py": TRIVIAL_TASKS.format(n=items)},
                    "--taskproc",
                    cold=False,
                ),
                plugin(
                    "plain", {"test_plain.py": PLAIN_TESTS.format(n=items)}, "-p", "no:taskproc"
                ),
            ),
        ),
        "plugin-cold-w1": (
            f"plugin cold W1 n={n_w1} (961 items) vs 961 trivial plain tests",
            lambda: (
                plugin("cold", {"task_w1.py": BINOMIAL.format(n=n_w1)}, "--taskproc"),
                plugin("plain", {"test_plain.py": PLAIN_TESTS.format(n=961)}, "-p", "no:taskproc"),
            ),
        ),
        "plugin-w4-cached": (
            "fully cached plugin W4 (21 items holding 400 MiB) vs 21 plain tests importing numpy",
            lambda: (
                plugin("cached", {"task_big.py": W4_PLUGIN}, "--taskproc", cold=False),
                plugin(
                    "plain",
                    # the task file imports NumPy, so the plain side does too: what is
                    # left is the plugin's cost, not NumPy's import
                    {"test_plain.py": "import numpy\n" + PLAIN_TESTS.format(n=21)},
                    "-p",
                    "no:taskproc",
                ),
            ),
        ),
        "parallel-process": (
            "8 x 0.5 s CPU tasks, --taskproc-executor=process:2 vs none (A/B < 1 is faster)",
            lambda: _cpu(("--taskproc", "--taskproc-executor=process:2"), ("--taskproc",)),
        ),
        "parallel-xdist": (
            "8 x 0.5 s CPU tasks, -n 2 vs -n 0 (compare with plain-xdist)",
            lambda: _cpu(("--taskproc", "-n", "2"), ("--taskproc", "-n", "0")),
        ),
        "plain-xdist": (
            "8 x 0.5 s CPU plain tests, -n 2 vs -n 0 (the floor for parallel-xdist)",
            lambda: _cpu(("-n", "2"), ("-n", "0"), plain=True),
        ),
    }


def _cpu(a: tuple[str, ...], b: tuple[str, ...], plain: bool = False) -> tuple[Side, Side]:
    iterations = calibrate(0.5)
    source, name = (CPU_TESTS, "test_cpu.py") if plain else (CPU_TASKS, "task_cpu.py")
    files = {name: source.format(iterations=iterations)}
    return plugin(" ".join(a), files, *a), plugin(" ".join(b), files, *b)


def _summary(ratios: list[float]) -> str:
    return (
        f"median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} pairs)"
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def compile_sources(*sources: str | None) -> None:
    """Byte-compile every package measured, so no run pays for compiling."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.origin is not None
    folders = [str(Path(spec.origin).parent)]
    folders += [str(Path(s, PACKAGE)) for s in sources if s]
    for folder in folders:
        subprocess.run([sys.executable, "-m", "compileall", "-q", folder], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("row", nargs="?")
    parser.add_argument("--list", action="store_true", help="list the rows")
    parser.add_argument("--pairs", type=int, default=5, help="counted pairs (default 5)")
    parser.add_argument("--where", choices=("disk", "tmpfs"), default="disk")
    parser.add_argument("--a-src", help="source tree whose package side A runs")
    parser.add_argument("--b-src", help="source tree whose package side B runs")
    parser.add_argument("--items", type=int, default=2000, help="items for plugin-cached")
    args = parser.parse_args()
    table = rows(args.items)
    if args.list or args.row not in table:
        for name, (what, _) in table.items():
            print(f"{name:18} {what}")
        return 0 if args.list else 2
    if args.row.startswith("records") and not args.b_src:
        parser.error(f"{args.row} compares two source trees: give --b-src (and maybe --a-src)")
    what, make = table[args.row]
    a, b = make()
    a.src, b.src = args.a_src, args.b_src
    compile_sources(a.src, b.src)
    base = Path("/dev/shm" if args.where == "tmpfs" else tempfile.gettempdir())
    folders = (a.prepare(base), b.prepare(base))
    print(f"{args.row}: {what}")
    print(
        f"A = {a.label}{f' ({a.src})' if a.src else ''}; B = {b.label}"
        f"{f' ({b.src})' if b.src else ''}; on {args.where} ({base})"
    )
    print(f"load average before: {load()}", flush=True)
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    try:
        for i in range(args.pairs + 1):
            ta, ca = a.measure(folders[0])
            tb, cb = b.measure(folders[1])
            tag = "warm-up" if i == 0 else f"pair {i}"
            print(
                f"  {tag:8} A {ta:8.3f} s  B {tb:8.3f} s  A/B {ta / tb:6.3f}   "
                f"CPU A {ca:7.3f} s  B {cb:7.3f} s  A/B {ca / cb:6.3f}",
                flush=True,
            )
            if i:
                ratios.append(ta / tb)
                cpu_ratios.append(ca / cb)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load average after: {load()}")
    print(
        f"RESULT {args.row} [{args.where}]: A/B {_summary(ratios)}; CPU A/B {_summary(cpu_ratios)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
