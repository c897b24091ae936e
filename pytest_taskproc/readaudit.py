"""Files a running task reads without declaring them: noticed, and named once.

A task that reads ``data/raw.csv`` without an ``InputFile`` is not made stale
by edits of that file, and nothing else would ever tell its author.  While
``run_task`` runs, an audit hook (``sys.addaudithook``, which sees every
``open``) collects the files its thread, and threads it starts, open for
reading; when it returns, each one that is not declared and not somewhere a
task may read freely (its own and upstream task directories in the cache,
the interpreter, installed packages, Python source files, ``/dev``, ``/proc``,
``/etc``, ``/usr/share``, hidden folders of the home directory where libraries keep
caches and settings, files it wrote itself) is named in one :class:`UndeclaredInputWarning` per
task and file.  ``CP_AUDIT_READS=0``, ``Context.audit_reads = False`` or the
plugin's ``--taskproc-no-read-audit`` turn it off.

The hook is installed once per process, at the first task run with the audit
on, and costs one string comparison per audit event outside tasks.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import sysconfig
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any

from .context import Context, cache_root
from .errors import UndeclaredInputWarning
from .requires import class_directory
from .sourcefiles import INSTALLED
from .spec import spec_of

#: Suffixes of files read as code (imports, tracebacks), never as data.
CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".pyd", ".so", ".pth")

_local = threading.local()
#: threads started by a watched thread, watched with it
_children: weakref.WeakKeyDictionary[threading.Thread, _Watch] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()
_installed = False
_warned: set[tuple[str, str, str]] = set()


class _Watch:
    """What one running task opened."""

    def __init__(self, allowed: tuple[str, ...], declared: frozenset[str]) -> None:
        self.allowed = allowed
        self.declared = declared
        self.reads: dict[str, None] = {}
        #: files named on the command line of a program the task ran (a script)
        self.ran: dict[str, None] = {}
        self.written: set[str] = set()

    def opened(self, args: tuple[Any, ...]) -> None:
        path, _, flags = args
        if isinstance(path, int) or path is None:
            return
        name = os.path.abspath(os.fsdecode(path))
        access = flags & os.O_ACCMODE if isinstance(flags, int) else os.O_RDONLY
        if access == os.O_WRONLY or (flags & (os.O_CREAT | os.O_TRUNC) and access == os.O_RDWR):
            self.written.add(name)
            return
        if name in self.reads or name in self.written or name.endswith(CODE_SUFFIXES):
            return
        if name in self.declared or name.startswith(self.allowed):
            return
        self.reads[name] = None

    def started(self, argv: list[Any], cwd: Any) -> None:
        """A program the task starts reads what it is given, unseen: a script, a data file."""
        base = os.getcwd() if cwd is None else os.fsdecode(cwd)
        for arg in argv[1:]:  # not the program itself
            if not isinstance(arg, (str, bytes, os.PathLike)):
                continue
            name = os.path.abspath(os.path.join(base, os.fsdecode(arg)))  # as ``opened`` does
            if name in self.ran or name in self.written or name in self.declared:
                continue
            if name.startswith(self.allowed) or not os.path.isfile(name):
                continue
            self.ran[name] = None


def _command(event: str, args: tuple[Any, ...]) -> tuple[list[Any], Any]:
    """The command line and working directory of a program being started."""
    if event == "subprocess.Popen":
        _, argv, cwd, _ = args
        if isinstance(argv, (str, bytes, os.PathLike)):
            return shlex.split(os.fsdecode(argv)), cwd  # a lone program
        argv = list(argv)
        if len(argv) >= 3 and argv[1] == "-c" and os.path.basename(str(argv[0])).endswith("sh"):
            return shlex.split(str(argv[2])), cwd  # shell=True: the shell's command line
        return argv, cwd
    return shlex.split(os.fsdecode(args[0])), None  # os.system


#: audit events that start a program with a command line
_STARTS = frozenset({"subprocess.Popen", "os.system"})


def enabled() -> bool:
    if not Context.audit_reads:
        return False
    flag = os.environ.get("CP_AUDIT_READS", "1").strip().lower()
    return flag not in ("0", "false", "no", "off")


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" and event not in _STARTS:
        return
    watch: _Watch | None = getattr(_local, "watch", None)
    if watch is None:
        if not _children:
            return
        watch = _children.get(threading.current_thread())
        if watch is None:
            return
    with contextlib.suppress(Exception):  # a hook must never break the open it watches
        if event == "open":
            watch.opened(args)
        else:
            watch.started(*_command(event, args))


_thread_start = threading.Thread.start


def _start(self: threading.Thread) -> None:
    # Threads carry no parent, and no audit event announces a new thread before
    # Python 3.13: a thread started by a watched one inherits its watch here.
    watch = getattr(_local, "watch", None)
    if watch is not None:
        _children[self] = watch
    _thread_start(self)


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_hook)
            threading.Thread.start = _start  # type: ignore[method-assign]
            _installed = True


def _freely_read() -> tuple[str, ...]:
    """Directories whose files are code or system state, not a task's data."""
    places = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    places.update(p for p in sysconfig.get_paths().values() if p)
    places.update(INSTALLED)  # site-packages, as the code digest tells installed code apart
    places.update(("/dev", "/proc", "/sys", "/etc", "/usr/share", "/usr/lib", "/var/cache"))
    # Libraries keep their caches and settings there (matplotlib's font list in
    # ~/.cache, ~/.config/...): reading them is not the task reading data.
    for variable in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        if os.environ.get(variable):
            places.add(os.environ[variable])
    found = tuple(os.path.join(os.path.abspath(p), "") for p in places)
    home = os.path.expanduser("~")
    return (*found, os.path.join(home, ".")) if home != "~" else found


