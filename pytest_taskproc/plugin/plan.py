"""The run's graph, planned once; the executor and its lifecycle.

The union graph of the selected items and their upstream tasks is planned
once per pytest process, when the first task item runs (so warnings about
damaged results land in that item's report), after ``--taskproc-clear``
cleared the selected tasks: one record read per task.  Items then read their
task's state from that plan, which learns every outcome as it lands.  The
tasks run in one of two ways:

- *item by item* (no executor, or under xdist): each item computes what its
  own task still needs, in the pytest process (so ``--pdb`` and ``-s`` work)
  or, with an executor under xdist, on that executor.  The run's one
  ``execute.Run`` is settled target by target, linear overall.
- *in the background* (``--taskproc-executor`` without xdist): one pass over
  every stale task runs in a thread, submitting each task as soon as its
  upstream tasks are done; each item waits for its own task's outcome.  If
  that thread breaks down, the next item raises its error.

``verdict`` decides what became of each item's task, ``runtest`` reports it.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import traceback
import warnings
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..atomic import write_text_atomic
from ..context import Context
from ..graph import NodeKey, TaskGraph
from ..relay import as_messages, carried_by
from ..spec import spec_of
from .collect import COLLECTION, Collection, TaskItem
from .options import Options
from .params import skip_by_marks
from .report import CLEARED_FILE, GRAPH_FILE, TaskprocReporter, outside_capture

if TYPE_CHECKING:
    from ..execute import Run, RunSettings, TaskState
    from .progress import Estimate

# The scheduler, the cache and planning (``execute``, ``cache``, ``freshness``,
# ``inputs``) are imported when the first task is planned, not when pytest
# configures the plugin: a run that collects no task item never needs them.


class _MarkSkipped:
    """The tasks whose own items are skipped by their marks: never computed in this run."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan

    def __contains__(self, node: object) -> bool:
        return self.plan.mark_skip(node) is not None  # type: ignore[arg-type]


