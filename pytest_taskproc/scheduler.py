"""One pass over a planned graph, on any ``concurrent.futures.Executor`` (private).

The scheduler keeps, per stale task, the number of stale upstream tasks it
still waits for; a finished task decrements its downstream counters, and those
reaching zero are submitted.  Finished futures arrive through a queue fed by
``add_done_callback``, so each completion costs O(its edges) and a graph of
thousands of tasks is scheduled in linear time.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Container, Iterable, Mapping
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from types import MappingProxyType

import cloudpickle  # type: ignore[import-untyped]

from .cancel import request_stop
from .errors import CacheAccessError
from .executors import InlineExecutor, adapt, executor_width
from .freshness import Reason, TaskState, judge, reads_of
from .graph import NodeKey, TaskGraph
from .job import RunSettings
from .ledger import RUNNING_SUFFIX, Failure, marker_path
from .ratelimit import ChannelLimiter
from .record import UpstreamRead
from .recordmemory import Handed
from .relay import carried_by, reissue
from .worker import REPLAN_ERRORS, Job, JobResult, Outcome, describe, run_jobs, run_jobs_blob

LOGGER = logging.getLogger("pytest_taskproc")

FAST_TASK_SECONDS = 0.01
MAX_CHUNK = 64
#: How often a run on an executor that can grow (a Dask cluster) asks for its width.
WIDTH_POLL_SECONDS = 1.0

#: told, in the thread that runs the pass, of each task that got an outcome, failed or was blocked
Listener = Callable[[NodeKey], None]

_Ready = dict[tuple[str, ...], deque[NodeKey]]
_Done = queue.SimpleQueue["Future[list[JobResult]] | None"]


class GraphRun:
    """Passes over the stale tasks of a planned graph.

    ``run()`` computes every stale task; ``run(targets)`` only what the
    targets still need, so one planned graph can be worked through piece by
    piece (an item at a time) at a cost linear in the whole graph.  With
    ``keep_going`` a failure blocks only the tasks downstream of it and the
    rest goes on; ``cancel()`` (from any thread) stops submitting and cancels
    the jobs the executor has not started.  Failures are recorded, never
    raised: what ``run`` raises is the scheduler's own breakdown.
    """

    def __init__(
        self,
        graph: TaskGraph,
        states: dict[NodeKey, TaskState],
        executor: Callable[[], Executor],
        settings: RunSettings,
        limiter: ChannelLimiter | None = None,
    ) -> None:
        self.graph = graph
        self.states = states
        self.settings = settings
        self._start_executor = executor
        self._executor: Executor | None = None
        self._limiter = limiter or ChannelLimiter(None)
        #: the value each finished or fresh task holds now
        self._values: dict[NodeKey, UpstreamRead] = {
            k: reads_of(s.record) for k, s in states.items() if not s.stale and s.record
        }
        self._outcomes: dict[NodeKey, Outcome] = {}
        #: the record a job of this run committed, with the value it names: handed to
        #: downstream jobs while that value is the one they read
        self._handed: dict[NodeKey, tuple[UpstreamRead, Handed]] = {}
        #: every task that failed, over all calls (see ``forget``)
        self._failed: dict[NodeKey, BaseException] = {}
        #: stale tasks that cannot run: the failed (or withheld) upstream task in the way
        self._blocked: dict[NodeKey, NodeKey] = {}
        #: tasks computed, per class, over all calls (also when a pass fails)
        self._ran: dict[str, int] = defaultdict(int)
        self._durations: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        #: the failures of the latest ``run`` call, in the order they happened
        self._failures: list[tuple[NodeKey, BaseException]] = []
        self._cancelled = False
        self._done: _Done | None = None
        #: tasks the run gave up on while they were under way: their jobs' ends are ignored
        self._abandoned: set[NodeKey] = set()
        #: jobs given up on that had not ended when their pass did
        self._stragglers: list[Future[list[JobResult]]] = []
        #: ``abandon`` calls from other threads, for the pass to serve: (target, error, served)
        self._requests: list[tuple[NodeKey, BaseException, threading.Event]] = []
        self._requests_lock = threading.Lock()
        #: how many tasks the latest ``run`` call set out to compute
        self.size = 0

    # -- what it found (read-only views) ------------------------------------------------------
    @property
    def outcomes(self) -> Mapping[NodeKey, Outcome]:
        return MappingProxyType(self._outcomes)

    @property
    def failed(self) -> Mapping[NodeKey, BaseException]:
        return MappingProxyType(self._failed)

    @property
    def blocked(self) -> Mapping[NodeKey, NodeKey]:
        return MappingProxyType(self._blocked)

    @property
    def failures(self) -> tuple[tuple[NodeKey, BaseException], ...]:
        """The failures of the latest ``run`` call, in the order they happened."""
        return tuple(self._failures)

    @property
    def ran(self) -> Mapping[str, int]:
        return MappingProxyType(self._ran)

    # -- a pass ---------------------------------------------------------------------------------
    def run(
        self,
        targets: Iterable[NodeKey] | None = None,
        *,
        keep_going: bool = False,
        withheld: Container[NodeKey] = (),
        listener: Listener | None = None,
    ) -> None:
        """Compute the stale tasks (of ``targets`` and their upstream).

        Tasks done by earlier calls are not looked at again.  Tasks in
        ``withheld`` are not run, and neither is anything downstream of them.
        Without ``keep_going`` the first failure stops submitting; the jobs
        under way are still waited for.  ``listener`` hears of every task
        that got an outcome, failed or was blocked.
        """
        __tracebackhide__ = True
        tell = listener or _nobody
        if targets is not None:
            targets = list(targets)
        todo = self._block(self._stale_part(targets), withheld, tell)
        self.size = len(todo)
        self._failures = []
        if (
            targets is not None
            and not keep_going
            and any(t in self._blocked or t in self._failed for t in targets)
        ):
            return  # it cannot run: leave its other upstream tasks alone
        if not todo:
            return
        unassigned = assign_ids(self.states, todo)
        if unassigned:
            # A class whose id table cannot grow (a full disk, a read-only
            # cache): its tasks fail with that error, their downstream waits.
            for node, exc in unassigned.items():
                self._record_failure(node, exc)
                tell(node)
            todo = self._block(todo, (), tell)
            self.size = len(todo)
            if not todo or not keep_going:
                return
        if self._executor is None:  # started by the first pass that has work for it
            self._executor = adapt(self._start_executor())
        wanted = None if targets is None else list(targets)
        _Pass(self, todo, wanted, keep_going, tell, self._executor).drive()

    def cancel(self) -> None:
        """Stop the pass: submit nothing more, cancel what the executor has not started."""
        self._cancelled = True
        done = self._done
        if done is not None:
            done.put(None)  # wakes the loop if it waits for a job

    def abandon(self, target: NodeKey, error: BaseException) -> bool:
        """Give up on the target's work under way, from any thread; False: it was settled.

        Whatever ended the wait for the target (a pytest-timeout timeout) ends
        the work: the tasks of the target's chain that are running fail with
        ``error`` and are asked to stop (see ``cancel``), or, if none runs yet,
        the target itself does; what is downstream of them is blocked.
        """
        if self._settled(target):
            return False
        request = (target, error, threading.Event())
        with self._requests_lock:
            done = self._done
            if done is not None:  # a pass runs in another thread: it serves the request
                self._requests.append(request)
                done.put(None)
        if done is None:  # no pass runs: nothing of the target is under way; it fails
            self._give_up_on(target, error)
        else:
            request[2].wait()
        return True

    def end_stragglers(self) -> None:
        """End the processes of jobs given up on that still run (the run is over)."""
        stragglers, self._stragglers = self._stragglers, []
        if all(future.done() for future in stragglers):
            return
        pids = self._pool_pids()
        for node in self._abandoned:
            marker = self._marker(node)
            if marker is not None:  # its .running marker is gone once its job ended
                request_stop(marker, pids, hard=True)

    def forget(self, node: NodeKey) -> None:
        """Let a failed task run again (a rerun of its item, or a recovery)."""
        self._failed.pop(node, None)
        self._abandoned.discard(node)

    def forget_value(self, node: NodeKey) -> None:
        """The task's value is gone (damaged, say): it is to be made again, or judged again."""
        self._values.pop(node, None)
        self._outcomes.pop(node, None)
        self._handed.pop(node, None)
        self._blocked.pop(node, None)

    def adopt(self, other: GraphRun) -> None:
        """Take what a pass over a fresh plan of part of the graph found (a recovery)."""
        for node, state in other.states.items():
            self.states[node] = state
            self.forget(node)
            self.forget_value(node)
            if node in other._values:
                self._values[node] = other._values[node]
            if node in other._outcomes:
                self._outcomes[node] = other._outcomes[node]
            if node in other._failed:
                self._failed[node] = other._failed[node]
            if node in other._blocked:
                self._blocked[node] = other._blocked[node]
        for name, count in other._ran.items():
            self._ran[name] += count

    # -- giving up on work under way ------------------------------------------------------------
    def _settled(self, node: NodeKey) -> bool:
        return node in self._outcomes or node in self._failed or node in self._blocked

    def _marker(self, node: NodeKey) -> str | None:
        """The run's failure marker of the task (None: this run keeps none)."""
        task_id = self.states[node].task_id
        failure_dir = self.settings.failure_dir
        if failure_dir is None or task_id is None:
            return None
        return marker_path(failure_dir, self.states[node].store.name, task_id)

    def _pool_pids(self) -> frozenset[int]:
        """The executor's own pool processes: the only ones ever signalled."""
        processes = getattr(self._executor, "_processes", None) or {}
        return frozenset(processes)

    def _earlier_failure(self, node: NodeKey) -> BaseException | None:
        """The failure another process of the run recorded for the task, if any."""
        marker = self._marker(node)
        failure = None if marker is None else Failure.read(marker)
        return None if failure is None else failure.earlier(self.states[node].task)

    def _under_way(self, node: NodeKey) -> bool:
        marker = self._marker(node)
        return marker is not None and os.path.exists(marker + RUNNING_SUFFIX)

    def _give_up_on(self, node: NodeKey, error: BaseException) -> None:
        """Fail the task with ``error`` now: recorded for the run first, then stopped."""
        marker = self._marker(node)
        if marker is not None:
            # A job that has not started yet sees it and does not start; one under
            # way is stopped, or finds it before it writes its value.
            Failure.of(error).write(marker, error)
            if not request_stop(marker, self._pool_pids()):
                stop_job = getattr(self._executor, "stop_job", None)  # Dask: in its worker
                if callable(stop_job):
                    stop_job(marker)
        self._abandoned.add(node)
        self._record_failure(node, error)

    # -- planning a pass ------------------------------------------------------------------------
    def _open(self, node: NodeKey) -> bool:
        return self.states[node].stale and node not in self._outcomes

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

    def _block(
        self, part: list[NodeKey], withheld: Container[NodeKey], tell: Listener
    ) -> list[NodeKey]:
        """Mark the tasks of ``part`` behind a failed or withheld task; the others, in order."""
        culprits: dict[NodeKey, NodeKey] = {}
        todo = []
        for node in part:
            self._blocked.pop(node, None)
            if node in self._failed or node in withheld:
                culprits[node] = node
                continue
            culprit = next((culprits[u] for u in self.graph.upstream(node) if u in culprits), None)
            if culprit is None:
                todo.append(node)
                continue
            culprits[node] = culprit
            self._blocked[node] = culprit
            tell(node)
        return todo

    def _channels(self, node: NodeKey) -> tuple[str, ...]:
        return self.states[node].spec.config.channels

    def _job(self, node: NodeKey) -> Job:
        state = self.states[node]
        assert state.task_id is not None
        ups = self.graph.upstream(node)
        reads = tuple(self._values[u] for u in ups)
        return Job(
            task=state.task,
            task_id=state.task_id,
            settings=self.settings,
            reads=reads,
            upstream_ids=tuple(self.states[u].task_id or 0 for u in ups),
            code=state.code.digest,
            handed=tuple(self._handed_for(u, read) for u, read in zip(ups, reads, strict=True)),
        )

    def _handed_for(self, node: NodeKey, read: UpstreamRead) -> Handed | None:
        handed = self._handed.get(node)
        return handed[1] if handed is not None and handed[0] == read else None

    def _learn(self, node: NodeKey, outcome: Outcome) -> None:
        self._outcomes[node] = outcome
        self._values[node] = read = outcome.read()
        if outcome.handed is not None:
            self._handed[node] = (read, outcome.handed)
        else:
            self._handed.pop(node, None)
        if outcome.computed:
            self._ran[node[0]] += 1
            samples = self._durations[node[0]]
            samples[0] += 1
            samples[1] += outcome.seconds

    def _record_failure(self, node: NodeKey, exc: BaseException) -> None:
        self._failures.append((node, exc))
        self._failed[node] = exc
        if (
            not self.settings.log_failures
            or isinstance(exc, REPLAN_ERRORS)
            or isinstance(self._executor, InlineExecutor)
        ):
            return  # the caller handles these itself
        state = self.states[node]
        LOGGER.error(
            "task %s failed with %s: %s",
            describe(state.task, state.store, state.task_id),
            type(exc).__name__,
            exc,
        )


