"""``python -m pytest_taskproc.app TASKFILE``: run one task of a task file from the shell.

Options follow the original ``taskproc.app``; the cache defaults to ``.cache``
next to the task file, and the entry-point task is recomputed each time unless
``--dont-force-entrypoint`` is given.  ``--manifest FILE`` writes the records
of the entry task's graph after the run; ``--verify`` recomputes every cached
task of the graph instead of running it, and compares (see ``provenance.py``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .context import Context
from .graph import TaskGraph
from .provenance import Status, build_manifest, verify_task, write_manifest
from .ratelimit import check_limits
from .spec import config_of, is_task_class


def _rate_limits(text: str) -> dict[str, int]:
    try:
        return check_limits(json.loads(text))
    except (ValueError, AttributeError) as exc:
        raise argparse.ArgumentTypeError(f"invalid rate limits {text!r}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_taskproc.app",
        description="Run a task (default: Main) of a task file and print its output.",
    )
    parser.add_argument("taskfile", type=Path, help="Python file defining the task")
    parser.add_argument("-e", "--entrypoint", default="Main", help="task class to run")
    parser.add_argument(
        "-t",
        "--exec-type",
        choices=["process", "thread"],
        default="process",
        help="executor type (default: process)",
    )
    parser.add_argument(
        "-w",
        "--max-workers",
        type=int,
        default=-1,
        help="number of workers; negative counts back from the CPU count (default: -1, all)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="default: TASKFILE's dir/.cache"
    )
    parser.add_argument(
        "--rate-limits", type=_rate_limits, default=None, help="JSON, e.g. '{\"<gpu>\": 1}'"
    )
    parser.add_argument(
        "-D",
        "--detect-source-change",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute tasks whose code changed (default: on, unless CP_DETECT_SOURCE_CHANGE=0)",
    )
    parser.add_argument(
        "--dont-force-entrypoint",
        action="store_true",
        help="do not recompute the entry-point task when its result is fresh",
    )
    parser.add_argument(
        "-l", "--loglevel", choices=["debug", "info", "warning", "error"], default="warning"
    )
    parser.add_argument("--dont-show-progress", action="store_true", help="no progress line")
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        metavar="FILE",
        help="after the run, write the records of the entry task's graph to FILE (JSON)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="instead of running, recompute every cached task of the graph in a scratch "
        "folder and compare with the cached value; exit status 1 if one differs",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.loglevel.upper()))
    taskfile: Path = args.taskfile.resolve()
    if not taskfile.is_file():
        print(f"error: task file {taskfile} does not exist", file=sys.stderr)
        return 2
    Context.executor_name = args.exec_type
    Context.max_workers = args.max_workers
    Context.cache_dir = args.cache_dir if args.cache_dir is not None else taskfile.parent / ".cache"
    sys.path.insert(0, str(taskfile.parent))
    module = importlib.import_module(taskfile.stem)
    entry = getattr(module, args.entrypoint, None)
    if not is_task_class(entry):
        print(
            f"error: {taskfile} has no task class {args.entrypoint!r} (use -e NAME)",
            file=sys.stderr,
        )
        return 2
    required = _required_arguments(entry)
    if required:
        runnable = [
            name
            for name, value in vars(module).items()
            if is_task_class(value)
            and value.__module__ == module.__name__
            and not _required_arguments(value)
        ]
        print(
            f"error: {args.entrypoint} needs arguments ({', '.join(required)}) and the app runs "
            "a task without arguments; run a class that needs none with -e NAME"
            + (f" (here: {', '.join(runnable)})" if runnable else "")
            + f", or write one whose build_task requires {args.entrypoint}(...)",
            file=sys.stderr,
        )
        return 2
    task = entry()
    graph = TaskGraph([task])
    tasks: list[Any] = [graph.tasks[key] for key in graph.order]  # upstream first
    if args.verify:
        return _verify(tasks, args.manifest)
    before = [t.task_record for t in tasks] if args.manifest else []
    try:
        if not args.dont_force_entrypoint:
            task.clear_task()
        task.run_graph(
            rate_limits=args.rate_limits,
            detect_source_change=args.detect_source_change,
            show_progress=not args.dont_show_progress,
        )
    finally:
        # Written after a failed run too: the records say what was made before it failed.
        if args.manifest:
            statuses = {t: _run_status(before[i], t.task_record) for i, t in enumerate(tasks)}
            write_manifest(args.manifest, build_manifest(tasks, statuses=statuses))
    print("==== STDOUT ====")
    print(task.task_stdout.read_text(), end="")
    print("==== STDERR ====")
    print(task.task_stderr.read_text(), end="")
    return 0


def _required_arguments(cls: Any) -> list[str]:
    """The parameters of ``build_task`` that have no default."""
    return [
        p.name
        for p in config_of(cls).signature.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _run_status(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    if after is None:
        return "missing"
    return "cached" if after == before else "computed"


def _verify(tasks: list[Any], manifest: Path | None) -> int:
    """One line per task of the graph, upstream first; 1 if a value was not reproduced."""
    results = []
    for task in tasks:
        result = verify_task(task)
        print(result.describe(), flush=True)
        results.append(result)
    counts = {status: 0 for status in Status}
    for result in results:
        counts[result.status] += 1
    print("verify: " + ", ".join(f"{n} {status.value}" for status, n in counts.items()))
    if manifest is not None:
        statuses = {r.task: r.status.value for r in results}
        write_manifest(manifest, build_manifest(tasks, statuses=statuses))
    return 1 if counts[Status.NOT_REPRODUCIBLE] else 0


if __name__ == "__main__":
    sys.exit(main())