class RunPlan:
    """The planned graph of one pytest process, the pass that runs it, and its executor."""

    def __init__(self, config: pytest.Config, options: Options, reporter: TaskprocReporter) -> None:
        self.config = config
        self.options = options
        self.reporter = reporter
        self.collection = config.stash[COLLECTION]
        config.stash[PLAN] = self
        # The process's cache root, for what tasks do outside a job (clear_task,
        # get_task_result in a plain test): fixed before any task uses it.
        Context.cache_dir = options.cache_root
        self.selected: set[NodeKey] = set()
        self.cleared: set[NodeKey] = set()
        self.withheld = _MarkSkipped(self)
        self._mark_skips: dict[NodeKey, str | None] = {}
        #: the planned graph, settled item by item or in the background
        self.run: Run | None = None
        self.background: threading.Thread | None = None
        #: what broke the background pass down, for the next item to raise
        self.background_error: BaseException | None = None
        #: guards what the background pass tells the items: outcomes, counts
        self.changed = threading.Condition()
        self.settled_count = 0
        self.stale_count = 0
        self.last_settled: NodeKey | None = None
        #: done/total and time left of the background pass, for the status line
        self.estimate: Estimate | None = None
        #: tasks computed only as upstream of the selection, not yet on a report
        self._upstream = [0, 0.0]
        self.session: pytest.Session | None = None
        self.deferred_warnings: list[warnings.WarningMessage] = []
        self._executor: Executor | None = None
        self._close_executor: Any = None

    # -- hooks ------------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        found = self.collection
        if self.options.collect_only:
            # Kept in memory: a dry run writes nothing into the cache, and with
            # --collect-only this process also reports (xdist stands aside).
            self.reporter.dry_run = dry_run(found.selected, self.options)
        write_graph_structure(found, self.options)

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        # Innermost of the wrappers: set up before any item runs, and end the
        # pool with the loop rather than at unconfigure, since its workers write
        # their coverage data as they exit and pytest-cov combines it as soon
        # as the loop is over (in its own wrapper, outside this one).
        frozen = self._freeze_collected()
        try:
            self._before_items(session)
            outcome = yield
            if outcome.excinfo is None and not session.shouldstop:
                self.stop(cancel=True)
                self.close_executor()
        finally:
            if frozen:
                gc.unfreeze()

    def _freeze_collected(self) -> bool:
        """Leave what collection made out of the garbage collector's scans during the run.

        A computed task allocates enough for the collector's full scans to come
        round several times per thousand items, and each one walks every object
        of the session: the items, their tasks, the modules collected.  Those
        live until the session ends anyway, so they are moved to the permanent
        generation (``gc.freeze``) for the run loop and given back after it;
        reference counting frees everything as before, and a cycle made
        unreachable meanwhile is collected after the loop.  Left alone when
        someone else froze objects already, or when no task item runs.
        """
        if self.options.collect_only or not self.collection.selected or gc.get_freeze_count():
            return False
        gc.freeze()
        return True

    def _before_items(self, session: pytest.Session) -> None:
        self.session = session
        if session.testsfailed and session.testsfailed == self.collection.task_file_errors:
            # Only task files failed to collect (a root's build_task raised, say):
            # the rest of the experiment still runs.  A broken ordinary test file
            # still stops the run, as pytest does without --taskproc.
            self.config.option.continue_on_collection_errors = True
        if self.options.collect_only or not self.collection.selected:
            return
        if session.testsfailed and not self.config.option.continue_on_collection_errors:
            return  # pytest is about to stop the run
        if self.options.clear:
            self.cleared.update(clear_selected(self.collection.selected, self.options))
        if self.options.executor is not None and self.options.worker_id is None:
            # Planned before the first item, to start the executor (an unreachable
            # scheduler is a usage error, not an item's failure) and submit the
            # stale graph.  Warnings of planning (damaged results) go to the
            # first task item, where pytest records warnings.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.ensure_planned()
            self.deferred_warnings = list(caught)
            self._start_background()

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        session = self.session
        stopping = session is not None and (session.shouldfail or session.shouldstop)
        if stopping and self.background is not None:  # -x, --maxfail: nothing more starts
            self.stop(cancel=True)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            self.abandon()  # Ctrl+C: do not wait for the tasks under way
        self.stop(cancel=True)
        self.reissue_warnings()  # tasks settled after the last item: pytest still records them
        count, seconds = self.take_upstream()
        if count and self.options.worker_id is None:
            self.reporter.tally.add_upstream(count, seconds)
        error, self.background_error = self.background_error, None
        if error is not None and exitstatus != pytest.ExitCode.INTERRUPTED:
            # It broke down after the last item that could have raised it: still said.
            self._report_late_error(session, error)
        if not self.options.collect_only and self.collection.selected:
            from ..inputs import persist_stat_cache

            # Digests of input files (and of copied values) learned by this run
            # are kept, so the next run need not read those files again.
            persist_stat_cache(self.options.cache_root)

    def _report_late_error(self, session: pytest.Session, error: BaseException) -> None:
        writer: Any = self.config.pluginmanager.get_plugin("terminalreporter")
        if writer is not None:
            lines = traceback.format_exception(type(error), error, error.__traceback__)
            writer.write_sep("!", "taskproc: the background scheduler thread failed")
            writer.write_line("".join(lines).rstrip())
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.close_executor()

    def close_executor(self) -> None:
        close, self._close_executor = self._close_executor, None
        if close is not None:
            if self.run is not None:
                self.run.end_stragglers()  # a task given up on that ignored being asked to stop
            close()

    # -- the plan ---------------------------------------------------------------------------
    def settings(self) -> RunSettings:
        """What every job of this run shares."""
        from ..execute import RunSettings
        from ..ratelimit import FileSlots

        options = self.options
        limits = options.rate_limits
        root = options.cache_root
        return RunSettings(
            str(root),
            run_id=options.run_id,
            detect_source_change=options.detect_source_change,
            echo=options.echo,
            slots=FileSlots(root / "taskproc" / ".ratelimits", limits) if limits else None,
            failure_dir=str(options.failure_dir),
            log_failures=False,  # each failure is its item's report
            audit_reads=options.audit_reads,
        )

    def ensure_planned(self) -> Run:
        """Plan the selection's graph, once per process: one record read per task."""
        if self.run is not None:
            return self.run
        from ..execute import Run

        found = self.collection
        self.selected = {i.key for i in found.selected}
        if len(self.selected) == len(found.itemized):
            graph = found.graph  # everything selected: the graph collection built
        else:
            graph = TaskGraph([i.task for i in found.selected])
        options = self.options
        background = options.executor is not None and options.worker_id is None
        self.run = Run(
            graph,
            self.settings(),
            executor=self._executor_or_inline,
            # In-process limits for the background pass, so no pool worker sits
            # waiting for a slot; items computed one by one need only the slots.
            rate_limits=options.rate_limits if background else None,
            cleared=frozenset(self.cleared),
        )
        return self.run

    def state(self, key: NodeKey) -> TaskState | None:
        """The task's planned state; None before planning."""
        return None if self.run is None else self.run.state(key)

    def reissue_warnings(self) -> None:
        """Warnings met while planning, issued again where pytest records them."""
        caught, self.deferred_warnings = self.deferred_warnings, []
        for found in caught:
            warnings.warn_explicit(found.message, found.category, found.filename, found.lineno)

    def mark_skip(self, key: NodeKey) -> str | None:
        """Why a task's own item is skipped by its marks (skip, skipif, xfail(run=False))."""
        if key not in self._mark_skips:
            item = self.collection.itemized.get(key)
            self._mark_skips[key] = None if item is None else skip_by_marks(item)
        return self._mark_skips[key]

    # -- the executor -----------------------------------------------------------------------
    def executor(self) -> Executor | None:
        """The executor of ``--taskproc-executor``, started at first use; None runs inline."""
        spec = self.options.executor
        if spec is None:
            return None
        if self._executor is None:
            from ..executors import make_executor

            # Started outside the running item's output capture: worker
            # processes keep the descriptors they are started with.
            with outside_capture(self.config):
                try:
                    self._executor, self._close_executor = make_executor(spec)
                except Exception as exc:
                    # One clear error for the run (an unreachable scheduler, Dask
                    # missing, a cluster that cannot start), not one per item.
                    raise pytest.UsageError(f"--taskproc-executor={spec}: {exc}") from None
                if spec.startswith("process"):
                    # The pool's processes start now, from this thread alone: forked
                    # later, from the scheduler thread, they would copy a threaded process.
                    self._executor.submit(int).result()
        return self._executor

    def _executor_or_inline(self) -> Executor:
        from ..execute import InlineExecutor

        return self.executor() or InlineExecutor()

    def _start_background(self) -> None:
        """Submit every stale task to the executor, from a thread, as its upstream gets done.

        A fully cached run starts no executor at all (its scheduler may even
        be down); a scheduler that cannot be reached is one usage error.
        """
        run = self.ensure_planned()
        self.stale_count = run.stale_count
        if not self.stale_count:
            return
        from .progress import Estimate

        self.estimate = Estimate(run, self.collection.graph.order)
        self.executor()  # a scheduler that cannot be reached is a usage error, here
        withheld = self.withheld

        def work() -> None:
            try:
                run.settle(keep_going=True, withheld=withheld, listener=self.on_settled)
            except BaseException as exc:  # raised by the next item, which is told of it
                self.background_error = exc
            finally:
                with self.changed:
                    self.changed.notify_all()

        self.background = threading.Thread(target=work, name="taskproc-scheduler", daemon=True)
        self.background.start()

    def stop(self, cancel: bool) -> None:
        """End the background pass: with ``cancel``, nothing more starts."""
        thread = self.background
        if thread is None:
            return
        if cancel and self.run is not None:
            self.run.cancel()
        thread.join()
        self.background = None

    def abandon(self) -> None:
        """Stop at once: cancel the background pass and end the executor's workers."""
        if self.run is not None:
            self.run.cancel()
        self.background = None  # a daemon thread: it ends with the process
        executor, self._executor = self._executor, None
        if executor is None:
            return
        self._close_executor = None
        # Python 3.14 has a public way to end a process pool's workers; before
        # that, only the pool's own table of processes knows them (emptied by
        # shutdown, so read first).
        terminate = getattr(executor, "terminate_workers", None)
        if callable(terminate):
            terminate()
        else:
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)

    def item_run(self) -> Run:
        """The run items compute their tasks through, once no background pass runs."""
        self.stop(cancel=False)
        self.raise_background_error()
        return self.ensure_planned()

    def raise_background_error(self) -> None:
        """A breakdown of the background pass is the error of the item that finds it."""
        error, self.background_error = self.background_error, None
        if error is not None:
            raise error

    def on_settled(self, node: NodeKey) -> None:
        run = self.run
        found = None if run is None else run.outcome(node)
        outcome = None if found is None else found.value
        if found is not None and node not in self.selected:
            # Warnings a pool process carried back for a task no item reports:
            # issued by the next item, where pytest records warnings.
            ended = found.error if found.error is not None else outcome
            self.deferred_warnings += as_messages(carried_by(ended))
        with self.changed:
            self.settled_count += 1
            self.last_settled = node
            if self.estimate is not None:
                self.estimate.settled(node)
            if outcome is not None and outcome.computed and node not in self.selected:
                self._upstream[0] += 1
                self._upstream[1] += outcome.seconds
            self.changed.notify_all()

    def take_upstream(self) -> tuple[int, float]:
        """Tasks computed only as upstream since the last call: (count, seconds)."""
        with self.changed:
            count, seconds = self._upstream
            self._upstream = [0, 0.0]
        return int(count), float(seconds)