def _nobody(node: NodeKey) -> None:
    pass


class _Pass:
    """One call of ``GraphRun.run``: counters of waiting upstream tasks, jobs in flight."""

    def __init__(
        self,
        run: GraphRun,
        todo: list[NodeKey],
        targets: list[NodeKey] | None,
        keep_going: bool,
        tell: Listener,
        executor: Executor,
    ) -> None:
        self.run = run
        self.todo = todo
        self.targets = targets
        self.keep_going = keep_going
        self.tell = tell
        self.failed = False
        planned = set(todo)
        upstream = run.graph.upstream
        self.waiting = {k: sum(1 for u in upstream(k) if u in planned) for k in todo}
        self.ready: _Ready = defaultdict(deque)
        self.settled: deque[NodeKey] = deque()
        self.pending: dict[Future[list[JobResult]], list[NodeKey]] = {}
        self.finished = 0
        self.executor = executor
        self.pickle_jobs = not isinstance(executor, (ThreadPoolExecutor, InlineExecutor))
        self.workers = executor_width(executor)
        self.growable = callable(getattr(executor, "current_width", None))
        self.last_progress = 0.0

    def drive(self) -> None:
        __tracebackhide__ = True
        run = self.run
        for k in self.todo:
            if self.waiting[k] == 0:
                self._make_ready(k)
        done: _Done = queue.SimpleQueue()
        with run._requests_lock:
            run._done = done
        if run._cancelled:
            done.put(None)
        try:
            while self._step(done):
                pass
        finally:
            with run._requests_lock:
                self._serve_requests()
                run._done = None
            # Jobs given up on that still run: nobody waits for them (see end_stragglers).
            run._stragglers.extend(self.pending)
        if run.settings.show_progress and self.todo:
            print(file=sys.stderr)

    def _step(self, done: _Done) -> bool:
        """Settle what is settled, submit what is ready, take one finished chunk; False: done."""
        __tracebackhide__ = True
        if self.run._requests:
            with self.run._requests_lock:
                self._serve_requests()
        while self.settled:  # found fresh once their upstream was done: nothing to run
            node = self.settled.popleft()
            self.finished += 1
            self.tell(node)
            self._release_downstream(node)
        if not self.run._cancelled and (self.keep_going or not self.failed):
            self._submit_ready(done)
        if not self._awaited():
            return bool(self.settled)
        try:
            future = self._next_done(done)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            # Whatever ended this thread's wait (a pytest-timeout timeout of the item
            # that runs the pass) ends the work it waited for, as it would inline.
            self._give_up(self.targets, exc)
            for waiting_future in list(self.pending):
                waiting_future.cancel()  # only those not started yet
            return False
        if future is None:
            if self.run._cancelled:
                for waiting_future in list(self.pending):
                    waiting_future.cancel()  # only those not started yet
            return True
        self._take(future)
        self._show_progress()
        return True

    def _take(self, future: Future[list[JobResult]]) -> None:
        run = self.run
        nodes = self.pending.pop(future)
        try:
            results = future.result()
        except BaseException as exc:
            results = [(False, exc)] * len(nodes)
        for node, (ok, value) in zip(nodes, results, strict=True):
            run._limiter.release(run._channels(node))
            if node in run._abandoned:
                continue  # failed when the run gave up on it; how it ended is moot
            if run.settings.log_failures:  # a library run: its caller sees the warnings
                reissue(carried_by(value))
            if not ok:
                if not (run._cancelled and isinstance(value, CancelledError)):
                    self.failed = True
                    run._record_failure(node, value)
                    self.tell(node)
                    self._block_downstream(node)
                continue
            self.finished += 1
            run._learn(node, value)
            self.tell(node)
            self._release_downstream(node)

    # -- giving up on work under way ----------------------------------------------------------
    def _awaited(self) -> bool:
        """Whether a job this pass still waits for is in flight (not one given up on)."""
        abandoned = self.run._abandoned
        return any(not abandoned.issuperset(nodes) for nodes in self.pending.values())

    def _serve_requests(self) -> None:
        """``abandon`` calls from other threads (the caller holds the requests lock)."""
        run = self.run
        requests, run._requests = run._requests, []
        try:
            for target, error, _ in requests:
                if not run._settled(target):
                    self._give_up([target], error)
        finally:  # whatever happens here, no caller is left waiting
            for _, _, served in requests:
                served.set()

    def _give_up(self, targets: list[NodeKey] | None, error: BaseException) -> None:
        """Fail the running tasks of the targets' chains, else the targets themselves."""
        run = self.run
        chain = set(self.todo) if targets is None else self._chain(targets)
        running = [
            node
            for nodes in self.pending.values()
            for node in nodes
            if node in chain and node not in run._abandoned and run._under_way(node)
        ]
        if not running and targets is not None:
            # Nothing of the chain runs here.  An upstream task another process of
            # the run saw fail (an xdist worker whose own item timed out on it) is
            # what held the target up: it fails with that failure, and the target
            # is blocked by it; otherwise the target itself ends with ``error``.
            earlier = [(n, e) for n in chain if (e := run._earlier_failure(n)) is not None]
            for node, failure in earlier:
                if not run._settled(node):
                    run._abandoned.add(node)
                    run._record_failure(node, failure)
                    self._settle_failed(node)
            if earlier:
                return
            running = [t for t in targets if t in chain and not run._settled(t)]
        for node in running:
            run._give_up_on(node, error)
            self._settle_failed(node)

    def _settle_failed(self, node: NodeKey) -> None:
        """A task failed outside the usual end of its job: nothing waits for it to run."""
        self.failed = True
        self.waiting[node] = -1  # never made ready, if it was not yet
        for nodes in self.ready.values():
            if node in nodes:
                nodes.remove(node)
        self.tell(node)
        self._block_downstream(node)

    def _chain(self, targets: list[NodeKey]) -> set[NodeKey]:
        """The targets and their upstream tasks in this pass."""
        planned = self.waiting
        chain: set[NodeKey] = set()
        stack = [t for t in targets if t in planned]
        while stack:
            node = stack.pop()
            if node in chain:
                continue
            chain.add(node)
            stack.extend(u for u in self.run.graph.upstream(node) if u in planned)
        return chain

    def _show_progress(self) -> None:
        if not self.run.settings.show_progress:
            return
        total = len(self.todo)
        if self.finished == total or time.monotonic() - self.last_progress > 0.2:
            self.last_progress = time.monotonic()
            print(f"\rtaskproc: {self.finished}/{total} tasks", end="", file=sys.stderr)

    def _next_done(self, done: _Done) -> Future[list[JobResult]] | None:
        if not self.growable:
            return done.get()
        # Wake up now and then: workers that joined can take more jobs.
        self.workers = executor_width(self.executor)
        try:
            return done.get(timeout=WIDTH_POLL_SECONDS)
        except queue.Empty:
            return None

    def _block_downstream(self, node: NodeKey) -> None:
        """Nothing downstream of a failed task runs in this pass."""
        run, waiting = self.run, self.waiting
        stack = [node]
        while stack:
            here = stack.pop()
            for down in run.graph.downstream(here):
                if waiting.get(down, 0) > 0 and down not in run._blocked:
                    waiting[down] = -1  # never reaches zero
                    run._blocked[down] = node
                    self.tell(down)
                    stack.append(down)

    def _make_ready(self, node: NodeKey) -> None:
        """All upstream done: run the task, unless that showed it fresh after all."""
        run = self.run
        state = run.states[node]
        if state.reason is Reason.UPSTREAM_STALE:
            upstream = {u: run._values[u] for u in run.graph.upstream(node)}
            code = state.code if run.settings.detect_source_change else None
            state.reason, state.detail = judge(
                state.spec, state.record, code, upstream, run.graph.tasks
            )
            if state.reason is None and state.record is not None:
                # Early cutoff: the upstream values it was made from came back unchanged.
                run._values[node] = reads_of(state.record)
                run._outcomes[node] = Outcome.of(state.record, 0.0, computed=False)
                self.settled.append(node)
                return
        self.ready[run._channels(node)].append(node)

    def _release_downstream(self, node: NodeKey) -> None:
        waiting = self.waiting
        for down in self.run.graph.downstream(node):
            if down in waiting:
                waiting[down] -= 1
                if waiting[down] == 0:
                    self._make_ready(down)

    def _chunk_size(self, name: str, backlog: int) -> int:
        """How many ready tasks of one class to send to a worker at once.

        Sending jobs one by one costs a round trip each (~0.2 ms), which
        dominates trivial tasks; batching long tasks would starve workers.
        So a class is batched only once three of its tasks were seen to take
        under 10 ms on average, and batches shrink as the backlog drains.
        """
        count, total = self.run._durations[name]
        if self.pickle_jobs is False or count < 3 or total / count > FAST_TASK_SECONDS:
            return 1
        return max(1, min(MAX_CHUNK, backlog // (2 * self.workers)))

    def _submit_ready(self, done: _Done) -> None:
        limiter = self.run._limiter
        for channels, nodes in self.ready.items():
            while nodes and len(self.pending) < 2 * self.workers:
                size = self._chunk_size(channels[0], len(nodes))
                chunk: list[NodeKey] = []
                while nodes and len(chunk) < size and limiter.try_acquire(channels):
                    chunk.append(nodes.popleft())
                if not chunk:
                    break
                future = self._submit(chunk)
                self.pending[future] = chunk
                future.add_done_callback(done.put)

    def _submit(self, nodes: list[NodeKey]) -> Future[list[JobResult]]:
        run = self.run
        jobs = [run._job(node) for node in nodes]
        executor = self.executor
        submit_jobs = getattr(executor, "submit_jobs", None)  # names the jobs (Dask)
        if submit_jobs is not None:
            future: Future[list[JobResult]] = submit_jobs(jobs, run._channels(nodes[0]))
            return future
        if self.pickle_jobs:
            return executor.submit(run_jobs_blob, cloudpickle.dumps(jobs))
        return executor.submit(run_jobs, jobs)


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
