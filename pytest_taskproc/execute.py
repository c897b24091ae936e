"""Running the stale part of a task graph on any ``concurrent.futures.Executor``.

The scheduler keeps, per stale task, the number of stale upstream tasks it
still waits for; a finished task decrements its downstream counters, and those
reaching zero are submitted.  Finished futures arrive through a queue fed by
``add_done_callback``, so each completion costs O(its edges) and a graph of
thousands of tasks is scheduled in linear time.
"""

from __future__ import annotations

import logging
import queue
import sys
import time
import uuid
import warnings
from collections import defaultdict, deque
from collections.abc import Callable, Container, Iterable, Mapping
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from .cache import get_store
from .context import Context, cache_root
from .errors import (
    CacheAccessError,
    CacheCorruptionWarning,
    CorruptResultError,
    ResultMissingError,
)
from .executors import InlineExecutor, adapt, executor_width
from .freshness import Reason, TaskState, judge, plan, reads_of
from .graph import NodeKey, TaskGraph
from .ratelimit import ChannelLimiter, FileSlots
from .record import UpstreamRead
from .spec import node_key, spec_of
from .worker import REPLAN_ERRORS, Job, JobResult, Outcome, describe, run_jobs, run_jobs_blob

LOGGER = logging.getLogger("pytest_taskproc")

#: How often one call may plan again after a damaged result or an upstream value
#: that another process changed under it.
MAX_RECOVERIES = 8


FAST_TASK_SECONDS = 0.01
MAX_CHUNK = 64
#: How often a run on an executor that can grow (a Dask cluster) asks for its width.
WIDTH_POLL_SECONDS = 1.0

__all__ = ["GraphRun", "InlineExecutor", "assign_ids", "discard_corrupt", "run_graph"]


