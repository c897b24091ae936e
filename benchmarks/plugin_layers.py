"""Where a cold plugin item's time goes: each layer of ``pytest --taskproc``, timed.

    python benchmarks/plugin_layers.py [--n 60] [--runs 5] [--where disk|tmpfs]

Runs the W1 binomial graph (``Choose(n, n // 2)``, 961 items at n=60) cold, and 961
trivial plain tests, in fresh processes. A ``conftest.py`` wraps the functions that
mark the layers (pytest's ``runtestprotocol``; the plugin's item runner; the run's
``settle``; the scheduler's pass; ``run_job``; the job under the task's lock; the
job's ``compute``) with ``time.perf_counter`` and prints the seconds spent inside
each. The table shows medians over the runs, the layer's own share (its time minus
the next layer's) and what it costs per item. Wrapping adds about a microsecond per
call, so the inner layers read a little high.

The layers name functions of the package: when one is renamed, this script says which
and stops, rather than timing something else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_plugin import BASE_ARGS, BINOMIAL, PLAIN_TESTS

#: (label, module, attribute path): outermost first; each one runs inside the one above
LAYERS = [
    ("pytest's protocol for the item", "_pytest.runner", "runtestprotocol"),
    ("the plugin's item runner", "pytest_taskproc.plugin.runtest", "ItemRunner.run"),
    ("the run's settle (verdict)", "pytest_taskproc.execute", "Run.settle"),
    ("the scheduler's pass", "pytest_taskproc.scheduler", "GraphRun.run"),
    ("run_job: lock, folder, args.json", "pytest_taskproc.worker", "run_job"),
    ("under the lock: failure markers", "pytest_taskproc.worker", "_compute_under_lock"),
    ("compute: inputs, run_task, value, record", "pytest_taskproc.worker", "compute"),
]
#: timed on their own, not nested in the table
EXTRA = [
    ("planning (once)", "pytest_taskproc.plugin.plan", "RunPlan.ensure_planned"),
    ("upstream values read", "pytest_taskproc.job", "_read_upstream"),
    ("run_task with its slots bound", "pytest_taskproc.job", "run_bound"),
    ("value written", "pytest_taskproc.cache", "ClassStore.write_value"),
    ("record written", "pytest_taskproc.cache", "ClassStore.commit"),
    ("report of the verdict", "pytest_taskproc.plugin.runtest", "report_verdict"),
]

CONFTEST = """
import atexit, functools, importlib, json, time

TIMES = {{}}


def _wrap(label, module, path):
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label] = TIMES.get(label, 0.0) + time.perf_counter() - start

    setattr(owner, name, timed)


for label, module, path in {layers!r}:
    try:
        _wrap(label, module, path)
    except (ImportError, AttributeError) as exc:
        if not label.startswith("pytest's") and {plugin!r}:
            raise SystemExit(f"layer {{label!r}}: {{module}}.{{path}} not found ({{exc}})")
        if label.startswith("pytest's"):
            raise

atexit.register(lambda: print("LAYERS " + json.dumps(TIMES)))
"""


def run(folder: Path, args: list[str]) -> dict[str, float]:
    cache = folder / ".cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "CP_CACHE_DIR": str(cache), "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *BASE_ARGS, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    for line in done.stdout.splitlines():
        if line.startswith("LAYERS "):
            times: dict[str, float] = json.loads(line[len("LAYERS ") :])
            return times
    raise SystemExit(f"no timings printed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def folder_with(base: Path, files: dict[str, str], plugin: bool) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="layers-", dir=base))
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    (folder / "pytest.ini").write_text("[pytest]\n")
    layers = LAYERS + EXTRA if plugin else LAYERS[:1]
    (folder / "conftest.py").write_text(CONFTEST.format(layers=layers, plugin=plugin))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="W1's n (60: 961 items)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--where", choices=("disk", "tmpfs"), default="tmpfs")
    args = parser.parse_args()
    base = Path("/dev/shm" if args.where == "tmpfs" else tempfile.gettempdir())
    ours = folder_with(base, {"task_w1.py": BINOMIAL.format(n=args.n)}, plugin=True)
    plain: Path | None = None
    ours_runs: list[dict[str, float]] = []
    plain_runs: list[dict[str, float]] = []
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pytest", *BASE_ARGS, "--taskproc", "--collect-only", "-q"],
            cwd=ours,
            capture_output=True,
            text=True,
            env={**os.environ, "CP_CACHE_DIR": str(ours / ".cache")},
        )
        items = sum(1 for line in listed.stdout.splitlines() if "::" in line)
        plain = folder_with(base, {"test_plain.py": PLAIN_TESTS.format(n=items)}, plugin=False)
        for _ in range(args.runs):
            ours_runs.append(run(ours, ["--taskproc"]))
            plain_runs.append(run(plain, ["-p", "no:taskproc"]))
    finally:
        shutil.rmtree(ours, ignore_errors=True)
        if plain is not None:
            shutil.rmtree(plain, ignore_errors=True)

    def median(runs: list[dict[str, float]], label: str) -> float:
        return statistics.median(r.get(label, 0.0) for r in runs)

    print(f"cold W1 n={args.n}: {items} items on {args.where}, median of {args.runs} runs")
    print()
    print("| layer | inside it (s) | its own (s) | own per item (µs) |")
    print("|---|---:|---:|---:|")
    inside = [median(ours_runs, label) for label, _, _ in LAYERS]
    for i, (label, _, _) in enumerate(LAYERS):
        own = inside[i] - (inside[i + 1] if i + 1 < len(inside) else 0.0)
        print(f"| {label} | {inside[i]:.3f} | {own:.3f} | {own / items * 1e6:.0f} |")
    plain_protocol = median(plain_runs, LAYERS[0][0])
    print(
        f"| plain pytest's protocol for {items} trivial tests | {plain_protocol:.3f} | "
        f"| {plain_protocol / items * 1e6:.0f} |"
    )
    print()
    print("| inside the layers | seconds | per item (µs) |")
    print("|---|---:|---:|")
    for label, _, _ in EXTRA:
        value = median(ours_runs, label)
        print(f"| {label} | {value:.3f} | {value / items * 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
