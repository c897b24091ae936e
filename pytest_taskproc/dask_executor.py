"""Dask distributed as an executor: project code on the workers, task names as keys.

Imported only when Dask is in use (``--taskproc-executor=dask[:ADDRESS]``, or a
``client.get_executor()`` handed to ``run_graph``).  It adds three things to
Dask's own ``ClientExecutor``:

- the Python files of the project's task modules reach every worker, also
  workers that join later, so workers started on their own can unpickle the
  task classes (:class:`ProjectCode`);
- every job names the cache it writes to, and a worker that does not see that
  very cache refuses the job (:func:`check_cache_visible`);
- each job's Dask key is the task's name (``Choose(6, 3)-<uuid>``), channels
  ``<name>`` become worker resources where some worker offers them, and a job
  lost with its worker fails with an error naming the task.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
import os
import socket
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from .cache import prepare_root
from .cancel import stop_here
from .errors import (
    CacheNotSharedError,
    NotImportableError,
    SchedulerUnreachableError,
    WorkerLostError,
)
from .worker import Job, JobResult, run_jobs_blob

# Parts of distributed are untyped; its objects are kept as Any here.
dask: Any = distributed

#: Seconds to wait for a scheduler to answer before the run is a usage error.
LOGGER = logging.getLogger("pytest_taskproc")

CONNECT_SECONDS = 10.0
#: Seconds a listener has to send Dask's handshake once it accepted the connection
#: (a scheduler does so at once).
HANDSHAKE_SECONDS = 5.0
#: How long the scheduler's list of workers is trusted before it is asked again.
WORKERS_TTL = 1.0
#: File in ``{root}/taskproc`` whose random content a worker must read back to
#: prove it sees the driver's cache, not another directory at the same path.
CACHE_MARKER = ".dask-cache-check"


def start(address: str) -> DaskExecutor:
    """Connect to the scheduler at ``address``, or start a local cluster when it is empty."""
    if address:
        _refuse_fast(address)
        _expect_dask(address)
        try:
            client = dask.Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise SchedulerUnreachableError(
                f"no Dask scheduler answers at {address} ({exc})"
            ) from None
        return DaskExecutor(client.get_executor(), close=client.close)
    # Everything on 127.0.0.1 and on ports the system picks: the scheduler's
    # HTTP server (which Dask starts even without a dashboard) would otherwise
    # take 8787 and warn, or fail under -W error, when that port is in use.
    cluster = dask.LocalCluster(
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
        processes=True,
        threads_per_worker=1,
    )
    local = dask.Client(cluster, set_as_default=False)

    def close() -> None:
        local.close()
        cluster.close()

    return DaskExecutor(local.get_executor(), close=close)


def _refuse_fast(address: str) -> None:
    """A TCP address that refuses connections fails now, not after Dask's connect retries."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("", "tcp") or not port.isdigit():
        return
    try:
        target = (host.strip("[]") or "127.0.0.1", int(port))
        socket.create_connection(target, CONNECT_SECONDS).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SchedulerUnreachableError(
            f"no Dask scheduler answers at {address} ({reason}); start one with "
            "`dask scheduler` or leave out the address to start a local cluster"
        ) from None


def _expect_dask(address: str) -> None:
    """Something that accepts connections but does not answer as Dask fails within seconds.

    A dashboard port, or a typo naming another service's port, accepts TCP
    and then never sends Dask's handshake; ``Client(timeout=...)`` and the
    comm's own connect timeout both wait for it without end.  So one
    connection makes the handshake here under a deadline of our own, in a
    thread of its own, since the caller may be running an event loop.
    """
    import asyncio

    connect: Any = getattr(distributed.comm, "connect")  # noqa: B009 - untyped re-export

    async def handshake() -> None:
        comm = await asyncio.wait_for(
            connect(address, timeout=HANDSHAKE_SECONDS), timeout=HANDSHAKE_SECONDS
        )
        await comm.close()

    failure: list[BaseException] = []

    def probe() -> None:
        try:
            asyncio.run(handshake())
        except BaseException as exc:  # reported in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=probe, name="pytest-taskproc-dask-probe", daemon=True)
    thread.start()
    thread.join(HANDSHAKE_SECONDS + 5)
    if thread.is_alive() or failure:
        if thread.is_alive() or isinstance(failure[0], asyncio.TimeoutError):
            reason = (
                f"something accepted the connection but sent no Dask handshake within "
                f"{HANDSHAKE_SECONDS:g} s: the dashboard's port, or another service's?"
            )
        elif not isinstance(failure[0], OSError):
            # Some Dask versions read another protocol's reply as a frame length
            # and fail on it (a MemoryError for exabytes): the same mistake.
            reason = (
                "something accepted the connection but answered in another protocol "
                f"({type(failure[0]).__name__}): the dashboard's port, or another service's?"
            )
        else:
            reason = f"{type(failure[0]).__name__}: {failure[0]}"
        raise SchedulerUnreachableError(
            f"no Dask scheduler answers at {address} ({reason}); start one with "
            "`dask scheduler` or leave out the address to start a local cluster"
        )


