"""Task files to items: roots, parametrize, marks, ids, placement and upstream-first order.

Each task file contributes its roots: the task classes defined in it whose
``build_task`` needs no arguments, plus one root per parameter set of a class
marked ``@pytest.mark.parametrize``.  Every distinct task of the union of the
roots' graphs becomes one item, under the file that defines its class when
that file is collected, else under the file of the first root that reached it.
What collection found is kept in ``config.stash[COLLECTION]``.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
from _pytest._code.code import TerminalRepr, Traceback

from ..graph import NodeKey, TaskGraph, node_key
from ..spec import config_of, is_task_class, spec_of
from .options import Options
from .params import (
    ParameterSet,
    class_marks,
    definition_line,
    item_nodeid,
    parameter_sets,
    task_item_name,
    value_id,
)
from .report import UNREACHED, is_task_file


def defining_file(cls: type) -> Path | None:
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    return _resolved(filename) if filename else None


@functools.lru_cache(maxsize=1024)
def _path(filename: str) -> Path:
    return Path(filename)


@functools.lru_cache(maxsize=1024)
def _resolved(filename: str) -> Path:
    """A module file's real path: resolving it per item cost a realpath per item."""
    return Path(filename).resolve()


def is_base_class(cls: type) -> bool:
    """A class without a ``run_task`` of its own: a base for other task classes, not a root."""
    return bool(getattr(getattr(cls, "run_task", None), "_tp_placeholder", False))


def _needs_no_arguments(cls: type) -> bool:
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in config_of(cls).signature.parameters.values()
    )


