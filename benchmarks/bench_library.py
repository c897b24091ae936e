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

``--baseline-src DIR`` adds a third library, the ``pytest_taskproc`` of another source tree
(say, the previous version), run by the same interpreter with ``DIR`` first on
``PYTHONPATH``; its measurements are interleaved with ours so that both see the same
machine load, and the report adds the ``ours / baseline`` ratio and its regression goals.

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
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

ORIGINAL_VERSION = "0.11.2"
BENCH_DIR = Path(__file__).resolve().parent
CACHED_VENV = BENCH_DIR / f".venv-taskproc-{ORIGINAL_VERSION}"
RESULT_MARKER = "BENCH_RESULT_JSON:"
TASK_MODULE = "bench_tasks"
DEFAULT_TIMEOUT = 600.0
DEFAULT_WORKERS = 2
RAW_KEY = "W4:raw pickles (reference)"

LibName = Literal["original", "ours", "baseline", "raw"]
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
package = sys.modules.get(spec["package"]) if spec["package"] else None
out = {{"import_s": t1 - t0, "build_s": t2 - t1, "run_s": t3 - t2, "result": result,
        "package_file": getattr(package, "__file__", None)}}
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


def choose_without_read_audit(package: str) -> str:
    """W1 with ``Context.audit_reads = False`` (set on import, so in pool workers too)."""
    return (
        choose_module(package)
        + "\nfrom pytest_taskproc import Context\n\nContext.audit_reads = False\n"
    )


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


