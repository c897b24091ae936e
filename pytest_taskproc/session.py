"""The stateful plugin object registered when ``--taskproc`` is on.

It owns what one pytest process knows about the run: the roots and the union
of their graphs, which task got which item, the tasks cleared or failed in
this run, and the counts behind the ``taskproc:`` summary line.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import pytest

from .atomic import write_text_atomic
from .cache import ensure_directory, get_store, prepare_root
from .collect import (
    TaskFile,
    defining_file,
    item_nodeid,
    items_in_upstream_order,
    task_item_name,
    upstream_first,
)
from .context import Context
from .errors import TaskFailedEarlierError
from .freshness import TaskState, plan
from .graph import NodeKey, TaskGraph, node_key
from .ratelimit import FileSlots
from .report import GRAPH_FILE, TaskprocReporter, is_task_file
from .runtest import TaskItem, describe_report, skip_by_marks
from .worker import RUNNING_SUFFIX, summarize


class TaskprocSession:
    """Hooks and state of one pytest process of a ``--taskproc`` run."""

    def __init__(
        self,
        config: pytest.Config,
        cache_root: Path,
        rate_limits: dict[str, int],
        reporter: TaskprocReporter,
    ) -> None:
        self.config = config
        self.reporter = reporter
        self.cache_root = cache_root
        Context.cache_dir = cache_root
        self.detect_source_change = not config.getoption("taskproc_no_source_check")
        self.clear_requested = bool(config.getoption("taskproc_clear"))
        self.echo = config.getoption("capture") == "no"
        self.slots = (
            FileSlots(cache_root / "taskproc" / ".ratelimits", rate_limits) if rate_limits else None
        )
        self.run_id = reporter.run_id
        self.started_ns = reporter.started_ns
        self.rate_limits = rate_limits
        self.roots: list[tuple[Any, TaskFile, str | None]] = []
        self.task_files: dict[Path, TaskFile] = {}
        self.itemized: dict[NodeKey, TaskItem] = {}
        self.first_file: dict[NodeKey, TaskFile] = {}
        #: every task reached from a root, the file that reached it first, explicit root ids
        self.tasks: dict[NodeKey, Any] = {}
        self.explicit_ids: dict[NodeKey, str] = {}
        #: marks of ``pytest.param(..., marks=...)``, per root
        self.root_marks: dict[NodeKey, list[Any]] = {}
        #: item names taken, per file node id
        self.names: dict[str, set[str]] = {}
        self.cleared: set[NodeKey] = set()
        #: how each task that failed in this run failed (``Type: message``), and the
        #: exception itself when it was raised in this process
        self.failed: dict[NodeKey, str] = {}
        self.failed_errors: dict[NodeKey, BaseException] = {}
        #: skip / xfail(run=False) marks of tasks, evaluated once
        self._mark_skips: dict[NodeKey, str | None] = {}
        #: failed collect reports of task files (build_task errors of roots, import errors)
        self.task_file_errors = 0
        self.computed_here: set[NodeKey] = set()
        self.selected: list[TaskItem] = []
        self._executor: Executor | None = None
        self._close_executor: Callable[[], None] | None = None
        self._executor_not_needed = False

    def executor(self) -> Executor | None:
        """The executor of ``--taskproc-executor``, started at first use; None runs inline."""
        spec = self.config.getoption("taskproc_executor")
        if spec is None or self._executor_not_needed:
            return None
        if self._executor is None:
            from .executors import make_executor

            try:
                self._executor, self._close_executor = make_executor(spec)
            except Exception as exc:
                # One clear error for the run (an unreachable scheduler, Dask
                # missing, a cluster that cannot start), not one per item.
                raise pytest.UsageError(f"--taskproc-executor={spec}: {exc}") from None
        return self._executor

    def _start_executor_if_needed(self) -> None:
        """Start the executor before the first item, or never when every task is fresh.

        A fully cached run then needs no cluster at all (its scheduler may
        even be down), and a scheduler that cannot be reached is a usage
        error before any item runs.
        """
        if self.config.getoption("taskproc_executor") is None or not self.selected:
            return
        graph = TaskGraph([i.task for i in self.selected])
        states = plan(graph, self.cache_root, self.detect_source_change)
        if any(s.stale for s in states.values()):
            self.executor()
        else:
            self._executor_not_needed = True

    # -- collection ---------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
        if file_path.suffix != ".py":
            return None
        patterns = self.config.getini("taskproc_files")
        if not any(file_path.match(p) for p in patterns):
            return None
        return TaskFile.from_parent(parent, path=file_path)

    def add_root(
        self, root: Any, source: TaskFile, explicit_id: str | None, marks: tuple[Any, ...] = ()
    ) -> None:
        self.roots.append((root, source, explicit_id))
        if explicit_id:
            self.explicit_ids.setdefault(node_key(root), explicit_id)
        if marks:
            self.root_marks.setdefault(node_key(root), []).extend(marks)
        stack = [root]
        while stack:
            task = stack.pop()
            key = node_key(task)
            if key in self.first_file:
                continue
            self.first_file[key] = source
            self.tasks[key] = task
            stack.extend(task._tp_upstream)

    def claim_items(self, source: TaskFile) -> list[TaskItem]:
        """Items for every task reached so far whose class this file defines."""
        here = source.path.resolve()
        return [
            self._make_item(key, task, source)
            for key, task in list(self.tasks.items())
            if key not in self.itemized and defining_file(type(task)) == here
        ]

    def _make_item(self, key: NodeKey, task: Any, parent: TaskFile) -> TaskItem:
        explicit = self.explicit_ids.get(key)
        name = f"{type(task).__qualname__}[{explicit}]" if explicit else task_item_name(task)
        taken = self.names.setdefault(parent.nodeid, set())
        unique, n = name, 1
        while unique in taken:
            unique, n = f"{name}#{n}", n + 1
        taken.add(unique)
        item = TaskItem.from_parent(
            parent,
            name=unique,
            nodeid=item_nodeid(parent, unique),
            task=task,
            tp_session=self,
            marks=self.root_marks.get(key, ()),
        )
        self.itemized[key] = item
        return item

    @pytest.hookimpl(hookwrapper=True)
    def pytest_collection_modifyitems(self, items: list[Any]) -> Any:
        """Add the items no collected file claimed, then restore upstream-first order.

        Items are added before the other plugins see the list, so ``-k``/``-m``
        can deselect them; the order is restored after them, because plugins
        that shuffle (pytest-randomly) or sort do so in plain implementations
        or before theirs yields.  ``--ff``/``--nf`` reorder after this, in
        wrappers of their own, and keep their say.
        """
        late = 0
        for key, task in list(self.tasks.items()):
            if key in self.itemized:
                continue
            owner = self.task_files.get(defining_file(type(task)) or Path()) or self.first_file[key]
            items.append(self._make_item(key, task, owner))
            late += 1
        # Items made here were in no collect report, so the terminal's
        # "collected N items" would miss them.
        reporter: Any = self.config.pluginmanager.get_plugin("terminalreporter")
        if late and isinstance(getattr(reporter, "_numcollected", None), int):
            reporter._numcollected += late
        yield
        order = {k: i for i, k in enumerate(upstream_first([r for r, _, _ in self.roots]))}
        items[:] = items_in_upstream_order(items, order)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selected = [i for i in session.items if isinstance(i, TaskItem)]
        self._check_rate_limit_channels()
        if self.config.option.collectonly:
            # Kept in memory: a dry run writes nothing into the cache, and with
            # --collect-only this process also reports (xdist stands aside).
            self.reporter.dry_run = {"total": len(self.selected), "stale": self._dry_run()}
        self._write_graph_structure()

    def _dry_run(self) -> list[tuple[str, str]]:
        """The selected tasks that would be computed, with their reasons."""
        if not self.selected:
            return []
        wanted = {node_key(i.task) for i in self.selected}
        cleared = wanted if self.clear_requested else set()
        graph = TaskGraph([i.task for i in self.selected])
        states = plan(graph, self.cache_root, self.detect_source_change, frozenset(cleared))
        # In item order, which is upstream-first like the listing above it.
        return [
            (i.nodeid, states[node_key(i.task)].describe())
            for i in self.selected
            if states[node_key(i.task)].stale
        ]

    # -- running --------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        if session.testsfailed and session.testsfailed == self.task_file_errors:
            # Only task files failed to collect (a root's build_task raised, say):
            # the rest of the experiment still runs.  A broken ordinary test file
            # still stops the run, as pytest does without --taskproc.
            self.config.option.continue_on_collection_errors = True
        if self.config.option.collectonly:
            return
        if self.clear_requested and self.selected:
            self._clear_selected()
        self._start_executor_if_needed()

    def _clear_selected(self) -> None:
        """Clear the selected tasks once per run, even with several xdist workers."""
        from filelock import FileLock

        prepare_root(self.cache_root)
        run_dir = self.reporter.run_dir
        ensure_directory(run_dir)
        marker = run_dir / "cleared"
        keys = [node_key(i.task) for i in self.selected]
        with FileLock(str(run_dir / "clear.lock")):
            if not marker.exists():
                for item in self.selected:
                    item.task.clear_task()
                write_text_atomic(marker, "\n".join(i.nodeid for i in self.selected))
        self.cleared.update(keys)

    @property
    def failure_dir(self) -> Path:
        """Where this run records failed tasks (see ``worker.failure_marker``)."""
        return self.reporter.run_dir / "failed"

    def _marker(self, state: TaskState) -> Path:
        return self.failure_dir / f"{state.store.name}.{state.task_id}"

    def mark_failed(self, key: NodeKey, error: BaseException) -> None:
        self.failed[key] = summarize(error)
        if not isinstance(error, TaskFailedEarlierError):
            self.failed_errors[key] = error

    def failure_of(self, key: NodeKey, state: TaskState) -> str | None:
        """How a task failed earlier in this run, here or on another xdist worker, if it did."""
        if key in self.failed:
            return self.failed[key]
        try:
            summary = self._marker(state).read_text()
        except FileNotFoundError:
            # A process that died computing the task is found out under its lock,
            # by the worker (see ``worker.RUNNING_SUFFIX``), which then writes this.
            return None
        self.failed[key] = summary
        return summary

    def forget_failure(self, key: NodeKey, state: TaskState) -> None:
        """A rerun of an item (pytest-rerunfailures) computes its task afresh."""
        self.failed.pop(key, None)
        self.failed_errors.pop(key, None)
        marker = self._marker(state)
        for path in (marker, Path(f"{marker}{RUNNING_SUFFIX}")):
            path.unlink(missing_ok=True)

    def mark_skip(self, key: NodeKey) -> str | None:
        """Why a task's own item is skipped by its marks (skip, skipif, xfail(run=False))."""
        if key not in self._mark_skips:
            item = self.itemized.get(key)
            self._mark_skips[key] = None if item is None else skip_by_marks(item)
        return self._mark_skips[key]

    def failure_header(self, task: Any) -> str:
        store = get_store(self.cache_root, task.task_name)
        task_id = store.task_id(task._tp_key)
        lines = [
            f"task {task!r} failed",
            f"  class:     {task.task_name}",
            f"  arguments: {task._tp_key}",
            f"  task id:   {task_id}",
        ]
        # Output files exist only when the task printed something.
        for which, path in (
            ("stdout", store.stdout_path(task_id)),
            ("stderr", store.stderr_path(task_id)),
        ):
            if path.exists():
                lines.append(f"  {which}:    {path}")
        if len(lines) == 4:
            lines.append("  output:    none (the task printed nothing)")
        return "\n".join(lines)

    # -- reporting --------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        outcome = yield
        if isinstance(item, TaskItem):
            describe_report(item, outcome.get_result(), self.properties_in_xml)

    @property
    def properties_in_xml(self) -> bool:
        """Whether task statuses go into JUnit XML as properties (not valid in xunit2)."""
        return str(self.config.getini("junit_family")) in ("xunit1", "legacy")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed and is_task_file(self.config, report.nodeid):
            self.task_file_errors += 1

    # -- rate limits ----------------------------------------------------------------
    def _check_rate_limit_channels(self) -> None:
        """Warn about a rate limit no collected task is subject to: a typo means no limit."""
        if not self.rate_limits or not self.tasks:
            return
        if getattr(self.config, "workerinput", {}).get("workerid", "gw0") != "gw0":
            return  # every worker collects the same tasks: one warning is enough
        known = set()
        for task in self.tasks.values():
            known.update(task._tp_config.channels)
        unknown = sorted(set(self.rate_limits) - known)
        if unknown:
            labels = sorted(c for c in known if c.startswith("<")) or sorted(known)[:5]
            message = (
                f"taskproc rate limits name {', '.join(map(repr, unknown))}, which no collected "
                f"task carries, so they limit nothing; channels of the collected tasks: "
                f"{', '.join(map(repr, labels))}"
            )
            # Shown at the configuration file (or the option), not at this line.
            from_ini = self.config.getoption("taskproc_rate_limits") is None
            where = self.config.inipath if from_ini else None
            warnings.warn_explicit(
                pytest.PytestConfigWarning(message),
                category=None,
                filename=str(where or "--taskproc-rate-limits"),
                lineno=0,
            )

    # -- graph export -------------------------------------------------------------
    def _write_graph_structure(self) -> None:
        if self.config.getoption("taskproc_graph") is None or not self.itemized:
            return
        from .export import graph_structure

        graph = TaskGraph([r for r, _, _ in self.roots])
        path = self.reporter.run_dir / GRAPH_FILE
        ensure_directory(path.parent)
        items = {k: i.nodeid for k, i in self.itemized.items()}
        states: dict[NodeKey, TaskState] | None = None
        if self.config.option.collectonly:
            states = plan(graph, self.cache_root, self.detect_source_change)
        write_text_atomic(path, json.dumps(graph_structure(graph, items, states)))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._close_executor is not None:
            self._close_executor()