def clear_selected(selected: list[TaskItem], options: Options) -> set[NodeKey]:
    """Clear the selected tasks once per run, even with several xdist workers."""
    from filelock import FileLock

    from ..cache import ensure_directory, prepare_root

    prepare_root(options.cache_root)
    run_dir = options.run_dir
    ensure_directory(run_dir)
    marker = run_dir / CLEARED_FILE
    results = 0
    with FileLock(str(run_dir / "clear.lock")):
        if not marker.exists():
            classes: set[str] = set()
            for item in selected:
                if _has_result(item.task, options.cache_root):
                    classes.add(type(item.task).__qualname__)
                    results += 1
                item.task.clear_task()
            # What the reporting process says in the summary (the xdist controller too).
            counts = {"results": results, "classes": len(classes), "selected": len(selected)}
            write_text_atomic(marker, json.dumps(counts))
    return {i.key for i in selected}


def _has_result(task: Any, root: Path) -> bool:
    from ..cache import get_store

    spec = spec_of(task)
    store = get_store(root, spec.name)
    task_id = store.known_id(spec.key)
    return task_id is not None and os.path.exists(store.record_path(task_id))


def dry_run(selected: list[TaskItem], options: Options) -> dict[str, Any]:
    """The selected tasks a run would compute, each with its reason, in item order."""
    stale: list[tuple[str, str]] = []
    if selected:
        from ..freshness import plan

        cleared = frozenset(i.key for i in selected) if options.clear else frozenset()
        graph = TaskGraph([i.task for i in selected])
        states = plan(graph, options.cache_root, options.detect_source_change, cleared)
        stale = [(i.nodeid, states[i.key].describe()) for i in selected if states[i.key].stale]
    return {"total": len(selected), "stale": stale}


def write_graph_structure(found: Collection, options: Options) -> None:
    """The collected graph (with planned states in a dry run) for the reporter to render."""
    if options.graph is None or not found.itemized:
        return
    from ..cache import ensure_directory
    from ..export import graph_structure
    from ..freshness import plan

    path = options.run_dir / GRAPH_FILE
    ensure_directory(path.parent)
    items = {k: i.nodeid for k, i in found.itemized.items()}
    graph = found.graph
    states = None
    if options.collect_only:
        states = plan(graph, options.cache_root, options.detect_source_change)
    write_text_atomic(path, json.dumps(graph_structure(graph, items, states)))


PLAN = pytest.StashKey[RunPlan]()