def input_file_module(package: str) -> str:
    """W5: a task with a 1 GiB ``InputFile``; a warm run must not read the file again."""
    return textwrap.dedent(f"""
        import os
        import time
        from pathlib import Path

        from {package} import InputFile, Requires, TaskBase

        DATA = Path(__file__).parent / "big.bin"


        def make_data(size: int) -> None:
            # Real blocks (not a sparse file, which reads faster than a disk), written
            # quickly; dated a minute back, so the file is not "racily" new when hashed.
            if DATA.exists() and DATA.stat().st_size == size:
                return
            block = bytearray(os.urandom(1 << 20))
            with open(DATA, "wb") as handle:
                for i in range(size >> 20):
                    block[:8] = i.to_bytes(8, "little")
                    handle.write(block)
            old = time.time() - 60
            os.utime(DATA, (old, old))


        class Scan(TaskBase):
            data: Requires[Path]

            def build_task(self, size: int) -> None:
                self.data = InputFile("big.bin")
                self.size = size

            def run_task(self) -> int:
                return self.data.stat().st_size


        def make_root(size: int) -> Scan:
            make_data(size)
            return Scan(size)
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
    libs: tuple[LibName, ...] = ("original", "ours", "baseline")

    @property
    def key(self) -> str:
        return f"{self.workload}:{self.label}"


def build_plan(workloads: set[str], quick: bool, spin_iterations: int | None) -> list[Case]:
    """Lists the cases to run; ``quick`` keeps only the smallest sizes of W1 and W2."""
    plan: list[Case] = []
    if "W1" in workloads:
        for n in [20] if quick else [20, 40, 60]:
            plan.append(Case("W1", f"n={n}", choose_module, {"n": n}, _const(math.comb(n, n // 2))))
        if not quick:
            # The same run with the audit of undeclared reads off: what the audit hook costs.
            plan.append(
                Case(
                    "W1",
                    "n=60 read audit off",
                    choose_without_read_audit,
                    {"n": 60},
                    _const(math.comb(60, 30)),
                    modes=("cold",),
                    libs=("ours",),
                )
            )
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
                RAW_KEY.partition(":")[2],
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
    if "W5" in workloads:
        size = 2**30
        plan.append(
            Case(
                "W5",
                "InputFile 1 GiB",
                input_file_module,
                {"size": size},
                _const(size),
                libs=("ours",),
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
    """An interpreter plus the package name the generated module imports from.

    ``pythonpath`` goes in front of ``PYTHONPATH``: that is how the "baseline" library (an
    older source tree of ``pytest_taskproc``) shadows the installed one under the same
    interpreter.  ``origin`` is the directory the package was found to be imported from
    before measuring; every measurement checks it again, because a wrong origin would
    silently compare a library with itself.
    """

    name: LibName
    python: str
    package: str
    pythonpath: tuple[str, ...] = ()
    origin: Path | None = None


@dataclass
class Outcome:
    """What one fresh-subprocess measurement produced.

    ``runs_s`` holds the ``run_graph`` times of every successful round of the same cell; it is
    filled in on the outcome that is kept (the best one), for the details table.
    """

    status: Status
    run_s: float = math.nan
    import_s: float = math.nan
    build_s: float = math.nan
    wall_s: float = math.nan
    result: object = None
    message: str = ""
    runs_s: tuple[float, ...] = ()


def subprocess_env(cache_dir: Path, module_dir: Path, lib: Lib) -> dict[str, str]:
    """A clean environment: our own cache dir, no inherited ``CP_*`` knobs or PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CP_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    env["CP_CACHE_DIR"] = str(cache_dir)
    env["PYTHONPATH"] = os.pathsep.join([*lib.pythonpath, str(module_dir)])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def locate_package(lib: Lib, tmp_root: Path) -> Path:
    """Imports the library's package the way a measurement will and returns its directory."""
    probe_dir = Path(tempfile.mkdtemp(prefix=f"probe-{lib.name}-", dir=tmp_root))
    res = subprocess.run(
        [lib.python, "-c", f"import {lib.package}; print({lib.package}.__file__)"],
        cwd=probe_dir,
        env=subprocess_env(probe_dir, probe_dir, lib),
        capture_output=True,
        text=True,
    )
    shutil.rmtree(probe_dir, ignore_errors=True)
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        sys.exit(f"{lib.name}: cannot import {lib.package} with {lib.python}:\n{res.stderr}")
    return Path(lines[-1]).resolve().parent


def check_baseline_origin(libs: dict[LibName, Lib], src: Path) -> None:
    """Fails the run unless the baseline really comes from ``src`` and ours from elsewhere."""
    baseline = libs["baseline"].origin
    if baseline != src / "pytest_taskproc":
        sys.exit(
            f"--baseline-src: pytest_taskproc was imported from {baseline}, not from {src}; "
            "the baseline would not be the library in that directory"
        )
    ours = libs.get("ours")
    if ours is not None and ours.origin == baseline:
        sys.exit(
            f"--baseline-src: the installed pytest_taskproc is the one in {src}, "
            "so ours and the baseline would be the same code"
        )


def precompile(lib: Lib) -> None:
    """Writes the package's bytecode now, so that no measurement pays for compiling it.

    For the baseline this writes ``__pycache__`` (gitignored) into its source tree, exactly as
    its first import would.
    """
    if lib.origin is not None:
        subprocess.run([lib.python, "-m", "compileall", "-q", str(lib.origin)], check=True)


def source_revision(src: Path) -> str:
    """``git describe`` of the baseline tree, so the report says which version it measured."""
    res = subprocess.run(
        ["git", "-C", str(src), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return res.stdout.strip() if res.returncode == 0 else "not a git checkout"


def measure(lib: Lib, module_dir: Path, cache_dir: Path, case: Case, timeout: float) -> Outcome:
    """Runs one measurement in a fresh process (group) and checks the returned value.

    The subprocess gets its own session so that, on timeout, its process-pool workers can be
    killed together with it instead of lingering and skewing the following measurements.
    """
    spec = {
        "params": case.params,
        "run_kwargs": {"max_workers": case.max_workers},
        "package": lib.package,
    }
    cmd = [lib.python, "-c", RUNNER_SOURCE, json.dumps(spec)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=module_dir,
        env=subprocess_env(cache_dir, module_dir, lib),
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
    imported = payload["package_file"]
    if lib.origin is not None and (
        imported is None or Path(imported).resolve().parent != lib.origin
    ):
        return Outcome(
            "error",
            wall_s=wall,
            message=f"{lib.package} was imported from {imported}, expected {lib.origin}",
        )
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


def run_workload(
    cases: Sequence[Case], libs: dict[LibName, Lib], tmp_root: Path, timeout: float, repeat: int
) -> Results:
    """Runs every (case, library) pair of one workload in interleaved rounds; best of ``repeat``.

    Round 1 runs each pair once, then round 2 does it again, and so on (A B A B, not A A B B):
    other processes on the machine come and go, and interleaving makes the libraries being
    compared share that load instead of one of them getting all of a busy minute.  Each cell
    keeps its fastest successful round (the minimum is the least load-dependent estimate of
    what the code costs); a failure wins over any time, because it is what must be reported.
    """
    units = [(case, libs[name]) for case in cases for name in case.libs if name in libs]
    module_dirs: dict[tuple[str, LibName], Path] = {}
    for case, lib in units:
        module_dir = Path(tempfile.mkdtemp(prefix=f"{lib.name}-", dir=tmp_root))
        (module_dir / f"{TASK_MODULE}.py").write_text(case.module(lib.package))
        module_dirs[(case.key, lib.name)] = module_dir
    rounds: dict[tuple[str, LibName, Mode], list[Outcome]] = {}
    failed: set[tuple[str, LibName]] = set()
    try:
        for _ in range(repeat):
            for case, lib in units:
                if (case.key, lib.name) in failed:
                    continue  # repeating a failure only burns time
                outcomes = run_round(
                    case, lib, module_dirs[(case.key, lib.name)], tmp_root, timeout
                )
                for mode, outcome in outcomes.items():
                    rounds.setdefault((case.key, lib.name, mode), []).append(outcome)
                if any(o.status in ("timeout", "error", "wrong") for o in outcomes.values()):
                    failed.add((case.key, lib.name))
    finally:
        for module_dir in module_dirs.values():
            shutil.rmtree(module_dir, ignore_errors=True)
    return {key: _keep_best(outcomes) for key, outcomes in rounds.items()}


def run_round(
    case: Case, lib: Lib, module_dir: Path, tmp_root: Path, timeout: float
) -> dict[Mode, Outcome]:
    """Cold run on a fresh cache, then warm run(s) on the same cache.

    A warm run after a failed cold run would silently be a cold run, so it is skipped.
    """
    cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=tmp_root))
    outcomes: dict[Mode, Outcome] = {}
    try:
        for mode in case.modes:
            if any(o.status != "ok" for o in outcomes.values()):
                outcomes[mode] = Outcome("skipped", message="cold run failed")
                continue
            outcome = measure(lib, module_dir, cache_dir, case, timeout)
            _progress(
                f"  {case.workload} {case.label:<24} {lib.name:<8} {mode:<4} "
                f"{_fmt_outcome(outcome)}"
            )
            outcomes[mode] = outcome
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return outcomes


def _keep_best(outcomes: Sequence[Outcome]) -> Outcome:
    """The first failure if any, else the fastest round (carrying all rounds' times)."""
    for o in outcomes:
        if o.status in ("timeout", "error", "wrong"):
            return o
    ok = [o for o in outcomes if o.status == "ok"]
    if not ok:
        return outcomes[0]
    best = min(ok, key=lambda o: o.run_s)
    return replace(best, runs_s=tuple(o.run_s for o in ok))


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

# The libraries that get a time column in the main table, in this order.
COLUMNS: tuple[tuple[LibName, str], ...] = (
    ("original", "Original"),
    ("ours", "Ours"),
    ("baseline", "Baseline"),
)


@dataclass
class Goal:
    """A performance target on one (case, cold/warm) cell.

    ``check`` returns what was measured (as text) and the verdict, ``None`` meaning no data.
    ``needs`` lists the libraries without which the goal cannot be judged at all (reported as
    ``n/a``, not as a failure, when they were not selected).
    """

    key: str
    mode: Mode
    text: str
    check: Callable[[Results], tuple[str, bool | None]] = field(repr=False)
    needs: tuple[LibName, ...] = ("ours",)


def _lib_time(results: Results, key: str, lib: LibName, mode: Mode = "cold") -> float | None:
    o = results.get((key, lib, mode))
    return o.run_s if o is not None and o.status == "ok" else None


def _ratio(
    results: Results, num: tuple[str, LibName], den: tuple[str, LibName], mode: Mode = "cold"
) -> tuple[float, float | None] | None:
    """``num / den`` as (best / best, median of the per-round ratios), None without data.

    The rounds of one workload are interleaved, so round i of ``num`` ran right next to
    round i of ``den``, under much the same load.  The best-of ratio can pair a lucky
    quiet minute of one side with a busy one of the other; the median of the per-round
    ratios cannot, so goals on ratios are judged on it once there are two rounds or more.
    """
    a = results.get((num[0], num[1], mode))
    b = results.get((den[0], den[1], mode))
    if a is None or b is None or a.status != "ok" or b.status != "ok" or b.run_s <= 0:
        return None
    median = None
    if len(a.runs_s) == len(b.runs_s) >= 2:  # rounds only go missing after a failure
        median = statistics.median(x / y for x, y in zip(a.runs_s, b.runs_s, strict=True))
    return a.run_s / b.run_s, median


def _ratio_note(found: tuple[float, float | None]) -> str:
    best, median = found
    if median is None:
        return f"{best:.2f}x"
    return f"{median:.2f}x (best/best {best:.2f}x)"


def _ratio_verdict(found: tuple[float, float | None], maximum: float) -> bool:
    best, median = found
    return (best if median is None else median) <= maximum


def absolute_goal(key: str, mode: Mode, limit: float) -> Goal:
    """Ours must finish ``run_graph`` under ``limit`` seconds."""

    def check(results: Results) -> tuple[str, bool | None]:
        t = _lib_time(results, key, "ours", mode)
        return ("", None) if t is None else (f"{t:.3f} s", t < limit)

    return Goal(key, mode, f"ours < {limit:g} s", check)


def speedup_goal(minimum: float) -> Goal:
    """Ours with 2 workers must be ``minimum`` times faster than with 1 worker."""

    def check(results: Results) -> tuple[str, bool | None]:
        notes = []
        verdict: bool | None = None
        for lib in ("ours", "original", "baseline"):
            one = _lib_time(results, "W3:workers=1", lib)
            two = _lib_time(results, "W3:workers=2", lib)
            if one is not None and two is not None:
                notes.append(f"{lib} {one / two:.2f}x")
                if lib == "ours":
                    verdict = one / two >= minimum
        return "; ".join(notes), verdict

    return Goal("W3:workers=2", "cold", f"ours 2w/1w ≥ {minimum:g}x", check)


def raw_ratio_goal(key: str, maximum: float) -> Goal:
    """Ours must stay within ``maximum`` times the framework-free raw-pickle reference."""

    def check(results: Results) -> tuple[str, bool | None]:
        if _lib_time(results, RAW_KEY, "raw") is None:
            return "no raw-pickle time", None
        notes = []
        verdict: bool | None = None
        for lib in ("ours", "baseline", "original"):
            found = _ratio(results, (key, lib), (RAW_KEY, "raw"))
            if found is not None:
                notes.append(f"{lib} {_ratio_note(found)}")
                if lib == "ours":
                    verdict = _ratio_verdict(found, maximum)
        return "; ".join(notes), verdict

    return Goal(key, "cold", f"ours ≤ {maximum:g}x raw", check, needs=("ours", "raw"))


def baseline_ratio_goal(key: str, mode: Mode, maximum: float) -> Goal:
    """Ours must stay within ``maximum`` times the previous version (``--baseline-src``)."""

    def check(results: Results) -> tuple[str, bool | None]:
        found = _ratio(results, (key, "ours"), (key, "baseline"), mode)
        if found is None:
            return "", None
        return _ratio_note(found), _ratio_verdict(found, maximum)

    return Goal(key, mode, f"ours / baseline ≤ {maximum:g}x", check, needs=("ours", "baseline"))


GOALS: tuple[Goal, ...] = (
    absolute_goal("W1:n=60", "cold", 1.5),
    baseline_ratio_goal("W1:n=60", "warm", 1.25),
    absolute_goal("W2:N=5000", "cold", 3.0),
    baseline_ratio_goal("W2:N=5000", "cold", 1.15),
    absolute_goal("W2:N=5000", "warm", 0.5),
    baseline_ratio_goal("W2:N=5000", "warm", 1.25),
    speedup_goal(1.8),
    raw_ratio_goal("W4:default compression", 1.15),
    raw_ratio_goal("W4:compress_level=0", 1.3),
)


def _cell(o: Outcome | None) -> str:
    if o is None:
        return "skipped"
    if o.status == "ok":
        return f"{o.run_s:.3f}"
    return o.status


def _ratio_cells(
    results: Results, key: str, mode: Mode, num: LibName, den: LibName, paired: bool
) -> list[str]:
    found = _ratio(results, (key, num), (key, den), mode)
    if found is None:
        return ["—", "—"] if paired else ["—"]
    best, median = found
    cells = [f"{best:.2f}x"]
    if paired:
        cells.append("—" if median is None else f"{median:.2f}x")
    return cells


def render_table(plan: Sequence[Case], results: Results, ran: Sequence[LibName]) -> str:
    """The markdown report: one row per (case, cold/warm), a time column per library run.

    ``orig / ours`` is the speedup over taskproc (higher is better); ``ours / baseline`` is
    the slowdown against the previous version (lower is better), as the ratio of the two
    best times and as the median of the per-round ratios (see ``_ratio``).
    """
    columns = [(lib, title) for lib, title in COLUMNS if lib in ran]
    ratios: list[tuple[list[str], LibName, LibName, bool]] = []
    if "original" in ran and "ours" in ran:
        ratios.append((["Speedup (orig / ours)"], "original", "ours", False))
    if "baseline" in ran and "ours" in ran:
        titles = ["ours / baseline (best)", "ours / baseline (median of rounds)"]
        ratios.append((titles, "ours", "baseline", True))
    header = ["Workload", "Parameter", "Run"] + [f"{title} (s)" for _, title in columns]
    header += [title for titles, _, _, _ in ratios for title in titles]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]
    for case in plan:
        for mode in case.modes:
            cells = [case.workload, case.label, mode]
            if case.libs == ("raw",):
                raw = results.get((case.key, "raw", mode))
                ref = f"{_cell(raw)} s" if raw and raw.status == "ok" else _cell(raw)
                cells += [f"raw: {ref}"] + ["—"] * (len(header) - 4)
            else:
                cells += [_cell(results.get((case.key, lib, mode))) for lib, _ in columns]
                for _, num, den, paired in ratios:
                    cells += _ratio_cells(results, case.key, mode, num, den, paired)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_goals(plan: Sequence[Case], results: Results, ran: Sequence[LibName]) -> str:
    """One row per goal whose cell is in the plan, with what was measured and the verdict."""
    cases = {case.key: case for case in plan}
    lines = [
        "| Workload | Parameter | Run | Goal | Measured | Result |",
        "|---|---|---|---|---|---|",
    ]
    for goal in GOALS:
        case = cases.get(goal.key)
        if case is None or goal.mode not in case.modes:
            continue
        missing = [lib for lib in goal.needs if lib not in ran]
        if missing:
            hint = " (needs --baseline-src)" if "baseline" in missing else ""
            note, verdict_text = "", "n/a" + hint
        else:
            note, verdict = goal.check(results)
            verdict_text = {True: "PASS", False: "FAIL", None: "FAIL (no data)"}[verdict]
        lines.append(
            f"| {case.workload} | {case.label} | {goal.mode} | {goal.text} "
            f"| {note} | {verdict_text} |"
        )
    if len(lines) == 2:
        return "No goal covers the selected cases."
    return "\n".join(lines)


def render_details(plan: Sequence[Case], results: Results) -> str:
    """Per-measurement phase breakdown: where the time goes besides ``run_graph``."""
    lines = [
        "| Library | Workload | Parameter | Run | import (s) | build (s) | run_graph (s) "
        "| process wall (s) | run_graph, every round (s) |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
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
                every = " ".join(f"{t:.3f}" for t in o.runs_s)
                lines.append(
                    f"| {lib} | {case.workload} | {case.label} | {mode} | "
                    + " | ".join(cells)
                    + f" | {wall} | {every} |"
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
        "--only", default="W1,W2,W3,W4,W5", help="comma-separated workloads to run (default: all)"
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
        "--repeat",
        type=int,
        default=1,
        help="run N interleaved rounds of each workload and keep each measurement's best",
    )
    parser.add_argument(
        "--baseline-src",
        metavar="DIR",
        type=Path,
        help="also measure the pytest_taskproc in source tree DIR (e.g. a checkout of the "
        "previous version), imported by putting DIR first on PYTHONPATH; adds the "
        "'ours / baseline' ratio and its goals",
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
    unknown = args.workloads - {"W1", "W2", "W3", "W4", "W5"}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.baseline_src is not None:
        args.baseline_src = args.baseline_src.resolve()
        if not (args.baseline_src / "pytest_taskproc" / "__init__.py").is_file():
            parser.error(f"--baseline-src: {args.baseline_src} has no pytest_taskproc/__init__.py")
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
        if args.baseline_src is not None:
            libs["baseline"] = Lib(
                "baseline", sys.executable, "pytest_taskproc", pythonpath=(str(args.baseline_src),)
            )
        if not args.skip_original:
            venv_dir = tmp_root / "venv-original" if args.temp_venv else CACHED_VENV
            libs["original"] = Lib("original", str(ensure_original_venv(venv_dir)), "taskproc")
        for name, lib in libs.items():
            if lib.package:
                libs[name] = replace(lib, origin=locate_package(lib, tmp_root))
        if args.baseline_src is not None:
            check_baseline_origin(libs, args.baseline_src)
        for name in ("ours", "baseline"):
            if name in libs:
                precompile(libs[name])

        spin_iterations = None
        if "W3" in args.workloads and not args.quick:
            spin_iterations = calibrate_spin()
        plan = build_plan(args.workloads, args.quick, spin_iterations)
        if not plan:
            print("nothing to run (note: --quick only covers W1 and W2)")
            return 0

        results: Results = {}
        for workload in dict.fromkeys(case.workload for case in plan):
            cases = [case for case in plan if case.workload == workload]
            results.update(run_workload(cases, libs, tmp_root, args.timeout, args.repeat))

        ran = list(libs)
        print("# pytest_taskproc benchmarks\n")
        print(
            f"Python {platform.python_version()} on {platform.platform()}, "
            f"{os.cpu_count()} CPUs; max_workers={DEFAULT_WORKERS} unless stated; "
            "times are the `run_graph` call only, the best of "
            f"{args.repeat} interleaved round{'s' if args.repeat > 1 else ''}; "
            f"1-min load average at start: {load_before}."
        )
        print()
        for name in ("original", "ours", "baseline"):
            if name in libs:
                print(f"- {name}: `{libs[name].package}` from `{libs[name].origin}`", end="")
                if name == "original":
                    print(f" (taskproc {ORIGINAL_VERSION})", end="")
                if name == "baseline":
                    print(f" (revision {source_revision(args.baseline_src)})", end="")
                print()
        if spin_iterations is not None:
            print(f"\nW3 spin iterations per task: {spin_iterations:,} (~0.5 s each).")
        print()
        print(render_table(plan, results, ran))
        print("\n## Goals\n")
        print(render_goals(plan, results, ran))
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
