"""Benchmark ``pytest_taskproc`` against the original ``taskproc`` 0.11.2, side by side.

Why this exists: ``pytest_taskproc`` re-implements the ``taskproc`` API, and one of the
reasons to do so is performance.  This script makes the comparison reproducible in a single
command: it installs the original library into a throwaway virtualenv, runs identical
workloads through both libraries and prints a markdown table with the speedups and the
performance goals (PASS/FAIL).

Every measurement runs in a *fresh* Python subprocess so that import costs, process-pool
start-up and on-disk cache behaviour are the real ones a user would see.  The workload code
is generated as a tiny module whose only difference between the two libraries is the import
line; it is written to a file and imported (never run as ``__main__``) because process pools
pickle task classes by reference.  Only the ``run_graph`` call is timed (inside the
subprocess, with ``time.perf_counter``); import and task-construction times are reported
separately in the details table.

Run ``python benchmarks/bench_library.py --help`` for the options; see ``README.md`` next to
this file for what each workload measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ORIGINAL_VERSION = "0.11.2"
BENCH_DIR = Path(__file__).resolve().parent
CACHED_VENV = BENCH_DIR / f".venv-taskproc-{ORIGINAL_VERSION}"
RESULT_MARKER = "BENCH_RESULT_JSON:"
TASK_MODULE = "bench_tasks"
DEFAULT_TIMEOUT = 600.0
DEFAULT_WORKERS = 2

LibName = Literal["original", "ours", "raw"]
Mode = Literal["cold", "warm"]
Status = Literal["ok", "timeout", "error", "wrong", "skipped"]

# The CPU-bound kernel of W3.  It is kept as source text so that the parent process can
# calibrate *exactly* the code the tasks will run, and so that its result has a closed form
# (see ``spin_expected``) that lets us verify the answer without re-running the loop.
SPIN_SOURCE = """
def spin(seed: int, iterations: int) -> int:
    acc = seed
    for j in range(iterations):
        acc += j & 7
    return acc
