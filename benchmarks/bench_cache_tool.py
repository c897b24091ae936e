"""Time ``taskproc-cache ls`` and ``du`` on a cache of 100,000 results (goal: ls within 5 s).

The cache is laid out as a run writes it (``args.json``, ``record.json`` as
``Record.to_json`` writes it, a small ``result.pkl``, stdout for one in ten),
but written directly, since computing 100,000 tasks would time the library
instead of the tool.  By default it goes on a tmpfs mounted for the purpose
(root only), else in a temporary directory (``--dir``).  Each command runs
in a fresh process, as a user runs it; the time includes the interpreter's
start-up.

    python benchmarks/bench_cache_tool.py [--results 100000] [--dir DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_taskproc.identity import encode_key
from pytest_taskproc.record import Record, made_now, new_lineage
from pytest_taskproc.serialize import value_digest

GOAL_SECONDS = 5.0


def build(root: Path, count: int) -> None:
    """``count`` results over two classes, as a run lays them out."""
    made = made_now(0.25, "bench")
    for class_index, name in enumerate(("bench_tasks.Train", "bench_tasks.Score")):
        results = root / "taskproc" / name / "results"
        results.mkdir(parents=True)
        for task_id in range(count // 2):
            key = encode_key({"seed": task_id, "model": "mlp" if task_id % 2 else "linear"})
            data = b"\x80\x05K%d." % (task_id % 100) + bytes(class_index)
            record = Record(
                name=name,
                key=key,
                code="0" * 64,
                code_parts={name: "0" * 64},
                upstream=(),
                digest=value_digest(data),
                size=len(data),
                file="result.pkl",
                stored_size=len(data),
                lineage=new_lineage(),
                made=made,
            )
            folder = results / str(task_id)
            folder.mkdir()
            (folder / "args.json").write_text(key)
            (folder / "result.pkl").write_bytes(data)
            (folder / "record.json").write_text(record.to_json())
            if task_id % 10 == 0:
                (folder / "stdout.txt").write_text("epoch 1 loss 0.5\n")


def timed(root: Path, *command: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest_taskproc.cache", "--cache-dir", str(root), *command],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="build the cache here")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-cache-tool-"))
    mounted = False
    where = options.dir or base
    if options.dir is None:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(base)], capture_output=True
        )
        mounted = done.returncode == 0
    try:
        root = where / "cache"
        start = time.perf_counter()
        build(root, options.results)
        print(f"built {options.results} results in {time.perf_counter() - start:.1f} s under "
              f"{where} ({'tmpfs' if mounted else 'a plain directory'})")  # fmt: skip
        for command in (["ls"], ["ls", "--json"], ["du"]):
            best = min(timed(root, *command)[0] for _ in range(options.repeat))
            goal = "" if command[0] != "ls" else (
                f"  (goal {GOAL_SECONDS:.0f} s: {'PASS' if best <= GOAL_SECONDS else 'FAIL'})"
            )  # fmt: skip
            print(f"taskproc-cache {' '.join(command):<10} {best:6.2f} s{goal}")
        lines = timed(root, "ls")[1].splitlines()
        print("\n".join(["", *lines[:3], "...", lines[-1]]))
    finally:
        if mounted:
            subprocess.run(["umount", str(base)], check=False)
        if options.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