class RootError(pytest.Collector):
    """A root whose ``build_task`` raised: a collection error for that root only."""

    def __init__(self, *, error: BaseException, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def collect(self) -> list[Any]:
        raise self.error

    def repr_failure(  # type: ignore[override]
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> str | TerminalRepr:
        """The user's own frames only: build_task and what it called, not pytest or us."""
        return users_frames(excinfo).getrepr(style="short", funcargs=False)


#: the library and pytest: their frames are left out of collection errors
_INTERNAL_DIRS = tuple(
    str(Path(module.__file__).resolve().parent) + os.sep
    for module in (pytest, sys.modules[__name__.split(".")[0]])
    if module.__file__
)


def _is_internal(path: Any) -> bool:
    text = str(path)
    return (
        text.startswith(_INTERNAL_DIRS)
        or f"{os.sep}_pytest{os.sep}" in text
        or f"{os.sep}pluggy{os.sep}" in text
        or text.startswith("<frozen importlib")
    )


def users_frames(
    excinfo: pytest.ExceptionInfo[BaseException],
) -> pytest.ExceptionInfo[BaseException]:
    """The traceback without pytest's and this project's frames, as pytest hides its own.

    A traceback with no frame of the user's (an error of the library itself)
    is left whole, so nothing is ever hidden behind an empty traceback.
    """
    own = [entry for entry in excinfo.traceback if not _is_internal(entry.path)]
    if own:
        excinfo.traceback = Traceback(own)
    return excinfo


def _reports_root_errors(config: pytest.Config) -> bool:
    """Whether this process reports roots whose build_task raised.

    Every xdist worker collects the same files, and xdist shows a collection
    error once only if the reports' texts are equal, which rendered
    tracebacks never are: so one worker reports them.
    """
    workerinput = getattr(config, "workerinput", None)
    return workerinput is None or workerinput.get("workerid") == "gw0"


def _as_text(excinfo: pytest.ExceptionInfo[BaseException], rendered: Any) -> str:
    """A task file's import error as text, the error first (pytest 7 shows only line 1)."""
    return f"{excinfo.typename}: {excinfo.value}\n\n{rendered}"


# -- items ------------------------------------------------------------------------------
class ItemProtocol(Protocol):
    """What runs a task item and renders its failure (``runtest.ItemRunner``)."""

    def run(self, item: TaskItem) -> None: ...

    def repr_failure(
        self, item: TaskItem, excinfo: pytest.ExceptionInfo[BaseException], style: Any
    ) -> Any: ...


#: The item protocol of this run, set by the module that runs items; items are
#: made here, run there, and this module imports nothing of that one.
PROTOCOL = pytest.StashKey[ItemProtocol]()


#: every task item's ``taskproc`` mark, made once: by name, add_marker would look the
#: name up among the registered markers and make a new one for each item
_TASKPROC_MARK = pytest.mark.taskproc


class TaskItem(pytest.Item):
    """One task of the graph as a pytest item."""

    def __init__(self, *, task: Any, marks: Any = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task = task
        self.key = node_key(task)
        #: what became of the task in the latest run of this item (see report.STATUS)
        self.tp_status: dict[str, Any] = {}
        self.tp_attempts = 0
        #: the traceback of the task's failure when another item computed it first
        self.tp_earlier_traceback: str | None = None
        self.add_marker(_TASKPROC_MARK)
        for mark in [*class_marks(type(task)), *marks]:
            mark = getattr(mark, "mark", mark)  # a MarkDecorator or the Mark it holds
            # What add_marker does for a MarkDecorator; it takes no bare Mark.
            self.keywords[mark.name] = mark
            self.own_markers.append(mark)

    def runtest(self) -> None:
        self.config.stash[PROTOCOL].run(self)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        return self.config.stash[PROTOCOL].repr_failure(self, excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        cls = type(self.task)
        module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        line = definition_line(cast(Hashable, cls))
        if module_file is None or line is None:
            return self.path, None, f"{self.task!r}"
        return _path(module_file), line, f"{self.task!r}"

    def _traceback_filter(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
        """Show the traceback from ``run_task`` on, not pytest's and our own frames."""
        traceback = excinfo.traceback
        code = getattr(type(self.task).run_task, "__code__", None)
        for index, entry in enumerate(traceback):
            if entry.frame.code.raw is code:
                return traceback[index:].filter(excinfo)
        # Not raised by run_task (a worker that died, a cache the worker cannot
        # see): cut pytest's own frames as pytest does for a test function.
        for index, entry in enumerate(traceback):
            if entry.frame.code.raw is TaskItem.runtest.__code__:
                return traceback[index:].filter(excinfo)
        return traceback.filter(excinfo)


class TaskFile(pytest.Module):
    """A task file: imported like a test module, collected as task items."""

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        # Text, so that xdist shows an error every worker meets once.
        if isinstance(excinfo.value, self.CollectError) or self.config.getoption("fulltrace"):
            return _as_text(excinfo, super().repr_failure(excinfo))
        # Rendered here: pytest's own filter cuts at the file's frame and keeps every
        # frame after it, the library's too; the user's lines are what matter.
        excinfo.traceback = excinfo.traceback.cut(path=self.path)  # from the import on
        return _as_text(excinfo, users_frames(excinfo).getrepr(style="short", funcargs=False))

    def collect(self) -> Iterator[Any]:
        found = self.config.stash[COLLECTION]
        # Registered here, not when the node is made: pytest also makes nodes for
        # files beside the ones named on the command line, then drops them.
        found.task_files[self.path.resolve()] = self
        module = self.obj
        for name, cls in list(vars(module).items()):
            if not is_task_class(cls) or cls.__module__ != module.__name__ or name != cls.__name__:
                continue
            if inspect.isabstract(cls) or is_base_class(cls):
                continue
            params = parameter_sets(cls)
            if params is None:
                if not _needs_no_arguments(cls):
                    found.needs_arguments.setdefault(cls, self)
                    continue  # a library task, used upstream only
                params = [ParameterSet({}, None, ())]
            for kwargs, explicit_id, marks in params:
                try:
                    root = cls(**kwargs)
                except Exception as exc:
                    found.root_errors += 1
                    if not _reports_root_errors(self.config):
                        continue
                    label = explicit_id or "-".join(value_id(k, v) for k, v in kwargs.items())
                    name = f"{cls.__qualname__}[{label}]" if label else cls.__qualname__
                    yield RootError.from_parent(
                        self, name=name, nodeid=item_nodeid(self, name), error=exc
                    )
                    continue
                found.add_root(root, self, explicit_id, marks)
        yield from found.claim_items(self)


# -- what collection found ----------------------------------------------------------------
@dataclass
class Collection:
    """The roots, the tasks they reach and the item of each task, in one pytest process."""

    roots: list[Any] = field(default_factory=list)
    task_files: dict[Path, TaskFile] = field(default_factory=dict)
    #: every task reached from a root, and the file that reached it first
    tasks: dict[NodeKey, Any] = field(default_factory=dict)
    first_file: dict[NodeKey, TaskFile] = field(default_factory=dict)
    itemized: dict[NodeKey, TaskItem] = field(default_factory=dict)
    explicit_ids: dict[NodeKey, str] = field(default_factory=dict)
    #: marks of ``pytest.param(..., marks=...)``, per root
    root_marks: dict[NodeKey, list[Any]] = field(default_factory=dict)
    #: item names taken, per file node id
    names: dict[str, set[str]] = field(default_factory=dict)
    #: the task items left after deselection, in run order
    selected: list[TaskItem] = field(default_factory=list)
    #: failed collect reports of task files (build_task errors of roots, import errors)
    task_file_errors: int = 0
    #: roots whose build_task raised (in this process)
    root_errors: int = 0
    #: classes that need arguments and are not parametrized, with the file defining them
    needs_arguments: dict[type, TaskFile] = field(default_factory=dict)
    _graph: TaskGraph | None = None

    def add_root(
        self, root: Any, source: TaskFile, explicit_id: str | None, marks: tuple[Any, ...] = ()
    ) -> None:
        self.roots.append(root)
        self._graph = None
        key = node_key(root)
        if explicit_id:
            self.explicit_ids.setdefault(key, explicit_id)
        if marks:
            self.root_marks.setdefault(key, []).extend(marks)
        stack = [root]
        while stack:
            task = stack.pop()
            key = node_key(task)
            if key in self.first_file:
                continue
            self.first_file[key] = source
            self.tasks[key] = task
            stack.extend(spec_of(task).upstream)

    def unreached(self) -> list[str]:
        """Node ids of the classes that need arguments and no collected task requires.

        None when a root failed to build: what it would have required is unknown.
        """
        if self.root_errors:
            return []
        reached = {type(task) for task in self.tasks.values()}
        return [
            f"{source.nodeid}::{cls.__qualname__}"
            for cls, source in self.needs_arguments.items()
            if cls not in reached
        ]

    @property
    def graph(self) -> TaskGraph:
        """The union of the roots' graphs, every task after its upstream tasks."""
        if self._graph is None:
            self._graph = TaskGraph(self.roots)
        return self._graph

    def claim_items(self, source: TaskFile) -> list[TaskItem]:
        """Items for every task reached so far whose class this file defines."""
        here = source.path.resolve()
        return [
            self.make_item(key, task, source)
            for key, task in list(self.tasks.items())
            if key not in self.itemized and defining_file(type(task)) == here
        ]

    def make_item(self, key: NodeKey, task: Any, parent: TaskFile) -> TaskItem:
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
            marks=self.root_marks.get(key, ()),
        )
        self.itemized[key] = item
        return item


COLLECTION = pytest.StashKey[Collection]()


class Collector:
    """Collection hooks of a ``--taskproc`` run."""

    def __init__(self, config: pytest.Config, options: Options) -> None:
        self.config = config
        self.options = options
        self.found = Collection()
        config.stash[COLLECTION] = self.found

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
        if file_path.suffix != ".py" or parent.session.isinitpath(file_path):
            return None  # a file named on the command line: see pytest_pycollect_makemodule
        patterns = self.config.getini("taskproc_files")
        if not any(file_path.match(p) for p in patterns):
            return None
        return TaskFile.from_parent(parent, path=file_path)

    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makemodule(self, module_path: Path, parent: pytest.Collector) -> Any:
        """A Python file named on the command line is a task file, whatever its name.

        pytest makes a module of any Python file named on the command line and
        asks this hook for it, so the file becomes one task file instead of a
        test module besides.  A test file (``python_files``) stays a test module.
        """
        if not parent.session.isinitpath(module_path):
            return None
        task_patterns = self.config.getini("taskproc_files")
        if not any(module_path.match(p) for p in task_patterns) and any(
            module_path.match(p) for p in self.config.getini("python_files")
        ):
            return None
        return TaskFile.from_parent(parent, path=module_path)

    def pytest_ignore_collect(self, collection_path: Path) -> bool | None:
        # The cache holds no tests; walking a big graph's result folders costs seconds.
        return True if collection_path == self.options.cache_root else None

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed and is_task_file(self.config, report.nodeid):
            self.found.task_file_errors += 1

    @pytest.hookimpl(hookwrapper=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[Any]) -> Any:
        """Add the items no collected file claimed, in upstream-first order.

        Items are added and ordered before the other plugins see the list, so
        ``-k``/``-m`` can deselect them and ``--sw`` skips what came before the
        failed item; the order is restored after them, because plugins
        that shuffle (pytest-randomly) or sort do so in plain implementations
        or before theirs yields.  ``--ff``/``--nf`` reorder after this, in
        wrappers of their own, and keep their say.
        """
        found = self.found
        late: list[Any] = []
        for key, task in list(found.tasks.items()):
            if key in found.itemized:
                continue
            owner = found.task_files.get(defining_file(type(task)) or Path())
            late.append(found.make_item(key, task, owner or found.first_file[key]))
        if late:
            items.extend(late)
            # These were in no collect report; one for them keeps pytest's
            # "collected N items" (and every other listener) right.
            report = pytest.CollectReport(session.nodeid, "passed", None, late)
            self.config.hook.pytest_collectreport(report=report)
        order = {k: i for i, k in enumerate(found.graph.order)}
        # Before the others too: ``--sw`` deselects the items before the one that
        # failed last time, by position, so it must see them upstream-first.
        items[:] = items_in_upstream_order(items, order)
        yield
        items[:] = items_in_upstream_order(items, order)

    @pytest.hookimpl(tryfirst=True)  # before the plan reads the selection
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.found.selected = [i for i in session.items if isinstance(i, TaskItem)]
        self.config.stash[UNREACHED] = self.found.unreached()
        self._check_rate_limit_channels()

    def _check_rate_limit_channels(self) -> None:
        """Warn about a rate limit no collected task is subject to: a typo means no limit."""
        limits = self.options.rate_limits
        if not limits or not self.found.tasks:
            return
        if (self.options.worker_id or "gw0") != "gw0":
            return  # every worker collects the same tasks: one warning is enough
        known: set[str] = set()
        for task in self.found.tasks.values():
            known.update(spec_of(task).config.channels)
        unknown = sorted(set(limits) - known)
        if not unknown:
            return
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


def items_in_upstream_order(items: list[Any], order: dict[NodeKey, int]) -> list[Any]:
    """Task items sorted upstream-first in the slots task items held; other tests stay put."""
    task_positions = [i for i, item in enumerate(items) if isinstance(item, TaskItem)]
    tasks = sorted((items[i] for i in task_positions), key=lambda it: order[it.key])
    reordered = list(items)
    for position, item in zip(task_positions, tasks, strict=True):
        reordered[position] = item
    return reordered