class GraphRun:
    """Passes over the stale tasks of a planned graph.

    ``run()`` computes every stale task; ``run(targets)`` only what the
    targets still need, so one planned graph can be worked through piece by
    piece (an item at a time) at a cost linear in the whole graph.  With
    ``keep_going`` a failure blocks only the tasks downstream of it and the
    rest goes on; ``cancel()`` (from any thread) stops submitting and cancels
    the jobs the executor has not started.
    """

    def __init__(
        self,
        graph: TaskGraph,
        states: dict[NodeKey, TaskState],
        cache_root: Path,
        executor: Executor,
        limiter: ChannelLimiter,
        *,
        detect_source_change: bool = False,
        lock: bool = True,
        echo: bool = False,
        show_progress: bool = False,
        slots: FileSlots | None = None,
        failure_dir: str | None = None,
        run_id: str | None = None,
        on_settled: Callable[[NodeKey], None] | None = None,
        log_failures: bool = True,
    ) -> None:
        self.slots = slots
        self.failure_dir = failure_dir
        self.graph = graph
        self.states = states
        self.cache_root = cache_root
        executor = adapt(executor)
        self.executor = executor
        self.limiter = limiter
        self.detect = detect_source_change
        self.lock = lock
        self.echo = echo
        self.run_id = run_id or uuid.uuid4().hex
        self.pickle_jobs = not isinstance(executor, (ThreadPoolExecutor, InlineExecutor))
        self.show_progress = show_progress
        self.last_progress = 0.0
        #: called (in the thread that runs) whenever a task got an outcome, failed or was blocked
        self.on_settled = on_settled
        self.log_failures = log_failures
        #: the value each finished or fresh task holds now
        self.values: dict[NodeKey, UpstreamRead] = {
            k: reads_of(s.record) for k, s in states.items() if not s.stale and s.record
        }
        self.outcomes: dict[NodeKey, Outcome] = {}
        #: tasks computed by this pass, per class (also when the pass fails)
        self.ran: dict[str, int] = defaultdict(int)
        #: the failures of the latest ``run`` call, in the order they happened
        self.failures: list[tuple[NodeKey, BaseException]] = []
        #: every task that failed, over all calls (see ``forget``)
        self.failed: dict[NodeKey, BaseException] = {}
        #: stale tasks that cannot run: the failed (or withheld) upstream task in the way
        self.blocked: dict[NodeKey, NodeKey] = {}
        self.durations: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self.workers = executor_width(executor)
        self.max_in_flight = 2 * self.workers
        self.growable = callable(getattr(executor, "current_width", None))
        #: how many tasks the latest ``run`` call set out to compute
        self.size = 0
        self._cancelled = False
        self._done: queue.SimpleQueue[Future[list[JobResult]] | None] | None = None

    def run(
        self,
        targets: Iterable[NodeKey] | None = None,
        *,
        keep_going: bool = False,
        withheld: Container[NodeKey] = (),
    ) -> dict[str, int]:
        """Compute the stale tasks (of ``targets`` and their upstream); per-class counts.

        Tasks done by earlier calls are not looked at again.  Tasks in
        ``withheld`` are not run, and neither is anything downstream of them.
        Without ``keep_going`` the first failure stops the pass and is raised
        once the jobs under way are done; with it, nothing is raised (see
        ``failures``, ``failed`` and ``blocked``).
        """
        __tracebackhide__ = True
        ran = self.ran
        self.failures = []
        part = self._stale_part(targets)
        todo = self._block(part, withheld)
        self.size = len(todo)
        if (
            targets is not None
            and not keep_going
            and any(t in self.blocked or t in self.failed for t in targets)
        ):
            return dict(ran)  # it cannot run: leave its other upstream tasks alone
        unassigned = self.assign_ids(todo)
        if unassigned:
            # A class whose id table cannot grow (a full disk, a read-only
            # cache): its tasks fail with that error, their downstream waits.
            for node, exc in unassigned.items():
                self._record_failure(node, exc)
                self._settled(node)
            todo = self._block(todo, ())
            self.size = len(todo)
        planned = set(todo)
        waiting = {k: sum(1 for u in self.graph.upstream(k) if u in planned) for k in todo}
        ready: dict[tuple[str, ...], deque[NodeKey]] = defaultdict(deque)
        settled: deque[NodeKey] = deque()
        for k in todo:
            if waiting[k] == 0:
                self._make_ready(k, ready, settled)
        done: queue.SimpleQueue[Future[list[JobResult]] | None] = queue.SimpleQueue()
        self._done = done
        if self._cancelled:
            done.put(None)
        pending: dict[Future[list[JobResult]], list[NodeKey]] = {}
        finished = 0
        while True:
            while settled:  # found fresh once their upstream was done: nothing to run
                node = settled.popleft()
                finished += 1
                self._settled(node)
                self._release_downstream(node, waiting, ready, settled)
            if not self._cancelled and (keep_going or not self.failures):
                self._submit_ready(ready, pending, done)
            if not pending:
                if settled:
                    continue
                break
            future = self._next_done(done)
            if future is None:
                if self._cancelled:
                    for waiting_future in list(pending):
                        waiting_future.cancel()  # only those not started yet
                continue
            nodes = pending.pop(future)
            try:
                results = future.result()
            except BaseException as exc:
                results = [(False, exc)] * len(nodes)
            for node, (ok, value) in zip(nodes, results, strict=True):
                self.limiter.release(self._channels(node))
                if not ok:
                    if not (self._cancelled and isinstance(value, CancelledError)):
                        self._record_failure(node, value)
                        self._settled(node)
                        self._block_downstream(node, waiting)
                    continue
                finished += 1
                self._learn(node, value)
                if value.computed:
                    ran[node[0]] += 1
                self._settled(node)
                self._release_downstream(node, waiting, ready, settled)
            if self.show_progress and (
                finished == len(todo) or time.monotonic() - self.last_progress > 0.2
            ):
                self.last_progress = time.monotonic()
                print(f"\rtaskproc: {finished}/{len(todo)} tasks", end="", file=sys.stderr)
        self._done = None
        if self.show_progress and todo:
            print(file=sys.stderr)
        if self.failures and not keep_going:
            raise self.failures[0][1]
        return dict(ran)

    def cancel(self) -> None:
        """Stop the pass: submit nothing more, cancel what the executor has not started."""
        self._cancelled = True
        done = self._done
        if done is not None:
            done.put(None)  # wakes the loop if it waits for a job

    def forget(self, node: NodeKey) -> None:
        """Let a failed task run again (a rerun of its item)."""
        self.failed.pop(node, None)

    def forget_value(self, node: NodeKey) -> None:
        """The task's value is gone (damaged, say): it is to be made again, or judged again."""
        self.values.pop(node, None)
        self.outcomes.pop(node, None)
        self.blocked.pop(node, None)

    def settled(self, node: NodeKey) -> bool:
        """Whether this pass is done with the task: it has an outcome, failed or is blocked."""
        return node in self.outcomes or node in self.failed or node in self.blocked

    def learn(self, node: NodeKey, outcome: Outcome) -> None:
        """Take an outcome found by another pass (a recovery) as this pass's own."""
        self.blocked.pop(node, None)
        self.failed.pop(node, None)
        self._learn(node, outcome)

    def _next_done(
        self, done: queue.SimpleQueue[Future[list[JobResult]] | None]
    ) -> Future[list[JobResult]] | None:
        if not self.growable:
            return done.get()
        # Wake up now and then: workers that joined can take more jobs.
        self.workers = executor_width(self.executor)
        self.max_in_flight = 2 * self.workers
        try:
            return done.get(timeout=WIDTH_POLL_SECONDS)
        except queue.Empty:
            return None

    def _open(self, node: NodeKey) -> bool:
        return self.states[node].stale and node not in self.outcomes

    def _stale_part(self, targets: Iterable[NodeKey] | None) -> list[NodeKey]:
        """The stale tasks not done yet that ``targets`` need, upstream first.

        The walk stops at tasks that are fresh or done, so working through a
        graph target by target visits each task about once.
        """
        if targets is None:
            return [k for k in self.graph.order if self._open(k)]
        order: list[NodeKey] = []
        seen: set[NodeKey] = set()
        upstream = self.graph.upstream
        for target in targets:
            if target in seen or not self._open(target):
                continue
            seen.add(target)
            stack = [(target, iter(upstream(target)))]
            while stack:
                here, ups = stack[-1]
                for up in ups:
                    if up not in seen and self._open(up):
                        seen.add(up)
                        stack.append((up, iter(upstream(up))))
                        break
                else:
                    stack.pop()
                    order.append(here)
        return order

    def _block(self, part: list[NodeKey], withheld: Container[NodeKey]) -> list[NodeKey]:
        """Mark the tasks of ``part`` behind a failed or withheld task; the others, in order."""
        culprits: dict[NodeKey, NodeKey] = {}
        todo = []
        for node in part:
            self.blocked.pop(node, None)
            if node in self.failed or node in withheld:
                culprits[node] = node
                continue
            culprit = next((culprits[u] for u in self.graph.upstream(node) if u in culprits), None)
            if culprit is None:
                todo.append(node)
                continue
            culprits[node] = culprit
            self.blocked[node] = culprit
            self._settled(node)
        return todo

    def _block_downstream(self, node: NodeKey, waiting: dict[NodeKey, int]) -> None:
        """Nothing downstream of a failed task runs in this pass."""
        stack = [node]
        while stack:
            here = stack.pop()
            for down in self.graph.downstream(here):
                if waiting.get(down, 0) > 0 and down not in self.blocked:
                    waiting[down] = -1  # never reaches zero
                    self.blocked[down] = node
                    self._settled(down)
                    stack.append(down)

    def _settled(self, node: NodeKey) -> None:
        if self.on_settled is not None:
            self.on_settled(node)

    def assign_ids(self, stale: Iterable[NodeKey]) -> dict[NodeKey, CacheAccessError]:
        return assign_ids(self.states, stale)

    def _make_ready(
        self,
        node: NodeKey,
        ready: dict[tuple[str, ...], deque[NodeKey]],
        settled: deque[NodeKey],
    ) -> None:
        """All upstream done: run the task, unless that showed it fresh after all."""
        state = self.states[node]
        if state.reason is Reason.UPSTREAM_STALE:
            upstream = {u: self.values[u] for u in self.graph.upstream(node)}
            code = state.code if self.detect else None
            state.reason, state.detail = judge(
                state.spec, state.record, code, upstream, self.graph.tasks
            )
            if state.reason is None and state.record is not None:
                # Early cutoff: the upstream values it was made from came back unchanged.
                self.values[node] = reads_of(state.record)
                self.outcomes[node] = Outcome.of(state.record, 0.0, computed=False)
                settled.append(node)
                return
        ready[self._channels(node)].append(node)

    def _release_downstream(
        self,
        node: NodeKey,
        waiting: dict[NodeKey, int],
        ready: dict[tuple[str, ...], deque[NodeKey]],
        settled: deque[NodeKey],
    ) -> None:
        for down in self.graph.downstream(node):
            if down in waiting:
                waiting[down] -= 1
                if waiting[down] == 0:
                    self._make_ready(down, ready, settled)

    def _learn(self, node: NodeKey, outcome: Outcome) -> None:
        self.outcomes[node] = outcome
        self.values[node] = outcome.read()
        if outcome.computed:
            samples = self.durations[node[0]]
            samples[0] += 1
            samples[1] += outcome.seconds

    def _chunk_size(self, name: str, backlog: int) -> int:
        """How many ready tasks of one class to send to a worker at once.

        Sending jobs one by one costs a round trip each (~0.2 ms), which
        dominates trivial tasks; batching long tasks would starve workers.
        So a class is batched only once three of its tasks were seen to take
        under 10 ms on average, and batches shrink as the backlog drains.
        """
        count, total = self.durations[name]
        if self.pickle_jobs is False or count < 3 or total / count > FAST_TASK_SECONDS:
            return 1
        return max(1, min(MAX_CHUNK, backlog // (2 * self.workers)))

    def _submit_ready(
        self,
        ready: dict[tuple[str, ...], deque[NodeKey]],
        pending: dict[Future[list[JobResult]], list[NodeKey]],
        done: queue.SimpleQueue[Future[list[JobResult]] | None],
    ) -> None:
        for channels, nodes in ready.items():
            while nodes and len(pending) < self.max_in_flight:
                size = self._chunk_size(channels[0], len(nodes))
                chunk: list[NodeKey] = []
                while nodes and len(chunk) < size and self.limiter.try_acquire(channels):
                    chunk.append(nodes.popleft())
                if not chunk:
                    break
                future = self._submit(chunk)
                pending[future] = chunk
                future.add_done_callback(done.put)

    def _channels(self, node: NodeKey) -> tuple[str, ...]:
        return self.states[node].spec.config.channels

    def job(self, node: NodeKey) -> Job:
        state = self.states[node]
        assert state.task_id is not None
        ups = self.graph.upstream(node)
        return Job(
            task=state.task,
            cache_root=str(self.cache_root),
            task_id=state.task_id,
            reads=tuple(self.values[u] for u in ups),
            upstream_ids=tuple(self.states[u].task_id or 0 for u in ups),
            code=state.code.digest,
            detect_source_change=self.detect,
            lock=self.lock,
            echo=self.echo,
            slots=self.slots,
            failure_dir=self.failure_dir,
            run=self.run_id,
        )

    def _submit(self, nodes: list[NodeKey]) -> Future[list[JobResult]]:
        jobs = [self.job(node) for node in nodes]
        submit_jobs = getattr(self.executor, "submit_jobs", None)  # names the jobs (Dask)
        if submit_jobs is not None:
            future: Future[list[JobResult]] = submit_jobs(jobs, self._channels(nodes[0]))
            return future
        if self.pickle_jobs:
            return self.executor.submit(run_jobs_blob, cloudpickle.dumps(jobs))
        return self.executor.submit(run_jobs, jobs)

    def _record_failure(self, node: NodeKey, exc: BaseException) -> None:
        self.failures.append((node, exc))
        self.failed[node] = exc
        if (
            not self.log_failures
            or isinstance(exc, REPLAN_ERRORS)
            or isinstance(self.executor, InlineExecutor)
        ):
            return  # the caller handles these itself
        state = self.states[node]
        LOGGER.error(
            "task %s failed with %s: %s",
            describe(state.task, state.store, state.task_id),
            type(exc).__name__,
            exc,
        )


def assign_ids(
    states: Mapping[NodeKey, TaskState], stale: Iterable[NodeKey]
) -> dict[NodeKey, CacheAccessError]:
    """Tasks about to be written need ids; planning gave ids only to known ones.

    One write of each class's id table for all of them: a table write costs
    milliseconds, so a graph computed task by task assigns its ids up front.
    Returns the error of each task whose class's table could not be written.
    """
    by_class: dict[str, list[NodeKey]] = defaultdict(list)
    for k in stale:
        if states[k].task_id is None:
            by_class[k[0]].append(k)
    unassigned: dict[NodeKey, CacheAccessError] = {}
    for nodes in by_class.values():
        store = states[nodes[0]].store
        try:
            ids = store.task_ids([n[1] for n in nodes])
        except CacheAccessError as exc:
            unassigned.update(dict.fromkeys(nodes, exc))
            continue
        for node, task_id in zip(nodes, ids, strict=True):
            states[node].task_id = task_id
    return unassigned


def run_graph(
    task: Any,
    *,
    executor: Executor | None,
    max_workers: int | None,
    rate_limits: Mapping[str, int] | None,
    detect_source_change: bool | None,
    show_progress: bool,
) -> tuple[Any, dict[str, Any]]:
    """Make ``task`` and its upstream fresh; return its result and per-class run counts."""
    if executor is not None and max_workers is not None:
        raise ValueError("run_graph: give either executor or max_workers, not both")
    detect = Context.detect_source_change if detect_source_change is None else detect_source_change
    limiter = ChannelLimiter(rate_limits)
    root = cache_root()
    graph = TaskGraph([task])
    counts = dict.fromkeys(sorted({k[0] for k in graph.tasks}), 0)
    seconds = 0.0
    own: Executor | None = None
    run_id = uuid.uuid4().hex
    try:
        for _ in range(MAX_RECOVERIES):
            states = plan(graph, root, detect)
            root_state = states[node_key(task)]
            try:
                if any(s.stale for s in states.values()):
                    if executor is None and own is None:
                        own = Context.get_executor(max_workers)
                    run = GraphRun(
                        graph,
                        states,
                        root,
                        executor or own,  # type: ignore[arg-type]
                        limiter,
                        detect_source_change=detect,
                        show_progress=show_progress,
                        run_id=run_id,
                    )
                    start = time.perf_counter()
                    try:
                        run.run()
                    finally:
                        seconds += time.perf_counter() - start
                        for name, n in run.ran.items():
                            counts[name] += n
                assert root_state.task_id is not None
                result = root_state.store.load_value(root_state.task_id, spec_of(task).key)[0]
            except (*REPLAN_ERRORS, ResultMissingError) as exc:
                # A result cleared by another process between computing and
                # loading it is computed again, as clearing promises.
                if isinstance(exc, CorruptResultError):
                    discard_corrupt(root, exc)
                continue
            return result, {"stats": counts, "seconds": seconds}
        raise CorruptResultError(
            f"{task!r}: cached results kept coming back damaged or changed by another process "
            f"after {MAX_RECOVERIES} attempts; is something else writing to the cache?"
        )
    finally:
        if own is not None:
            own.shutdown(wait=True, cancel_futures=True)


def discard_corrupt(cache_root: Path, exc: CorruptResultError) -> None:
    """Warn about a damaged result and drop it, so the next plan recomputes it."""
    warnings.warn(CacheCorruptionWarning(f"{exc}; recomputing it"), stacklevel=3)
    store = get_store(cache_root, exc.task_name)
    task_id = store.known_id(exc.task_key)
    if task_id is not None:
        store.discard_result(task_id)
