"""pytest entry point: the ``taskproc`` options, and the plugin object when switched on.

This module stays cheap to import: without ``--taskproc`` or
``--taskproc-clear`` nothing else of the package is imported and no hook
does any work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

GRAPH_SUFFIXES = (".md", ".mmd", ".dot")


def parse_rate_limits(text: str) -> dict[str, int]:
    """``--taskproc-rate-limits``: a JSON object of channel -> positive int."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise pytest.UsageError(
            f"--taskproc-rate-limits: not valid JSON ({exc}): {text!r}"
        ) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 1 for k, v in value.items()
    ):
        raise pytest.UsageError(
            f"--taskproc-rate-limits: expected a JSON object mapping channel names to ints >= 1, "
            f"e.g. '{{\"<gpu>\": 1}}', not {text!r}"
        )
    return value


def parse_executor(text: str) -> str:
    from .executors import check_spec

    try:
        return check_spec(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--taskproc-executor: {exc}") from None


def parse_graph_path(text: str) -> Path:
    path = Path(text)
    if path.suffix not in GRAPH_SUFFIXES:
        raise pytest.UsageError(
            f"--taskproc-graph: {text!r} must end in .md or .mmd (Mermaid) or .dot (Graphviz)"
        )
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("taskproc", "cached task graphs (pytest-taskproc)")
    group.addoption(
        "--taskproc",
        action="store_true",
        default=False,
        help="collect task files and run every task as a test item.",
    )
    group.addoption(
        "--taskproc-clear",
        action="store_true",
        default=False,
        help="clear the cached results of the selected tasks first, so they and their "
        "downstream tasks are recomputed; implies --taskproc.",
    )
    group.addoption(
        "--taskproc-cache-dir",
        metavar="DIR",
        default=None,
        help="cache root (default: ini taskproc_cache_dir, else $CP_CACHE_DIR, "
        "else <rootdir>/.cache).",
    )
    group.addoption(
        "--taskproc-rate-limits",
        metavar="JSON",
        default=None,
        type=parse_rate_limits,
        help="at most N running tasks per channel, e.g. '{\"<gpu>\": 1}'; holds across "
        "xdist workers.",
    )
    group.addoption(
        "--taskproc-no-source-check",
        action="store_true",
        default=False,
        help="do not recompute tasks whose class source code changed.",
    )
    group.addoption(
        "--taskproc-executor",
        metavar="SPEC",
        default=None,
        type=parse_executor,
        help="compute tasks on process[:N], thread[:N] or dask[:ADDRESS] instead of in the "
        "pytest process (dask alone starts a local cluster).",
    )
    group.addoption(
        "--taskproc-graph",
        metavar="FILE",
        default=None,
        type=parse_graph_path,
        help="write the task graph with each task's state to FILE (.md/.mmd Mermaid, .dot "
        "Graphviz).",
    )
    parser.addini(
        "taskproc_files",
        type="args",
        default=["task_*.py", "taskfile.py"],
        help="glob patterns of task files collected with --taskproc.",
    )
    parser.addini("taskproc_cache_dir", default="", help="cache root for --taskproc runs.")
    parser.addini("taskproc_rate_limits", default="", help="JSON rate limits for --taskproc runs.")


def is_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("taskproc") or config.getoption("taskproc_clear"))


def resolve_cache_root(config: pytest.Config) -> Path:
    import os

    chosen = config.getoption("taskproc_cache_dir")
    base = Path(config.invocation_params.dir)
    if not chosen:
        chosen = config.getini("taskproc_cache_dir")
        # Relative to rootdir, like pytest's own cache_dir: running from a
        # subdirectory must find the same cache.
        base = config.rootpath
    if chosen:
        return (base / Path(chosen)).resolve()
    env = os.environ.get("CP_CACHE_DIR")
    if env:
        return Path(env).resolve()
    return Path(config.rootpath, ".cache")


def _check_cache_root(root: Path) -> None:
    import os

    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise pytest.UsageError(f"--taskproc-cache-dir: cannot write to {probe} (for cache {root})")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "taskproc: a task of the task graph (set by pytest-taskproc)"
    )
    if not is_enabled(config):
        return
    limits = config.getoption("taskproc_rate_limits")
    if limits is None and config.getini("taskproc_rate_limits"):
        limits = parse_rate_limits(config.getini("taskproc_rate_limits"))
    root = resolve_cache_root(config)
    _check_cache_root(root)
    # A broken root must not stop the rest of the experiment.
    config.option.continue_on_collection_errors = True
    _default_junit_output(config)
    from .report import TaskprocReporter

    reporter = TaskprocReporter(config, cache_root=root)
    config.pluginmanager.register(reporter, "taskproc-reporter")
    if not _is_xdist_controller(config):
        from .session import TaskprocSession

        session = TaskprocSession(config, root, limits or {}, reporter)
        config.pluginmanager.register(session, "taskproc-session")


def _default_junit_output(config: pytest.Config) -> None:
    """Put each task's captured output into JUnit XML unless the user chose otherwise.

    pytest leaves report sections out of the XML by default
    (``junit_logging = no``); for task items the output is the point, so a
    ``--taskproc`` run defaults to ``system-out``.  pytest offers no public way
    to change an ini default, hence the guarded use of its ini cache.
    """
    overrides = config.getoption("override_ini", None) or []
    if any(o.split("=", 1)[0].strip() == "junit_logging" for o in overrides):
        return
    configured = getattr(config, "_inicfg", None)
    if configured is None:
        configured = getattr(config, "inicfg", {})
    if "junit_logging" in configured:
        return
    cache = getattr(config, "_inicache", None)
    if isinstance(cache, dict):
        cache["junit_logging"] = "system-out"


def _is_xdist_controller(config: pytest.Config) -> bool:
    """The xdist controller only distributes and reports; it collects and runs nothing."""
    if hasattr(config, "workerinput") or config.getoption("collectonly"):
        return False  # xdist stands aside for --collect-only: this process collects
    dist = getattr(config.option, "dist", "no")
    return dist != "no" and bool(getattr(config.option, "tx", None))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: every worker learns this run's id and start time."""
    reporter = node.config.pluginmanager.get_plugin("taskproc-reporter")
    if reporter is not None:
        node.workerinput["taskproc_run"] = reporter.run_info()