_FREELY_READ: tuple[str, ...] | None = None
#: (cache root, declared paths) -> the prefixes a task may read: the same for
#: every task of a run that declares nothing, so worked out once, not per task
_allowed: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}


def _allowed_for(root: str, declared: tuple[str, ...]) -> tuple[str, ...]:
    global _FREELY_READ
    key = (root, declared)
    found = _allowed.get(key)
    if found is None:
        if _FREELY_READ is None:
            _FREELY_READ = _freely_read()
        found = (
            *_FREELY_READ,
            os.path.join(root, ""),
            *(os.path.join(p, "") for p in declared),
        )
        if len(_allowed) > 1024:  # tasks with their own inputs each: keep it bounded
            _allowed.clear()
        _allowed[key] = found
    return found


class watching_reads:  # used like a function: ``with watching_reads(task):``
    """Notice the undeclared files ``task`` reads while the block runs; warn afterwards.

    A class rather than a generator: it wraps every task, and this way its
    set-up and tear-down are a few attribute look-ups.
    """

    __slots__ = ("on", "task", "watch")

    def __init__(self, task: Any, on: bool = True) -> None:
        self.task = task
        self.on = on
        self.watch: _Watch | None = None

    def __enter__(self) -> None:
        if not self.on or not enabled() or getattr(_local, "watch", None) is not None:
            return
        if not _installed:
            _install()
        declared = tuple(str(path) for _, _, path in spec_of(self.task).inputs if path is not None)
        watch = _Watch(_allowed_for(str(cache_root()), declared), frozenset(declared))
        self.watch = watch
        _local.watch = watch

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        watch = self.watch
        if watch is None:
            return
        _local.watch = None
        if _children:
            for thread in [t for t, w in _children.items() if w is watch]:
                _children.pop(thread, None)
        if kind is None:
            _warn(self.task, list(watch.reads))
            _warn(self.task, [p for p in watch.ran if p not in watch.reads], "gave")


def _warn(task: Any, reads: list[str], how: str = "read") -> None:
    if not reads:
        return
    node = spec_of(task).node
    home = class_directory(type(task))
    for path in reads:
        if (*node, path) in _warned:
            continue
        _warned.add((*node, path))
        shown = _shown(path, home)
        what = f"read `{shown}`" if how == "read" else f"gave `{shown}` to a program it ran"
        message = (
            f"`{task!r}` {what}, which is not declared as an `InputFile`: edits of it "
            "will not make the task stale"
        )
        code = type(task).run_task.__code__
        # Shown at the task's run_task, where the read happened and the fix goes.
        # Turned into an error (-W error), it is dropped: it must not fail a task
        # that succeeded, nor write into output a caller may be reading.
        with contextlib.suppress(Warning):
            warnings.warn_explicit(
                UndeclaredInputWarning(message), None, code.co_filename, code.co_firstlineno
            )


def _shown(path: str, home: Path) -> str:
    """A path as its author would write it: relative to the task file's directory if inside."""
    for base in (str(home), os.getcwd()):
        with contextlib.suppress(ValueError):
            relative = os.path.relpath(path, base)
            if not relative.startswith(".."):
                return relative.replace(os.sep, "/")
    return path
