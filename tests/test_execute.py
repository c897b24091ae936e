"""Running task graphs: executors, run statistics, rate limits and failures."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import TaskModules

from pytest_taskproc import Context, ResultMissingError
from pytest_taskproc.errors import CacheCorruptionWarning
from pytest_taskproc.execute import InlineExecutor, Run, RunSettings, Settled
from pytest_taskproc.graph import TaskGraph
from pytest_taskproc.spec import node_key

CHOOSE = """
@infer_task_type
class Choose(TaskBase):
    prev1: Requires[int]
    prev2: Requires[int]

    def build_task(self, n: int, k: int) -> None:
        if 0 < k < n:
            self.prev1 = Choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)
        elif k == 0 or k == n:
            self.prev1 = Const(0)
            self.prev2 = Const(1)
        else:
            raise ValueError((n, k))

    def run_task(self) -> int:
        log("run", "Choose", self.task_args["n"], self.task_args["k"], os.getpid())
        return self.prev1 + self.prev2


class Table(TaskBase):
    row: RequiresList[int]

    def build_task(self, n: int) -> None:
        self.row = [Choose(n, k) for k in range(n + 1)]

    def run_task(self) -> list[int]:
        log("run", "Table", os.getpid())
        return self.row
"""

#: Tasks in the graph of ``Choose(6, 3)``: every (n, k) with k <= 3 and n - k <= 3.
CHOOSE_6_3_TASKS = 15


@pytest.fixture
def choose(modules: TaskModules) -> ModuleType:
    return modules.load("choose", CHOOSE)


def run_pids(modules: TaskModules) -> set[str]:
    return {line.split()[-1] for line in modules.runs()}


def test_default_process_pool_computes_the_graph(choose: ModuleType, modules: TaskModules) -> None:
    result, stats = choose.Choose(6, 3).run_graph_with_stats()
    assert result == 20
    assert stats["stats"] == {"choose.Choose": CHOOSE_6_3_TASKS}
    assert len(modules.runs()) == CHOOSE_6_3_TASKS
    assert str(os.getpid()) not in run_pids(modules)


def test_stats_count_tasks_run_by_this_call_per_class(
    choose: ModuleType, modules: TaskModules
) -> None:
    choose.Choose(4, 2).run_graph()  # 8 of the 14 Choose tasks that Table(4) needs
    assert len(modules.runs()) == 8
    modules.clear_log()
    result, stats = choose.Table(4).run_graph_with_stats()
    assert result == [1, 4, 6, 4, 1]
    assert stats["stats"] == {"choose.Choose": 6, "choose.Table": 1}
    assert len(modules.runs()) == 7


def test_fully_cached_call_reports_zeros_for_every_class(
    choose: ModuleType, modules: TaskModules
) -> None:
    choose.Table(3).run_graph()
    modules.clear_log()
    result, stats = choose.Table(3).run_graph_with_stats()
    assert result == [1, 3, 3, 1]
    assert stats["stats"] == {"choose.Choose": 0, "choose.Table": 0}
    assert modules.runs() == []


def test_thread_pool_executor_runs_tasks_in_this_process(
    choose: ModuleType, modules: TaskModules
) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        result, stats = choose.Choose(6, 3).run_graph_with_stats(executor=pool)
    assert result == 20
    assert stats["stats"] == {"choose.Choose": CHOOSE_6_3_TASKS}
    assert run_pids(modules) == {str(os.getpid())}


def test_max_workers_sizes_the_default_pool(choose: ModuleType, modules: TaskModules) -> None:
    assert choose.Choose(6, 3).run_graph(max_workers=1) == 20
    pids = run_pids(modules)
    assert len(pids) == 1
    assert str(os.getpid()) not in pids


def test_executor_and_max_workers_together_are_refused(choose: ModuleType) -> None:
    with (
        ThreadPoolExecutor(1) as pool,
        pytest.raises(ValueError, match="either executor or max_workers"),
    ):
        choose.Choose(2, 1).run_graph(executor=pool, max_workers=2)


def test_context_chooses_a_thread_pool_by_name(
    choose: ModuleType, modules: TaskModules, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Context, "executor_name", "thread")
    assert choose.Choose(3, 1).run_graph() == 3
    assert run_pids(modules) == {str(os.getpid())}


def test_context_refuses_an_unknown_executor_name(
    choose: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Context, "executor_name", "gpu")
    with pytest.raises(ValueError, match=r"unknown executor name 'gpu' \(CP_EXECUTOR\)"):
        choose.Choose(3, 1).run_graph()


def test_negative_max_workers_count_back_from_the_cpus() -> None:
    cpus = os.cpu_count() or 1
    assert Context.resolve_max_workers(-1) == cpus
    assert Context.resolve_max_workers(-cpus - 5) == 1
    assert Context.resolve_max_workers(3) == 3


def test_show_progress_reports_on_stderr(
    choose: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with ThreadPoolExecutor(2) as pool:
        choose.Choose(3, 1).run_graph(executor=pool, show_progress=True)
    err = capsys.readouterr().err
    assert "taskproc: 5/5 tasks" in err


def test_a_given_executor_is_left_open(choose: ModuleType) -> None:
    with ThreadPoolExecutor(2) as pool:
        assert choose.Choose(3, 1).run_graph(executor=pool) == 3
        assert pool.submit(int, "7").result() == 7


def test_run_graph_returns_a_cached_root_without_an_executor(choose: ModuleType) -> None:
    choose.Choose(3, 1).run_graph()

    class Refuses(Executor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("nothing is stale, so nothing should be submitted")

    assert choose.Choose(3, 1).run_graph(executor=Refuses()) == 3


WHERE = """
class Where(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> tuple[int, str, int]:
        log("run", "Where", os.getpid())
        (self.task_directory / "made").write_text(str(self.i))
        return self.i, str(self.task_directory), os.getpid()


class Gather(TaskBase):
    parts: RequiresList[tuple[int, str, int]]

    def build_task(self, n: int) -> None:
        self.parts = [Where(i) for i in range(n)]

    def run_task(self) -> list[tuple[int, str, int]]:
        log("run", "Gather", os.getpid())
        return self.parts
"""


def check_where(mod: ModuleType, parts: list[tuple[int, str, int]]) -> None:
    """Tasks in worker processes saw this process's cache through their properties."""
    for i, directory, pid in parts:
        assert directory == str(mod.Where(i).task_directory)
        assert (mod.Where(i).task_directory / "made").read_text() == str(i)
        assert pid != os.getpid()


def test_dask_distributed_executor(modules: TaskModules) -> None:
    distributed = pytest.importorskip("distributed")
    mod = modules.load("where_dask", WHERE)
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        executor = client.get_executor()
        parts, stats = mod.Gather(3).run_graph_with_stats(executor=executor)
        again, stats_again = mod.Gather(3).run_graph_with_stats(executor=executor)
    assert [p[0] for p in parts] == [0, 1, 2]
    check_where(mod, parts)
    assert again == parts
    assert stats["stats"] == {"where_dask.Where": 3, "where_dask.Gather": 1}
    assert stats_again["stats"] == {"where_dask.Where": 0, "where_dask.Gather": 0}
    assert len(modules.runs()) == 4


def test_process_pool_started_by_a_fork_server(modules: TaskModules) -> None:
    """Workers that do not inherit this process's settings, as when threads are running."""
    mod = modules.load("where_forkserver", WHERE)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        parts = mod.Gather(2).run_graph(executor=pool)
    check_where(mod, parts)


START_METHOD = """
import _thread, sys, threading
from pytest_taskproc import Context
Context.executor_name = "process"
if sys.argv[1] == "numpy":
    import numpy  # OpenBLAS's threads run no Python and stop around a fork
elif sys.argv[1] == "_thread":
    started = threading.Event()
    # A thread that threading does not list, as execnet's in an xdist worker.
    _thread.start_new_thread(lambda: (started.set(), threading.Event().wait()), ())
    started.wait()
with Context.get_executor(1) as pool:
    print(pool._mp_context.get_start_method())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks only on Linux")
@pytest.mark.parametrize(
    ("threads", "method"), [("none", "fork"), ("numpy", "fork"), ("_thread", "forkserver")]
)
def test_a_pool_forks_only_from_a_process_running_no_other_python_thread(
    threads: str, method: str
) -> None:
    # Looked up, not imported: a test before this one may have dropped numpy from
    # sys.modules, and numpy's C core cannot be imported twice into one process.
    if threads == "numpy" and importlib.util.find_spec("numpy") is None:
        pytest.skip("numpy is not installed")
    done = subprocess.run(
        [sys.executable, "-c", START_METHOD, threads], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [method]


# -- rate limits ---------------------------------------------------------------------

LIMITED = """
class Gpu(TaskBase, channel="<gpu>"):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("start", "Gpu", self.i, time.monotonic())
        time.sleep(0.05)  # work long enough that unlimited tasks overlap
        log("end", "Gpu", self.i, time.monotonic())
        return self.i


class Vision(TaskBase, channel=["<gpu>", "<camera>"]):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("start", "Vision", self.i, time.monotonic())
        time.sleep(0.05)
        log("end", "Vision", self.i, time.monotonic())
        return -self.i


class Cpu(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("start", "Cpu", self.i, time.monotonic())
        time.sleep(0.05)
        log("end", "Cpu", self.i, time.monotonic())
        return self.i


class All(TaskBase):
    parts: RequiresList[int]

    def build_task(self, kinds: list[str], n: int) -> None:
        table = {"Gpu": Gpu, "Vision": Vision, "Cpu": Cpu}
        self.parts = [table[kind](i) for kind in kinds for i in range(n)]

    def run_task(self) -> int:
        return sum(self.parts)
"""


def max_concurrency(lines: list[str], kinds: set[str]) -> int:
    """The most tasks of ``kinds`` that were running at one instant, from start/end lines."""
    events: list[tuple[float, int]] = []
    for line in lines:
        what, kind, _, stamp = line.split()
        if kind in kinds and what in ("start", "end"):
            # at equal times an end counts before a start: touching is not overlapping
            events.append((float(stamp), 1 if what == "start" else 0))
    running = peak = 0
    for _, is_start in sorted(events):
        running += 1 if is_start else -1
        peak = max(peak, running)
    return peak


@pytest.fixture
def limited(modules: TaskModules) -> ModuleType:
    return modules.load("limited", LIMITED)


def test_unlimited_tasks_do_run_concurrently(limited: ModuleType, modules: TaskModules) -> None:
    """The control for the tests below: without a limit, four threads overlap."""
    with ThreadPoolExecutor(4) as pool:
        limited.All(["Cpu"], 4).run_graph(executor=pool)
    assert max_concurrency(modules.lines(), {"Cpu"}) >= 2


def test_channel_label_limits_tasks_of_several_classes(
    limited: ModuleType, modules: TaskModules
) -> None:
    with ThreadPoolExecutor(4) as pool:
        result = limited.All(["Gpu", "Vision", "Cpu"], 3).run_graph(
            executor=pool, rate_limits={"<gpu>": 1}
        )
    assert result == 3
    lines = modules.lines()
    assert len([line for line in lines if line.startswith("end")]) == 9
    assert max_concurrency(lines, {"Gpu", "Vision"}) == 1


def test_task_name_label_limits_one_class(limited: ModuleType, modules: TaskModules) -> None:
    with ThreadPoolExecutor(4) as pool:
        limited.All(["Cpu", "Gpu"], 4).run_graph(
            executor=pool, rate_limits={limited.Cpu.task_name: 2}
        )
    lines = modules.lines()
    assert max_concurrency(lines, {"Cpu"}) == 2
    assert max_concurrency(lines, {"Cpu", "Gpu"}) >= 3


def test_every_label_of_a_task_must_have_room(limited: ModuleType, modules: TaskModules) -> None:
    with ThreadPoolExecutor(4) as pool:
        limited.All(["Gpu", "Vision"], 3).run_graph(
            executor=pool, rate_limits={"<gpu>": 2, "<camera>": 1}
        )
    lines = modules.lines()
    assert max_concurrency(lines, {"Vision"}) == 1
    assert max_concurrency(lines, {"Gpu", "Vision"}) <= 2


def test_rate_limits_hold_in_a_process_pool(limited: ModuleType, modules: TaskModules) -> None:
    limited.All(["Gpu"], 3).run_graph(max_workers=2, rate_limits={"<gpu>": 1})
    assert max_concurrency(modules.lines(), {"Gpu"}) == 1


@pytest.mark.parametrize("limit", [0, -1, 1.5, "2"])
def test_rate_limits_must_be_positive_ints(limited: ModuleType, limit: object) -> None:
    with pytest.raises(ValueError, match=r"rate_limits: '<gpu>'.*int >= 1"):
        limited.Gpu(0).run_graph(rate_limits={"<gpu>": limit})


# -- failures ------------------------------------------------------------------------

FAILING = """
FLAG = os.path.join(os.path.dirname(LOG), "fail.flag")


class Boom(Exception):
    pass


class Fails(TaskBase):
    def run_task(self) -> int:
        log("run", "Fails")
        if os.path.exists(FLAG):
            raise Boom("fails on purpose")
        return 1


class After(TaskBase):
    up: Requires[int]

    def build_task(self) -> None:
        self.up = Fails()

    def run_task(self) -> int:
        log("run", "After")
        return self.up + 1


class Slow(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("run", "Slow", self.i)
        time.sleep(0.2)  # still running when Fails fails
        log("done", "Slow", self.i)
        return self.i


class Root(TaskBase):
    after: Requires[int]
    slow: RequiresList[int]

    def build_task(self) -> None:
        self.after = After()
        self.slow = [Slow(1)]

    def run_task(self) -> int:
        log("run", "Root")
        return self.after + sum(self.slow)
"""


@pytest.fixture
def failing(modules: TaskModules, tmp_path: Path) -> ModuleType:
    (tmp_path / "fail.flag").touch()
    return modules.load("failing", FAILING)


def check_failure_then_recovery(
    failing: ModuleType, modules: TaskModules, tmp_path: Path, **options: Any
) -> None:
    with pytest.raises(failing.Boom, match="fails on purpose"):
        failing.Root().run_graph(**options)
    assert sorted(modules.runs()) == ["run Fails", "run Slow 1"]
    assert modules.runs("done") == ["done Slow 1"]
    assert failing.Slow(1).get_task_result() == 1
    for task in (failing.Fails(), failing.After(), failing.Root()):
        with pytest.raises(ResultMissingError):
            task.get_task_result()

    (tmp_path / "fail.flag").unlink()
    modules.clear_log()
    result, stats = failing.Root().run_graph_with_stats(**options)
    assert result == 3
    assert sorted(modules.runs()) == ["run After", "run Fails", "run Root"]
    assert stats["stats"]["failing.Slow"] == 0


def test_failure_in_a_process_pool_raises_the_users_exception(
    failing: ModuleType, modules: TaskModules, tmp_path: Path
) -> None:
    check_failure_then_recovery(failing, modules, tmp_path, max_workers=2)


def test_failure_in_a_thread_pool_raises_the_users_exception(
    failing: ModuleType, modules: TaskModules, tmp_path: Path
) -> None:
    with ThreadPoolExecutor(2) as pool:
        check_failure_then_recovery(failing, modules, tmp_path, executor=pool)


def test_failure_is_logged_naming_the_task_and_its_output_files(
    failing: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    with ThreadPoolExecutor(2) as pool, pytest.raises(failing.Boom):
        failing.After().run_graph(executor=pool)
    messages = [r.getMessage() for r in caplog.records if r.name == "pytest_taskproc"]
    assert len(messages) == 1
    assert "failing.Fails" in messages[0]
    assert "Boom: fails on purpose" in messages[0]
    assert str(failing.Fails().task_stdout) in messages[0]


def test_unpicklable_exception_from_a_worker_keeps_its_traceback(modules: TaskModules) -> None:
    mod = modules.load(
        "unpicklable_error",
        """
        import threading

        class LockedError(Exception):
            def __init__(self, message: str) -> None:
                super().__init__(message)
                self.lock = threading.Lock()

        class Raises(TaskBase):
            def run_task(self) -> None:
                raise LockedError("carries a lock")
        """,
    )
    from pytest_taskproc import TaskFailedError

    with pytest.raises(TaskFailedError) as info:
        mod.Raises().run_graph(max_workers=1)
    message = str(info.value)
    assert "Raises() raised LockedError, which cannot be pickled" in message
    assert "carries a lock" in message


# -- deep graphs --------------------------------------------------------------------------------

DEEP = """
class Step(TaskBase):
    prev: Requires[int]

    def build_task(self, i: int) -> None:
        self.prev = Step(i - 1) if i > 0 else Const(0)

    def run_task(self) -> int:
        return self.prev + 1


class Peek(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i
        # reads an attribute an upstream build_task sets: built on demand
        self.below = Peek(i - 1).label if i > 0 else "base"
        self.label = f"{self.below}/{i}"

    def run_task(self) -> str:
        return self.label
"""


def test_a_chain_of_100000_tasks_builds_and_plans_without_recursion(
    modules: TaskModules, cache_root: Path
) -> None:
    from pytest_taskproc.freshness import plan
    from pytest_taskproc.graph import TaskGraph

    mod = modules.load("deep", DEEP)
    root = mod.Step(100_000)
    graph = TaskGraph([root])
    assert len(graph) == 100_001
    assert graph.order[0] == ("deep.Step", '{"i":0}') and graph.order[-1] == (
        "deep.Step",
        '{"i":100000}',
    )
    states = plan(graph, cache_root, False)
    assert all(state.stale for state in states.values())
    assert mod.Step(1500).run_graph(executor=InlineExecutor()) == 1501
    assert mod.Peek(2).label == "base/0/1/2"


# -- Run: the public face of a run -----------------------------------------------------------
UP_FAILS = """
class Up(TaskBase):
    def run_task(self) -> int:
        log("run", "Up")
        raise ValueError("no data")


class Down(TaskBase):
    up: Requires[int]

    def build_task(self) -> None:
        self.up = Up()

    def run_task(self) -> int:
        log("run", "Down")
        return self.up + 1
"""


def test_a_run_settles_target_by_target_and_says_what_became_of_each(
    choose: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    table = choose.Table(3)
    leaf = node_key(choose.Choose(2, 1))
    run = Run(TaskGraph([table]), RunSettings(str(cache_root)))
    assert run.stale_count == len(TaskGraph([table]).tasks)
    assert run.outcome(leaf).kind is Settled.PENDING
    heard: list[tuple[str, str]] = []
    run.settle([leaf], listener=heard.append)
    assert run.outcome(leaf).kind is Settled.COMPUTED
    assert run.outcome(node_key(table)).kind is Settled.PENDING
    assert sorted(heard) == sorted(TaskGraph([choose.Choose(2, 1)]).tasks)
    run.settle()
    assert run.outcome(node_key(table)).kind is Settled.COMPUTED
    assert len(modules.runs()) == len(TaskGraph([table]).tasks)
    again = Run(TaskGraph([table]), RunSettings(str(cache_root)))
    assert again.stale_count == 0
    assert again.outcome(node_key(table)).kind is Settled.FRESH
    assert again.value(node_key(table)) == [1, 3, 3, 1]


def test_a_failure_is_recorded_and_blocks_what_is_downstream(
    modules: TaskModules, cache_root: Path
) -> None:
    mod = modules.load("upfails", UP_FAILS)
    up, down = node_key(mod.Up()), node_key(mod.Down())
    run = Run(TaskGraph([mod.Down()]), RunSettings(str(cache_root)))
    run.settle([down])  # failures are outcomes, not raised
    failed = run.outcome(up)
    assert failed.kind is Settled.FAILED and isinstance(failed.error, ValueError)
    blocked = run.outcome(down)
    assert (blocked.kind, blocked.culprit, blocked.cause) == (Settled.BLOCKED, up, failed.error)
    run.settle([down])
    assert modules.runs() == ["run Up"]  # a failed task is not retried within the run...
    run.forget_failure(up)
    run.settle([down])
    assert modules.runs() == ["run Up", "run Up"]  # ...unless its failure is forgotten
    with pytest.raises(ValueError, match="no data"):
        run.value(down)


def test_an_invalidated_result_is_made_again_and_so_is_what_was_made_from_it(
    choose: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    table = choose.Table(2)
    leaf = node_key(choose.Choose(1, 0))
    Run(TaskGraph([table]), RunSettings(str(cache_root))).settle()
    modules.clear_log()
    run = Run(TaskGraph([table]), RunSettings(str(cache_root)))
    state = run.state(leaf)
    assert state.record is not None and state.task_id is not None
    Path(state.store.folder(state.task_id), state.record.file).write_bytes(b"garbage")
    problem = run.damage(leaf)
    assert problem is not None and "does not have the digest its record names" in problem
    with pytest.warns(CacheCorruptionWarning, match="recomputing Choose"):
        run.invalidate(leaf, problem)
    run.settle([node_key(table)])
    assert run.outcome(leaf).kind is Settled.COMPUTED
    # Its old record went with the damage, so the value made again has a new
    # lineage: what was computed from it is computed again, and nothing else.
    ran = [line.split()[1:4] for line in modules.runs()]
    assert ran[:2] == [["Choose", "1", "0"], ["Choose", "2", "1"]]
    assert [line[0] for line in ran[2:]] == ["Table"]
    assert run.outcome(node_key(table)).kind is Settled.COMPUTED
    assert run.outcome(node_key(choose.Choose(2, 0))).kind is Settled.FRESH
    assert run.value(node_key(table)) == [1, 2, 1]


def _wait_for(path: str) -> int:
    while not os.path.exists(path):
        time.sleep(0.01)
    return 1


def test_a_process_pool_broken_with_cancelled_jobs_pending_raises_nothing_in_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl+C cancels the jobs not started and ends the pool's processes; before
    # Python 3.12 the pool then set its error on the cancelled jobs too, which raised
    # in its manager thread (reported by pytest as an unhandled thread exception).
    import threading
    from concurrent.futures import BrokenExecutor, CancelledError

    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    monkeypatch.setattr(Context, "executor_name", "process")
    pool = Context.get_executor(1)
    gate = str(tmp_path / "never")
    try:
        futures = [pool.submit(_wait_for, gate) for _ in range(8)]
        cancelled = [f for f in futures[3:] if f.cancel()]
        assert cancelled  # jobs beyond the call queue were still pending
        for process in list(pool._processes.values()):  # type: ignore[attr-defined]
            process.kill()
        with pytest.raises(BrokenExecutor):
            futures[0].result(timeout=60)
    finally:
        pool.shutdown(wait=True)
    assert raised == []
    for future in cancelled:
        with pytest.raises(CancelledError):
            future.result()


def test_a_failure_recorded_before_any_attempt_is_not_computed_again(
    modules: TaskModules, cache_root: Path, tmp_path: Path
) -> None:
    # A run that gives up on a task while its job is still queued (a timeout) records
    # the failure without making the task's folder: the next job of the run, making
    # that folder itself, must still find the failure and not compute the task.
    from pytest_taskproc.errors import TaskFailedEarlierError
    from pytest_taskproc.ledger import Failure, Kind, marker_path
    from pytest_taskproc.worker import Job, run_job

    mod = modules.load(
        "given_up",
        "class Slow(TaskBase):\n    def run_task(self):\n        log('run')\n        return 1\n",
    )
    task = mod.Slow()
    store = task._tp_store()
    (task_id,) = store.task_ids([node_key(task)[1]])
    failure_dir = tmp_path / "run" / "failed"
    failure_dir.mkdir(parents=True)
    Failure(Kind.FAILED, "Failed: Timeout (>3.0s)").write(
        marker_path(str(failure_dir), store.name, task_id)
    )
    settings = RunSettings(str(cache_root), failure_dir=str(failure_dir))
    with pytest.raises(TaskFailedEarlierError, match="Timeout"):
        run_job(Job(task, task_id, settings))
    assert modules.runs() == []