def adapt(executor: Any) -> DaskExecutor:
    """A :class:`DaskExecutor` over a user's ``client.get_executor()``; the client stays theirs."""
    return DaskExecutor(executor)


#: (client id, plugin name) -> digest of the code this process last registered there
_registered: dict[tuple[str, str], str] = {}


class DaskExecutor(Executor):
    """A ``ClientExecutor`` whose jobs carry task names, project code and a cache check."""

    def __init__(self, inner: Any, close: Callable[[], None] | None = None) -> None:
        self.inner = inner
        # ClientExecutor has no public accessor for its client.
        self.client: Any = inner._client
        self._close = close
        self._modules: set[str] = set()
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._asked = -WORKERS_TTL
        self._width = 1
        self._resources: frozenset[str] = frozenset()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.inner.submit(fn, *args, **kwargs)  # type: ignore[no-any-return]

    def submit_jobs(self, jobs: list[Job], channels: Sequence[str] = ()) -> Future[list[JobResult]]:
        """Run ``jobs`` on one worker, under a key naming their tasks."""
        root = jobs[0].settings.cache_root
        self._ship_code(jobs, root)
        token = self._tokens.get(root) or self._tokens.setdefault(root, cache_token(root))
        label = repr(jobs[0].task) + (f" and {len(jobs) - 1} more" if len(jobs) > 1 else "")
        options: dict[str, Any] = {"key": f"{label}-{uuid.uuid4().hex}", "pure": False}
        resources = self._resources_for(channels)
        if resources:
            options["resources"] = {**self.inner._kwargs.get("resources", {}), **resources}
        future = self.inner.submit(
            run_on_worker, cloudpickle.dumps(jobs), root, token, label, **options
        )
        return _explained(future, label)

    def current_width(self) -> int:
        """Threads of all workers now, re-read at most once a second: a grown cluster gets used."""
        self._ask_scheduler()
        return self._width

    def _resources_for(self, channels: Sequence[str]) -> dict[str, int]:
        # Only labels some worker offers: a resource no worker has would keep
        # the task waiting forever, where the channel alone just limits it.
        self._ask_scheduler()
        names = (c[1:-1] for c in channels if c.startswith("<") and c.endswith(">"))
        return {name: 1 for name in names if name in self._resources}

    def _ask_scheduler(self) -> None:
        now = time.monotonic()
        if now - self._asked < WORKERS_TTL:
            return
        self._asked = now
        try:
            workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        except Exception:
            return  # keep what was known; the next submission fails loudly if it is gone
        self._width = max(1, sum(int(w.get("nthreads", 1)) for w in workers))
        self._resources = frozenset(r for w in workers for r in w.get("resources") or {})

    def _ship_code(self, jobs: Iterable[Job], root: str) -> None:
        modules = {type(job.task).__module__ for job in jobs}
        if modules <= self._modules:
            return
        if "__main__" in modules:
            task = next(j.task for j in jobs if type(j.task).__module__ == "__main__")
            raise NotImportableError(
                f"{task!r}: its class is defined in the script being run (__main__), which "
                "Dask workers cannot import; move the task classes into a module of their "
                "own and import them from the script"
            )
        with self._lock:
            self._modules |= modules
            files = project_files(self._modules)
            digest = _digest(files)
            # One plugin per project, and a project is known by its cache: a
            # rerun (after an edit, or of another -k selection) replaces the
            # code it shipped before, another project on the cluster keeps its own.
            name = "pytest-taskproc-code-" + _digest({root: b""})[:16]
            if _registered.get((self.client.id, name)) == digest:
                return
            self.client.register_plugin(ProjectCode(files, digest, name), name=name)
            _registered[(self.client.id, name)] = digest

    def stop_job(self, marker: str) -> None:
        """Ask every worker to stop the job with this failure marker, in the thread that runs
        it (the scheduler of the run gave up on it); the job keeps nothing either way."""
        try:
            self.client.run(stop_here, marker)
        except Exception:  # a worker gone meanwhile: its job ends with it
            LOGGER.debug("could not ask the workers to stop %s", marker, exc_info=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._close is not None:
            self._close()
            self._close = None


def _explained(inner: Future[list[JobResult]], label: str) -> Future[list[JobResult]]:
    """``inner``'s outcome, with Dask's bare errors turned into ones naming the task."""
    outer: Future[list[JobResult]] = Future()
    cancelling = threading.Event()

    def relay(done: Future[list[JobResult]]) -> None:
        if done.cancelled():
            if cancelling.is_set():
                return
            outer.set_exception(
                WorkerLostError(
                    f"{label}: Dask cancelled it; the scheduler went away or lost this client"
                )
            )
            return
        error = done.exception()
        if error is None:
            outer.set_result(done.result())
        elif isinstance(error, distributed.KilledWorker):
            outer.set_exception(WorkerLostError(_killed_message(label, error)))
        else:
            outer.set_exception(error)

    def cancel_inner(done: Future[list[JobResult]]) -> None:
        if done.cancelled():
            cancelling.set()
            inner.cancel()

    outer.add_done_callback(cancel_inner)
    inner.add_done_callback(relay)
    return outer


def _killed_message(label: str, error: Any) -> str:
    """What happened to a task whose workers all died running it, naming the last one."""
    retries = getattr(error, "allowed_failures", None)
    worker = getattr(getattr(error, "last_worker", None), "address", None) or "unknown"
    tried = (
        f"worker {worker}, the last of {retries + 1} that Dask tried it on (it retries a task "
        f"whose worker dies: distributed.scheduler.allowed-failures = {retries})"
        if isinstance(retries, int)
        else f"worker {worker}"
    )
    return (
        f"{label}: the Dask worker running it died while computing it: {tried}. A worker "
        "dies when it is killed (a signal, a batch system's time limit) or runs out of "
        "memory; its log, or its nanny's, says which. Nothing was cached for the task."
    )


# -- the cache the workers must share ------------------------------------------


def cache_token(root: str) -> str:
    """The random content of the cache's marker file, written once per cache."""
    marker = prepare_root(Path(root)) / CACHE_MARKER
    with suppress(FileNotFoundError):
        return marker.read_text(encoding="utf-8")
    staging = marker.with_name(f"{CACHE_MARKER}.{uuid.uuid4().hex}.tmp")
    staging.write_text(uuid.uuid4().hex, encoding="utf-8")
    try:
        os.link(staging, marker)  # fails if another driver made it first: keep theirs
    except FileExistsError:
        pass
    except OSError:
        os.replace(staging, marker)  # a filesystem without hard links
    finally:
        with suppress(FileNotFoundError):
            staging.unlink()
    return marker.read_text(encoding="utf-8")


_visible: set[tuple[str, str]] = set()


def check_cache_visible(root: str, token: str, label: str) -> None:
    """Refuse to run on a worker that does not see the driver's cache at ``root``.

    Without this, a worker with another directory at that path (a node-local
    disk) would compute into a cache nobody reads, and the run would fail only
    at the end, with results missing.
    """
    if (root, token) in _visible:
        return
    marker = Path(root) / "taskproc" / CACHE_MARKER
    try:
        seen: str | None = marker.read_text(encoding="utf-8")
        problem = "holds another cache"
    except OSError as exc:
        seen, problem = None, f"cannot be read there ({exc.strerror or exc})"
    if seen != token:
        try:
            where = f"Dask worker {distributed.get_worker().address}"
        except ValueError:
            where = "this Dask worker"
        raise CacheNotSharedError(
            f"{label} was not run: {where} on host {socket.gethostname()} does not see the "
            f"cache {root} ({marker} {problem}). The cache must be on a filesystem the workers "
            "share, mounted at the same path on every machine; choose it with "
            "--taskproc-cache-dir or CP_CACHE_DIR."
        )
    _visible.add((root, token))


def run_on_worker(blob: bytes, root: str, token: str, label: str) -> list[JobResult]:
    """Dask's entry point for a chunk of jobs; see :func:`run_jobs_blob`."""
    check_cache_visible(root, token, label)
    # Dask runs a job again on another worker when the worker running it
    # dies, up to distributed.scheduler.allowed-failures times.
    return run_jobs_blob(blob, retried=True)


# -- project code on the workers -------------------------------------------------
#
# Why ship files rather than pickle classes by value (cloudpickle's
# register_pickle_by_value)?  A class pickled by value travels with its whole
# class dict, which for a task class includes the registry of every instance
# made in this process; it has no source file on the worker (so no source
# digest, no useful traceback); and each helper module it imports would have to
# be registered too, by name.  Shipping the files keeps imports between task
# files, helper modules and packages working as they do in the driver.
# Why a WorkerPlugin of our own rather than Dask's UploadDirectory or
# upload_file?  UploadDirectory is a nanny plugin: it changes sys.path in the
# nanny, which running worker processes never see unless restarted (and
# --no-nanny workers never run it).  upload_file handles single modules or
# zips and reloads only top-level modules, so a changed submodule of a package
# kept its old code.  A WorkerPlugin runs in each worker process, also in
# workers that join or restart later.


def project_files(task_modules: Iterable[str]) -> dict[str, bytes]:
    """The project's Python files, by path relative to the ``sys.path`` entry they load from.

    That is every module of the project loaded in this process (task files,
    the helpers and packages they import, whatever they import them as), and
    every ``.py`` file and package next to a task module, for imports made
    only inside ``run_task``.  Installed packages, the standard library and
    ``__main__`` are left out: workers must have those installed.
    """
    files: dict[str, bytes] = {}
    for name in task_modules:
        directory = _source_dir(name)
        if directory is None or not _is_project_module(name):
            continue
        package = name if _is_package(name) else name.rpartition(".")[0]
        for path, relative in _python_files(directory, package):
            files.setdefault(relative, path.read_bytes())
    for name in list(sys.modules):
        origin = getattr(sys.modules.get(name), "__file__", None)
        if origin and _is_project_module(name):
            relative = name.replace(".", "/") + ("/__init__.py" if _is_package(name) else ".py")
            files[relative] = Path(origin).read_bytes()
    return files


def _python_files(directory: Path, package: str) -> Iterable[tuple[Path, str]]:
    """``.py`` files of a directory and the regular packages below it, as module paths."""
    prefix = package.replace(".", "/") + "/" if package else ""
    for entry in sorted(directory.iterdir()):
        if entry.suffix == ".py" and entry.is_file():
            yield entry, prefix + entry.name
        elif entry.is_dir() and (entry / "__init__.py").is_file() and entry.name.isidentifier():
            sub = f"{package}.{entry.name}" if package else entry.name
            yield from _python_files(entry, sub)


def _is_package(name: str) -> bool:
    return hasattr(sys.modules.get(name), "__path__")


def _source_dir(name: str) -> Path | None:
    path = getattr(sys.modules.get(name), "__file__", None)
    return Path(path).parent if path else None


def _is_project_module(name: str) -> bool:
    """A module of the user's own project: a ``.py`` file, not installed, not stdlib."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    top = name.partition(".")[0]
    if module is None or not path or not path.endswith(".py") or top.startswith("__"):
        return False
    if top in sys.stdlib_module_names or top in _installed_top_level_names():
        return False
    resolved = os.path.realpath(path)
    return not any(resolved.startswith(prefix) for prefix in _library_dirs())


@cache
def _installed_top_level_names() -> frozenset[str]:
    return frozenset(importlib.metadata.packages_distributions())


@cache
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple(os.path.realpath(paths[n]) + os.sep for n in names if n in paths)


def _digest(files: dict[str, bytes]) -> str:
    hasher = hashlib.sha256()
    for relative in sorted(files):
        hasher.update(relative.encode() + b"\0" + hashlib.sha256(files[relative]).digest())
    return hasher.hexdigest()


#: plugin name -> {module name: digest of its file}, as last set up in this worker process
_shipped: dict[str, dict[str, bytes]] = {}


class ProjectCode(WorkerPlugin):
    """Puts the project's Python files on a worker's ``sys.path``, ahead of anything else.

    The files go to a directory named after their digest, so an edited
    project lands beside the old one; modules of the old version are then
    dropped from ``sys.modules`` all together (a package and its submodules
    must not mix versions) and import again from the new files.
    """

    def __init__(self, files: dict[str, bytes], digest: str, name: str) -> None:
        self.files = files
        self.digest = digest
        self.name = name
        self.path = ""

    def setup(self, worker: Any) -> None:
        target = Path(worker.local_directory) / "pytest-taskproc-code" / self.digest
        if not target.is_dir():
            staging = target.with_name(f"{self.digest}.{uuid.uuid4().hex}.tmp")
            for relative, data in self.files.items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            with suppress(OSError):  # another worker sharing the directory was first
                os.replace(staging, target)
        self.path = str(target)
        with suppress(ValueError):
            sys.path.remove(self.path)
        sys.path.insert(0, self.path)
        digests = {
            _module_name(relative): hashlib.sha256(data).digest()
            for relative, data in self.files.items()
        }
        before = _shipped.get(self.name, {})
        stale = [n for n in sys.modules if n in digests or n in before]
        if any(before.get(n) != digests.get(n) for n in stale):
            for name in stale:
                del sys.modules[name]
        _shipped[self.name] = digests
        importlib.invalidate_caches()

    def teardown(self, worker: Any) -> None:
        with suppress(ValueError):
            sys.path.remove(self.path)


def _module_name(relative: str) -> str:
    name = relative.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")
