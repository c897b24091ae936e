"""pytest entry point: the ``taskproc`` options, and the plugins of a run when switched on.

This module stays cheap to import: without ``--taskproc`` (or an option that
implies it, see ``options.IMPLYING_TASKPROC``) nothing of the library is
imported and no hook does any work.  With them, the stages of the run are
registered as plugins, each in its own module: ``collect`` (task files to
items), ``plan`` (the run's graph, planned once, and the executor),
``runtest`` (one item's outcome) and ``report`` (statuses and the summary
line); with their options, ``verify`` (``--taskproc-verify``) and
``manifest`` (``--taskproc-manifest``); on the xdist controller, ``interrupt``
and ``crashes`` (a dead worker's task output).  Their state lives in ``config.stash``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest


def _leave_the_library_as_compiled() -> None:
    """Keep pytest from rewriting the asserts of the library's modules as they import.

    pytest marks every module of a distribution with a ``pytest11`` entry
    point for its assertion rewriting, which parses and compiles each one
    again instead of loading its bytecode; where the rewritten bytecode cannot
    be saved (``PYTHONDONTWRITEBYTECODE``, a read-only or shared install) that
    is ~0.1 s of every run.  The library has no asserts that need it.  pytest
    offers no way to unmark a name, so this takes ours out of its hook's set;
    if a pytest without that set comes, modules are rewritten as before.
    """
    for finder in sys.meta_path:
        marked = getattr(finder, "_must_rewrite", None)
        if isinstance(marked, set):
            marked.discard(__name__.split(".")[0])


_leave_the_library_as_compiled()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """No hooks to add: the first call pytest makes to the plugin, when it registers it.

    pytest loads its other plugins before it configures any: a process pool
    asked for on the command line starts its fork server now, which then
    imports while they load (ready about a tenth of a second sooner).
    """
    config = pluginmanager.get_plugin("pytestconfig")
    if config is None:
        return
    try:
        # pytest puts the ini file's addopts and $PYTEST_ADDOPTS before the arguments
        # (an -n there makes this process xdist's controller, which runs no task).
        added = [*config.getini("addopts"), *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    except ValueError:
        return  # registered before pytest read its ini file (pytest.main(plugins=...))
    spec = _pool_on_command_line((*added, *config.invocation_params.args))
    if spec is not None:
        from ..executors import start_pool_server

        start_pool_server(spec)


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
        "--taskproc-no-read-audit",
        action="store_true",
        default=False,
        help="do not warn when a task reads a file it does not declare as an InputFile.",
    )
    group.addoption(
        "--taskproc-executor",
        metavar="SPEC",
        default=None,
        help="compute the stale tasks on process[:N], thread[:N] or dask[:ADDRESS], each as "
        "soon as its upstream tasks are done (dask alone starts a local cluster); default: "
        "in the pytest process, one at a time. Implies --taskproc.",
    )
    group.addoption(
        "--taskproc-graph",
        metavar="FILE",
        default=None,
        help="write the task graph with each task's state to FILE (.md/.mmd Mermaid, .dot "
        "Graphviz); implies --taskproc.",
    )
    group.addoption(
        "--taskproc-manifest",
        metavar="FILE",
        default=None,
        help="after the run, write every collected task's status and record (code, "
        "arguments, upstream values it was made from) to FILE as JSON; implies --taskproc.",
    )
    group.addoption(
        "--taskproc-verify",
        action="store_true",
        default=False,
        help="recompute each selected cached task in a scratch folder and compare it with "
        "its cached value; a differing one fails as not reproducible. The cache is not written. "
        "Implies --taskproc.",
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


#: Options after which this process runs no task (xdist's controller, a listing, help).
_NO_TASKS_HERE = frozenset(
    (
        "--numprocesses",
        "--dist",
        "--tx",
        "--collect-only",
        "--co",
        "--taskproc-prune",
        "-h",
        "--help",
        "--version",
        "-V",
        "--fixtures",
        "--markers",
    )
)


def _pool_on_command_line(args: tuple[object, ...]) -> str | None:
    """The valid ``process`` executor spec of a command line that will run tasks here, else None.

    Only the arguments are read, early: a spec from the ini option
    ``taskproc_executor``, or one this misreads, still starts the pool server
    in ``pytest_configure`` (starting it twice is harmless).
    """
    spec = None
    words = [str(a) for a in args]
    for i, word in enumerate(words):
        if word.partition("=")[0] in _NO_TASKS_HERE or word.startswith("-n"):
            return None  # -n also as -n2, -nauto
        if word.startswith("--taskproc-executor="):
            spec = word.partition("=")[2]
        elif word == "--taskproc-executor" and i + 1 < len(words):
            spec = words[i + 1]
    if spec is None or spec.partition(":")[0] != "process":
        return None
    from ..executors import check_spec

    try:
        return check_spec(spec)
    except ValueError:
        return None  # pytest_configure reports it


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "taskproc: a task of the task graph (set by pytest-taskproc)"
    )
    from .options import OPTIONS, check_options, default_junit_output, is_enabled, read_options

    check_options(config)
    if not is_enabled(config):
        if not hasattr(config, "workerinput"):
            config.pluginmanager.register(TaskFileHint(config), "taskproc-hint")
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
    from .integrations import ReportingPlugins

    config.pluginmanager.register(ReportingPlugins(config), "taskproc-reporting-plugins")
    if options.manifest is not None:
        from .manifest import Manifest

        config.pluginmanager.register(Manifest(config, options), "taskproc-manifest")
    if options.controller:
        if config.getoption("taskproc_prune") is not None:
            raise pytest.UsageError("--taskproc-prune runs without xdist: drop -n")
        from .interrupt import InterruptedWorkers

        config.pluginmanager.register(InterruptedWorkers(config), "taskproc-interrupt")
        from .crashes import CrashOutput

        config.pluginmanager.register(CrashOutput(options), "taskproc-crash-output")
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


class TaskFileHint:
    """Without ``--taskproc``: a run that collects nothing but passes task files says so.

    Only file names are matched while pytest walks the tree (no import, no
    read), so a run without the flag costs what it costs without the plugin.
    A file named on the command line counts when pytest imported it and it
    defines task classes.
    """

    def __init__(self, config: pytest.Config) -> None:
        patterns = [str(p) for p in config.getini("taskproc_files")]
        # One compiled match of the file name per file pytest visits; a pattern
        # with a folder in it needs Path.match, as the collector uses.
        self.by_name = re.compile(
            "|".join(fnmatch.translate(p) for p in patterns if "/" not in p) or "(?!)"
        ).match
        self.with_folder = [p for p in patterns if "/" in p]
        self.found: list[Path] = []
        self.collected = -1

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> None:
        name = file_path.name
        if not name.endswith(".py"):
            return
        if self.by_name(name) or any(file_path.match(p) for p in self.with_folder):
            # pytest walks the folder of a file named on the command line: only
            # task files named or inside a folder named count.
            session = parent.session
            if any(session.isinitpath(p) for p in (file_path, *file_path.parents)):
                self.found.append(file_path)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected = len(session.items)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.collected != 0:
            return
        config = terminalreporter.config
        named = (
            Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
            for arg in config.args
        )
        found = sorted({*self.found, *filter(_defines_task_classes, named)})
        if not found:
            return
        rootdir = Path(config.rootpath)
        names = [
            str(p.relative_to(rootdir)) if p.is_relative_to(rootdir) else str(p) for p in found
        ]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        terminalreporter.write_line(
            f"taskproc: no tests collected, but task files were found ({shown}); "
            "run their tasks with: pytest --taskproc",
            yellow=True,
        )


def _defines_task_classes(path: Path) -> bool:
    """Whether a module pytest imported from ``path`` defines task classes."""
    import sys

    spec = sys.modules.get("pytest_taskproc.spec")
    if spec is None:
        return False  # nothing imported the library, so no module defines a task
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if filename and Path(filename) == path:
            return any(
                spec.is_task_class(value) and value.__module__ == module.__name__
                for value in vars(module).values()
            )
    return False
