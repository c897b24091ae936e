"""pytest entry point: the ``taskproc`` options, and the plugins of a run when switched on.

This module stays cheap to import: without ``--taskproc`` or
``--taskproc-clear`` nothing of the library is imported and no hook does any
work.  With them, the stages of the run are registered as plugins, each in
its own module: ``collect`` (task files to items), ``plan`` (the run's graph,
planned once, and the executor), ``runtest`` (one item's outcome) and
``report`` (statuses and the summary line); with their options, ``verify``
(``--taskproc-verify``) and ``manifest`` (``--taskproc-manifest``).  Their
state lives in ``config.stash``.
"""

from __future__ import annotations

from typing import Any

import pytest


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
        help="compute the stale tasks on process[:N], thread[:N] or dask[:ADDRESS], each as "
        "soon as its upstream tasks are done (dask alone starts a local cluster); default: "
        "in the pytest process, one at a time.",
    )
    group.addoption(
        "--taskproc-graph",
        metavar="FILE",
        default=None,
        help="write the task graph with each task's state to FILE (.md/.mmd Mermaid, .dot "
        "Graphviz).",
    )
    group.addoption(
        "--taskproc-manifest",
        metavar="FILE",
        default=None,
        help="after the run, write every collected task's status and record (code, "
        "arguments, upstream values it was made from) to FILE as JSON.",
    )
    group.addoption(
        "--taskproc-verify",
        action="store_true",
        default=False,
        help="recompute each selected cached task in a scratch folder and compare it with "
        "its cached value; a differing one fails as not reproducible. The cache is not written.",
    )
    group.addoption(
        "--taskproc-prune",
        nargs="?",
        const="list",
        default=None,
        metavar="delete",
        help="list the cached results of the collected task classes that no collected item "
        "reaches (the whole collection, whatever -k selects), with sizes, and run nothing; "
        "=delete removes them. Implies --taskproc.",
    )
    parser.addini(
        "taskproc_files",
        type="args",
        default=["task_*.py", "taskfile.py"],
        help="glob patterns of task files collected with --taskproc.",
    )
    parser.addini("taskproc_cache_dir", default="", help="cache root for --taskproc runs.")
    parser.addini("taskproc_rate_limits", default="", help="JSON rate limits for --taskproc runs.")
    parser.addini(
        "taskproc_manifest",
        default="",
        help="where --taskproc runs write their manifest (relative to the rootdir).",
    )
    parser.addini(
        "taskproc_executor",
        default="",
        help="executor of --taskproc runs: process[:N], thread[:N] or dask[:ADDRESS].",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "taskproc: a task of the task graph (set by pytest-taskproc)"
    )
    from .options import OPTIONS, check_options, default_junit_output, is_enabled, read_options

    check_options(config)
    if not is_enabled(config):
        return
    options = read_options(config)
    config.stash[OPTIONS] = options
    if options.executor and not (options.worker_id or options.controller or options.collect_only):
        from ..executors import start_pool_server

        start_pool_server(options.executor)  # first: it overlaps everything below
    default_junit_output(config)
    from .report import CachedInShortSummary, TaskprocReporter

    if options.worker_id is None:  # the controller (or the only process) tells
        from .cachenote import NewCacheNote

        config.pluginmanager.register(NewCacheNote(config, options.cache_root), "taskproc-new")
    reporter = TaskprocReporter(config, options)
    config.pluginmanager.register(reporter, "taskproc-reporter")
    config.pluginmanager.register(CachedInShortSummary(reporter), "taskproc-short-summary")
    if options.manifest is not None:
        from .manifest import Manifest

        config.pluginmanager.register(Manifest(config, options), "taskproc-manifest")
    if options.controller:
        if config.getoption("taskproc_prune") is not None:
            raise pytest.UsageError("--taskproc-prune runs without xdist: drop -n")
        return
    from .collect import Collector
    from .plan import RunPlan
    from .runtest import ItemRunner

    # Registered in the order the run uses them; each finds the others in config.stash.
    config.pluginmanager.register(Collector(config, options), "taskproc-collect")
    config.pluginmanager.register(RunPlan(config, options, reporter), "taskproc-plan")
    if options.verify:
        from .verify import Verifier

        config.pluginmanager.register(Verifier(config, options), "taskproc-verify")
    config.pluginmanager.register(ItemRunner(config, options), "taskproc-runtest")
    prune = config.getoption("taskproc_prune")
    if prune is not None:
        from .prune import Pruner, parse_prune

        if options.worker_id is not None:
            raise pytest.UsageError("--taskproc-prune runs without xdist: drop -n")
        config.pluginmanager.register(Pruner(config, options, parse_prune(prune)), "taskproc-prune")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: every worker learns this run's id and start time."""
    from .options import OPTIONS

    options = node.config.stash.get(OPTIONS, None)
    if options is not None:
        node.workerinput["taskproc_run"] = options.run_info()