"""

# Executed with ``python -c`` inside the measurement directory.  It times the phases
# separately so that the table can report the ``run_graph`` call alone, while the details
# still show whether import or graph construction is where the time goes.
RUNNER_SOURCE = f"""
import json, sys, time
t0 = time.perf_counter()
import {TASK_MODULE}
t1 = time.perf_counter()
spec = json.loads(sys.argv[1])
root = {TASK_MODULE}.make_root(**spec["params"])
t2 = time.perf_counter()
result = root.run_graph(**spec["run_kwargs"])
t3 = time.perf_counter()
out = {{"import_s": t1 - t0, "build_s": t2 - t1, "run_s": t3 - t2, "result": result}}
print({RESULT_MARKER!r} + json.dumps(out, default=repr), flush=True)
"""


# --------------------------------------------------------------------------------------
# Workload definitions
# --------------------------------------------------------------------------------------


def spin_expected(seed: int, iterations: int) -> int:
    """Closed form of ``spin`` so W3 results can be checked without burning more CPU."""
    full, rest = divmod(iterations, 8)
    return seed + full * 28 + rest * (rest - 1) // 2


def choose_module(package: str) -> str:
    """W1: the binomial DAG from the taskproc README; ~n^2/4 tiny tasks sharing sub-DAGs."""
    return textwrap.dedent(f"""
        from {package} import Const, Requires, TaskBase, infer_task_type


        @infer_task_type
        class Choose(TaskBase):
            prev1: Requires[int]
            prev2: Requires[int]

            def build_task(self, n: int, k: int) -> None:
                if 0 < k < n:
                    self.prev1 = Choose(n - 1, k - 1)
                    self.prev2 = Choose(n - 1, k)
                elif k == 0 or k == n:
                    self.prev1 = Const(0)
                    self.prev2 = Const(1)
                else:
                    raise ValueError((n, k))

            def run_task(self) -> int:
                return self.prev1 + self.prev2


        def make_root(n: int) -> Choose:
            return Choose(n, n // 2)
    """)


def fan_in_module(package: str) -> str:
    """W2: N independent trivial leaves and one wide reduce (per-task overhead, fan-in)."""
    return textwrap.dedent(f"""
        from {package} import RequiresList, TaskBase, infer_task_type


        @infer_task_type
        class Leaf(TaskBase):
            def build_task(self, i: int) -> None:
                self.i = i

            def run_task(self) -> int:
                return self.i


        @infer_task_type
        class Sum(TaskBase):
            xs: RequiresList[int]

            def build_task(self, n: int) -> None:
                self.xs = [Leaf(i) for i in range(n)]

            def run_task(self) -> int:
                return sum(self.xs)


        def make_root(n: int) -> Sum:
            return Sum(n)
    """)


def cpu_module(package: str) -> str:
    """W3: CPU-bound tasks; checks that workers really run in parallel processes."""
    return textwrap.dedent(f"""
        from {package} import RequiresList, TaskBase, infer_task_type
        {textwrap.indent(SPIN_SOURCE, " " * 8).strip()}


        @infer_task_type
        class Spin(TaskBase):
            def build_task(self, i: int, iterations: int) -> None:
                self.i = i
                self.iterations = iterations

            def run_task(self) -> int:
                return spin(self.i, self.iterations)


        @infer_task_type
        class SpinSum(TaskBase):
            parts: RequiresList[int]

            def build_task(self, n: int, iterations: int) -> None:
                self.parts = [Spin(i, iterations) for i in range(n)]

            def run_task(self) -> int:
                return sum(self.parts)


        def make_root(n: int, iterations: int) -> SpinSum:
            return SpinSum(n, iterations)
    """)


def big_array_module(package: str, class_kwargs: str) -> str:
    """W4: large numpy results; measures serialization, compression and disk I/O."""
    return textwrap.dedent(f"""
        import numpy as np

        from {package} import RequiresList, TaskBase, infer_task_type


        @infer_task_type
        class Big(TaskBase{class_kwargs}):
            def build_task(self, i: int, size: int) -> None:
                self.i = i
                self.size = size

            def run_task(self) -> np.ndarray:
                return np.random.default_rng(self.i).random(self.size)


        @infer_task_type
        class MeanSum(TaskBase):
            arrays: RequiresList[np.ndarray]

            def build_task(self, n: int, size: int) -> None:
                self.arrays = [Big(i, size) for i in range(n)]

            def run_task(self) -> float:
                total = 0.0
                for a in self.arrays:
                    total += float(a.mean())
                return total


        def make_root(n: int, size: int) -> MeanSum:
            return MeanSum(n, size)
    """)


def raw_pickle_module(_package: str) -> str:
    """W4 baseline: what the same work costs with no framework at all.

    Two worker processes each generate arrays, ``cloudpickle.dumps`` them and write the bytes
    to a file; one more pool job reads them back and reduces, mirroring the task graph.  It
    exposes ``make_root(...).run_graph(...)`` so it can use the same timing runner.
    """
    return textwrap.dedent("""
        import os
        import tempfile
        from concurrent.futures import ProcessPoolExecutor
        from pathlib import Path

        import cloudpickle
        import numpy as np


        def _make(i: int, size: int, out_dir: str) -> int:
            data = cloudpickle.dumps(np.random.default_rng(i).random(size))
            Path(out_dir, f"{i}.pkl").write_bytes(data)
            return i


        def _reduce(n: int, out_dir: str) -> float:
            total = 0.0
            for i in range(n):
                total += float(cloudpickle.loads(Path(out_dir, f"{i}.pkl").read_bytes()).mean())
            return total


        class RawPickles:
            def __init__(self, n: int, size: int) -> None:
                self.n = n
                self.size = size

            def run_graph(self, max_workers: int) -> float:
                out_dir = tempfile.mkdtemp(dir=os.environ["CP_CACHE_DIR"])
                with ProcessPoolExecutor(max_workers=max_workers) as pool:
                    list(pool.map(_make, range(self.n), [self.size] * self.n,
                                  [out_dir] * self.n))
                    return pool.submit(_reduce, self.n, out_dir).result()


        def make_root(n: int, size: int) -> RawPickles:
            return RawPickles(n, size)
    """)


def w4_expected(n: int, size: int) -> float:
    """Reference value for W4, computed with the very same generator in the parent."""
    import numpy as np

    total = 0.0
    for i in range(n):
        total += float(np.random.default_rng(i).random(size).mean())
    return total


@dataclass(frozen=True)
class Case:
    """One workload at one parameter value, run through every selected library."""

    workload: str
    label: str
    module: Callable[[str], str]
    params: dict[str, int]
    expected: Callable[[], int | float]
    modes: tuple[Mode, ...] = ("cold", "warm")
    max_workers: int = DEFAULT_WORKERS
    libs: tuple[LibName, ...] = ("original", "ours")

    @property
    def key(self) -> str:
        return f"{self.workload}:{self.label}"


def build_plan(workloads: set[str], quick: bool, spin_iterations: int | None) -> list[Case]:
    """Lists the cases to run; ``quick`` keeps only the smallest sizes of W1 and W2."""
    plan: list[Case] = []
    if "W1" in workloads:
        for n in [20] if quick else [20, 40, 60]:
            plan.append(Case("W1", f"n={n}", choose_module, {"n": n}, _const(math.comb(n, n // 2))))
    if "W2" in workloads:
        for n in [100] if quick else [100, 1000, 5000]:
            plan.append(Case("W2", f"N={n}", fan_in_module, {"n": n}, _const(n * (n - 1) // 2)))
    if quick:
        return plan
    if "W3" in workloads and spin_iterations is not None:
        params = {"n": 8, "iterations": spin_iterations}
        spin_total = sum(spin_expected(i, spin_iterations) for i in range(8))
        for workers in (1, 2):
            plan.append(
                Case(
                    "W3",
                    f"workers={workers}",
                    cpu_module,
                    params,
                    _const(spin_total),
                    modes=("cold",),
                    max_workers=workers,
                )
            )
    if "W4" in workloads:
        params = {"n": 20, "size": 20 * 2**17}  # 20 MiB of float64 per task
        mean_sum = _lazy(lambda: w4_expected(20, 20 * 2**17))
        plan.append(
            Case(
                "W4",
                "raw pickles (baseline)",
                raw_pickle_module,
                params,
                mean_sum,
                modes=("cold",),
                libs=("raw",),
            )
        )
        plan.append(
            Case(
                "W4",
                "default compression",
                lambda pkg: big_array_module(pkg, ""),
                params,
                mean_sum,
                modes=("cold",),
            )
        )
        plan.append(
            Case(
                "W4",
                "compress_level=0",
                lambda pkg: big_array_module(pkg, ", compress_level=0"),
                params,
                mean_sum,
                modes=("cold",),
            )
        )
    return plan


def _const(value: int | float) -> Callable[[], int | float]:
    """Wraps an eagerly known expected value in the callable form ``Case`` wants."""
    return lambda: value


def _lazy(fn: Callable[[], float]) -> Callable[[], float]:
    """Computes an expensive expected value once, and only if the workload actually runs."""
    memo: list[float] = []

    def get() -> float:
        if not memo:
            memo.append(fn())
        return memo[0]

    return get


def calibrate_spin(target_s: float = 0.5) -> int:
    """Finds the iteration count for which ``spin`` takes about ``target_s`` here.

    Done once in the parent so that both libraries get the same amount of work.  The venv of
    the original library is built from this interpreter, so the speed carries over.
    """
    namespace: dict[str, object] = {}
    exec(SPIN_SOURCE, namespace)
    spin = namespace["spin"]
    assert callable(spin)
    iterations = 100_000
    while True:
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            spin(0, iterations)
            best = min(best, time.perf_counter() - t0)
        if best >= 0.1:
            return max(1, round(iterations * target_s / best))
        iterations *= 4


# --------------------------------------------------------------------------------------
# Running measurements
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lib:
    """An interpreter plus the package name the generated module imports from."""

    name: LibName
    python: str
    package: str


@dataclass
class Outcome:
    """What one fresh-subprocess measurement produced."""

    status: Status
    run_s: float = math.nan
    import_s: float = math.nan
    build_s: float = math.nan
    wall_s: float = math.nan
    result: object = None
    message: str = ""


def subprocess_env(cache_dir: Path, module_dir: Path) -> dict[str, str]:
    """A clean environment: our own cache dir, no inherited ``CP_*`` knobs or PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CP_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    env["CP_CACHE_DIR"] = str(cache_dir)
    env["PYTHONPATH"] = str(module_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def measure(lib: Lib, module_dir: Path, cache_dir: Path, case: Case, timeout: float) -> Outcome:
    """Runs one measurement in a fresh process (group) and checks the returned value.

    The subprocess gets its own session so that, on timeout, its process-pool workers can be
    killed together with it instead of lingering and skewing the following measurements.
    """
    spec = {"params": case.params, "run_kwargs": {"max_workers": case.max_workers}}
    cmd = [lib.python, "-c", RUNNER_SOURCE, json.dumps(spec)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=module_dir,
        env=subprocess_env(cache_dir, module_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        return Outcome(
            "timeout", wall_s=time.perf_counter() - t0, message=f"no result within {timeout:g} s"
        )
    wall = time.perf_counter() - t0
    _kill_group(proc.pid)  # reap stray pool workers, if any survived the interpreter
    payload = None
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            payload = json.loads(line[len(RESULT_MARKER) :])
    if proc.returncode != 0 or payload is None:
        # Strip the per-measurement temp path so identical failures are reported once.
        excerpt = _head_tail(stderr or stdout).replace(str(module_dir), "<module dir>")
        return Outcome("error", wall_s=wall, message=f"exit code {proc.returncode}\n{excerpt}")
    outcome = Outcome(
        "ok",
        run_s=payload["run_s"],
        import_s=payload["import_s"],
        build_s=payload["build_s"],
        wall_s=wall,
        result=payload["result"],
    )
    expected = case.expected()
    if not _same_value(outcome.result, expected):
        outcome.status = "wrong"
        outcome.message = f"returned {outcome.result!r}, expected {expected!r}"
    return outcome


def _kill_group(pgid: int) -> None:
    """Kills the process group we created for one measurement (no-op if already gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _same_value(got: object, expected: int | float) -> bool:
    """Exact for ints; tolerant for floats, whose summation order may legitimately differ."""
    if isinstance(expected, int):
        return type(got) is int and got == expected
    return isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=1e-9)


def _head_tail(text: str, head: int = 8, tail: int = 4) -> str:
    """First lines of stderr (as asked), plus its last lines, where the exception is."""
    lines = text.rstrip().splitlines()
    if len(lines) <= head + tail:
        return "\n".join(lines)
    return "\n".join(
        [*lines[:head], f"... ({len(lines) - head - tail} lines omitted)", *lines[-tail:]]
    )


def run_case(
    case: Case, lib: Lib, tmp_root: Path, timeout: float, repeat: int
) -> dict[Mode, Outcome]:
    """Cold run on a fresh cache, then warm run(s) on the same cache; best of ``repeat``.

    A warm run after a failed cold run would silently be a cold run, so it is skipped.
    """
    module_dir = Path(tempfile.mkdtemp(prefix=f"{lib.name}-", dir=tmp_root))
    (module_dir / f"{TASK_MODULE}.py").write_text(case.module(lib.package))
    best: dict[Mode, Outcome] = {}
    for _ in range(repeat):
        cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=tmp_root))
        try:
            failed = False
            for mode in case.modes:
                if failed:
                    best.setdefault(mode, Outcome("skipped", message="cold run failed"))
                    continue
                outcome = measure(lib, module_dir, cache_dir, case, timeout)
                _progress(
                    f"  {case.workload} {case.label:<24} {lib.name:<8} {mode:<4} "
                    f"{_fmt_outcome(outcome)}"
                )
                prev = best.get(mode)
                if prev is None or outcome.status != "ok" or outcome.run_s < prev.run_s:
                    best[mode] = outcome  # failures win: they are what must be reported
                failed = outcome.status != "ok"
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
        if any(o.status in ("timeout", "error", "wrong") for o in best.values()):
            break  # repeating a failure only burns time
    shutil.rmtree(module_dir, ignore_errors=True)
    return best


def _load_average() -> str:
    """Reported so that a reader can tell whether other processes competed for the CPUs."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):  # not available on Windows
        return "n/a"


def _progress(msg: str) -> None:
    """Progress goes to stderr so that stdout stays a clean markdown report."""
    print(msg, file=sys.stderr, flush=True)


def _fmt_outcome(o: Outcome) -> str:
    return f"{o.run_s:.3f} s" if o.status == "ok" else o.status


# --------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------


def venv_python(venv_dir: Path) -> Path:
    """Path of the interpreter inside a virtualenv, on POSIX and on Windows."""
    if os.name == "nt":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def ensure_original_venv(venv_dir: Path) -> Path:
    """Creates (or reuses, if intact) a venv with ``taskproc==0.11.2`` and numpy.

    The check imports both packages and compares the installed version, so a half-built or
    outdated cached venv is rebuilt instead of producing misleading numbers.
    """
    python = venv_python(venv_dir)
    probe = [
        str(python),
        "-c",
        "import importlib.metadata as m, numpy, taskproc; print(m.version('taskproc'))",
    ]
    if python.exists():
        res = subprocess.run(probe, capture_output=True, text=True)
        if res.returncode == 0 and res.stdout.strip() == ORIGINAL_VERSION:
            return python
        shutil.rmtree(venv_dir)
    _progress(f"creating venv for taskproc=={ORIGINAL_VERSION} in {venv_dir} ...")
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)
    res = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"taskproc=={ORIGINAL_VERSION}",
            "numpy",
        ],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        sys.exit(f"pip install of taskproc=={ORIGINAL_VERSION} failed:\n{res.stdout}{res.stderr}")
    subprocess.run(probe, check=True, capture_output=True)
    return python


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------

Results = dict[tuple[str, LibName, Mode], Outcome]


@dataclass
class Goal:
    """A performance target attached to one table row."""

    text: str
    check: Callable[[Results], tuple[str, bool | None]] = field(repr=False)


def _ours(results: Results, key: str, mode: Mode = "cold") -> float | None:
    o = results.get((key, "ours", mode))
    return o.run_s if o is not None and o.status == "ok" else None


def _lib_time(results: Results, key: str, lib: LibName, mode: Mode = "cold") -> float | None:
    o = results.get((key, lib, mode))
    return o.run_s if o is not None and o.status == "ok" else None


def absolute_goal(key: str, mode: Mode, limit: float) -> Goal:
    """Ours must finish ``run_graph`` under ``limit`` seconds."""

    def check(results: Results) -> tuple[str, bool | None]:
        t = _ours(results, key, mode)
        return "", (None if t is None else t < limit)

    return Goal(f"ours < {limit:g} s", check)


def speedup_goal(minimum: float) -> Goal:
    """Ours with 2 workers must be ``minimum`` times faster than with 1 worker."""

    def check(results: Results) -> tuple[str, bool | None]:
        notes = []
        verdict: bool | None = None
        for lib in ("ours", "original"):
            one = _lib_time(results, "W3:workers=1", lib)
            two = _lib_time(results, "W3:workers=2", lib)
            if one is not None and two is not None:
                notes.append(f"{lib} {one / two:.2f}x")
                if lib == "ours":
                    verdict = one / two >= minimum
        return "; ".join(notes), verdict

    return Goal(f"ours 2w/1w ≥ {minimum:g}x", check)


def raw_ratio_goal(key: str, maximum: float) -> Goal:
    """Ours must stay within ``maximum`` times the framework-free raw-pickle baseline."""

    def check(results: Results) -> tuple[str, bool | None]:
        raw = _lib_time(results, "W4:raw pickles (baseline)", "raw")
        if raw is None:
            return "no baseline", None
        notes = []
        verdict: bool | None = None
        for lib in ("ours", "original"):
            t = _lib_time(results, key, lib)
            if t is not None:
                notes.append(f"{lib} {t / raw:.2f}x")
                if lib == "ours":
                    verdict = t / raw <= maximum
        return "; ".join(notes), verdict

    return Goal(f"ours ≤ {maximum:g}x raw", check)


GOALS: dict[tuple[str, Mode], Goal] = {
    ("W1:n=60", "cold"): absolute_goal("W1:n=60", "cold", 1.5),
    ("W2:N=5000", "cold"): absolute_goal("W2:N=5000", "cold", 3.0),
    ("W2:N=5000", "warm"): absolute_goal("W2:N=5000", "warm", 0.5),
    ("W3:workers=2", "cold"): speedup_goal(1.8),
    ("W4:compress_level=0", "cold"): raw_ratio_goal("W4:compress_level=0", 1.3),
    ("W4:default compression", "cold"): raw_ratio_goal("W4:default compression", 1.5),
}


def _cell(o: Outcome | None) -> str:
    if o is None:
        return "skipped"
    if o.status == "ok":
        return f"{o.run_s:.3f}"
    return o.status


def render_table(plan: Sequence[Case], results: Results) -> str:
    """The markdown report: one row per (case, cold/warm), with goal and verdict."""
    header = (
        "| Workload | Parameter | Run | Original (s) | Ours (s) | Speedup (orig/ours) "
        "| Goal | Result |"
    )
    lines = [header, "|---|---|---|---:|---:|---:|---|---|"]
    for case in plan:
        for mode in case.modes:
            if case.libs == ("raw",):
                raw = results.get((case.key, "raw", mode))
                ref = (
                    f"reference: {_cell(raw)} s"
                    if raw and raw.status == "ok"
                    else (f"reference: {_cell(raw)}")
                )
                lines.append(f"| {case.workload} | {case.label} | {mode} | — | — | — | {ref} | |")
                continue
            orig = results.get((case.key, "original", mode))
            ours = results.get((case.key, "ours", mode))
            speedup = "—"
            if orig and ours and orig.status == ours.status == "ok" and ours.run_s > 0:
                speedup = f"{orig.run_s / ours.run_s:.2f}x"
            goal_text, verdict_text = "", ""
            goal = GOALS.get((case.key, mode))
            if goal is not None:
                note, verdict = goal.check(results)
                goal_text = goal.text + (f" ({note})" if note else "")
                verdict_text = {True: "PASS", False: "FAIL", None: "FAIL (no data)"}[verdict]
                if ours is None:
                    verdict_text = "n/a"
            lines.append(
                f"| {case.workload} | {case.label} | {mode} | {_cell(orig)} "
                f"| {_cell(ours)} | {speedup} | {goal_text} | {verdict_text} |"
            )
    return "\n".join(lines)


def render_details(plan: Sequence[Case], results: Results) -> str:
    """Per-measurement phase breakdown: where the time goes besides ``run_graph``."""
    lines = [
        "| Library | Workload | Parameter | Run | import (s) | build (s) | run_graph (s) "
        "| process wall (s) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for case in plan:
        for lib in case.libs:
            for mode in case.modes:
                o = results.get((case.key, lib, mode))
                if o is None:
                    continue
                cells = [
                    f"{v:.3f}" if o.status == "ok" else o.status
                    for v in (o.import_s, o.build_s, o.run_s)
                ]
                wall = f"{o.wall_s:.3f}" if not math.isnan(o.wall_s) else "—"
                lines.append(
                    f"| {lib} | {case.workload} | {case.label} | {mode} | "
                    + " | ".join(cells)
                    + f" | {wall} |"
                )
    return "\n".join(lines)


def render_problems(plan: Sequence[Case], results: Results) -> str:
    """Errors, timeouts and wrong values, with identical stderr excerpts shown only once."""
    seen: dict[str, list[str]] = {}
    for case in plan:
        for lib in case.libs:
            for mode in case.modes:
                o = results.get((case.key, lib, mode))
                if o is None or o.status in ("ok", "skipped"):
                    continue
                seen.setdefault(f"[{o.status}] {o.message}", []).append(f"{lib} {case.key} {mode}")
    blocks = []
    for message, where in seen.items():
        first, _, rest = message.partition("\n")
        body = textwrap.indent(rest, "    ") if rest else ""
        blocks.append(f"- {', '.join(where)}: {first}\n" + (f"\n{body}\n" if body else ""))
    return "\n".join(blocks)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f"Benchmark pytest_taskproc against taskproc=={ORIGINAL_VERSION}."
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: W1 n=20 and W2 N=100 only (no W3/W4)"
    )
    parser.add_argument(
        "--only", default="W1,W2,W3,W4", help="comma-separated workloads to run (default: all)"
    )
    parser.add_argument(
        "--skip-original",
        action="store_true",
        help="do not install/run the original taskproc (ours only)",
    )
    parser.add_argument(
        "--skip-ours", action="store_true", help="do not run pytest_taskproc (original only)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="per-measurement timeout in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="repeat each measurement N times and keep the best"
    )
    parser.add_argument(
        "--temp-venv",
        action="store_true",
        help=f"build the original's venv in a temp dir instead of {CACHED_VENV}",
    )
    parser.add_argument(
        "--keep-tmp",
        action="store_true",
        help="keep the temporary directory (task modules, caches) for debugging",
    )
    args = parser.parse_args(argv)
    args.workloads = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    unknown = args.workloads - {"W1", "W2", "W3", "W4"}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the selected workloads; exits nonzero only if some library computed a wrong value."""
    started = time.perf_counter()
    load_before = _load_average()
    args = parse_args(argv)
    tmp_root = Path(tempfile.mkdtemp(prefix="taskproc-bench-"))
    try:
        libs: dict[LibName, Lib] = {"raw": Lib("raw", sys.executable, "")}
        if not args.skip_ours:
            libs["ours"] = Lib("ours", sys.executable, "pytest_taskproc")
        if not args.skip_original:
            venv_dir = tmp_root / "venv-original" if args.temp_venv else CACHED_VENV
            libs["original"] = Lib("original", str(ensure_original_venv(venv_dir)), "taskproc")

        spin_iterations = None
        if "W3" in args.workloads and not args.quick:
            spin_iterations = calibrate_spin()
        plan = build_plan(args.workloads, args.quick, spin_iterations)
        if not plan:
            print("nothing to run (note: --quick only covers W1 and W2)")
            return 0

        results: Results = {}
        for case in plan:
            for lib_name in case.libs:
                lib = libs.get(lib_name)
                if lib is None:
                    continue
                outcomes = run_case(case, lib, tmp_root, args.timeout, args.repeat)
                for mode, outcome in outcomes.items():
                    results[(case.key, lib_name, mode)] = outcome

        print(f"# pytest_taskproc vs taskproc {ORIGINAL_VERSION}\n")
        print(
            f"Python {platform.python_version()} on {platform.platform()}, "
            f"{os.cpu_count()} CPUs; max_workers={DEFAULT_WORKERS} unless stated; "
            f"times are the `run_graph` call only, best of {args.repeat}."
        )
        if spin_iterations is not None:
            print(f"W3 spin iterations per task: {spin_iterations:,} (~0.5 s each).")
        print()
        print(render_table(plan, results))
        problems = render_problems(plan, results)
        if problems:
            print("\n## Problems\n")
            print(problems)
        print("\n## Details\n")
        print(render_details(plan, results))
        print(
            f"\nTotal wall time: {time.perf_counter() - started:.1f} s; "
            f"1-min load average {load_before} at start, {_load_average()} at end "
            "(other CPU users skew the timings, W3 most of all)."
        )
        wrong = [k for k, o in results.items() if o.status == "wrong"]
        return 1 if wrong else 0
    finally:
        if args.keep_tmp:
            _progress(f"kept {tmp_root}")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
