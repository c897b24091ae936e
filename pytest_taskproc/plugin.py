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


def parse_rate_limits(text: str, source: str = "--taskproc-rate-limits") -> dict[str, int]:
    """A JSON object of channel -> positive int (``--taskproc-rate-limits``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise pytest.UsageError(f"{source}: not valid JSON ({exc}): {text!r}") from None
    return _check_rate_limits(value, source, text)


def _check_rate_limits(value: Any, source: str, shown: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 1 for k, v in value.items()
    ):
        raise pytest.UsageError(
            f"{source}: expected a JSON object mapping channel names to ints >= 1, "
            f"e.g. '{{\"<gpu>\": 1}}', not {shown!r}"
        )
    return value


def ini_rate_limits(config: pytest.Config) -> dict[str, int] | None:
    """The ini option ``taskproc_rate_limits``: JSON text, or a TOML table in pyproject.toml.

    A ``[tool.pytest.ini_options]`` table reaches plugins as the text of a
    Python dict (pytest turns every non-list TOML value into ``str(value)``);
    pytest's native ``[tool.pytest]`` table may hand over the dict itself.
    """
    raw: Any = config.getini("taskproc_rate_limits")
    source = "ini option taskproc_rate_limits"
    if isinstance(raw, dict):
        return _check_rate_limits(raw, source, raw)
    if not raw:
        return None
    text = str(raw).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        import ast

        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise pytest.UsageError(
                f'{source}: expected JSON such as {{"<gpu>": 1}} (or, in pyproject.toml, '
                f'a table such as {{"<gpu>" = 1}}), not {text!r}'
            ) from None
    return _check_rate_limits(value, source, text)


def parse_executor(text: str) -> str:
    from .executors import check_spec

    try:
        return check_spec(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--taskproc-executor: {exc}") from None


def parse_graph_path(text: str) -> str:
    if Path(text).suffix not in GRAPH_SUFFIXES:
        raise pytest.UsageError(
            f"--taskproc-graph: {text!r} must end in .md or .mmd (Mermaid) or .dot (Graphviz)"
        )
    return text


def check_options(config: pytest.Config) -> None:
    """Validate the option values in place, raising one ``UsageError`` for a bad one.

    This is not done by argparse ``type=`` functions: on pytest 7.4 an error
    raised there passes through pytest's own old-style hook wrappers and
    pluggy adds a ``PluggyTeardownRaisedWarning`` to the one-line message.
    Parsing is idempotent, for xdist workers that receive parsed values.
    """
    option = config.option
    limits = getattr(option, "taskproc_rate_limits", None)
    if isinstance(limits, str):
        option.taskproc_rate_limits = parse_rate_limits(limits)
    elif limits is not None:
        _check_rate_limits(limits, "--taskproc-rate-limits", limits)
    if getattr(option, "taskproc_executor", None) is not None:
        option.taskproc_executor = parse_executor(str(option.taskproc_executor))
    if getattr(option, "taskproc_graph", None) is not None:
        option.taskproc_graph = parse_graph_path(str(option.taskproc_graph))


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
        help="compute tasks on process[:N], thread[:N] or dask[:ADDRESS] instead of in the "
        "pytest process (dask alone starts a local cluster).",
    )
    group.addoption(
        "--taskproc-graph",
        metavar="FILE",
        default=None,
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
    """A cache that cannot be written is a usage error, unless it has results to read.

    A read-only cache of finished results serves a fully cached run (reading
    writes nothing); a task that must be computed there fails naming the path.
    """
    import os

    if (root / "taskproc").is_dir() and os.access(root / "taskproc", os.R_OK | os.X_OK):
        return
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
    check_options(config)
    if not is_enabled(config):
        return
    limits = config.getoption("taskproc_rate_limits")
    if limits is None:
        limits = ini_rate_limits(config)
    root = resolve_cache_root(config)
    _check_cache_root(root)
    _default_junit_output(config)
    from .report import CachedInShortSummary, TaskprocReporter

    reporter = TaskprocReporter(config, cache_root=root)
    config.pluginmanager.register(reporter, "taskproc-reporter")
    config.pluginmanager.register(CachedInShortSummary(reporter), "taskproc-short-summary")
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
