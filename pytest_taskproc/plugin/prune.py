"""``--taskproc-prune[=delete]``: cached results that no collected item reaches.

After collection, the results of every task class *defined in a collected
task file* are compared with the tasks the whole collection reaches (every
root, whatever ``-k``/``-m`` select): a result no root reaches any more (a
grid value removed, an argument renamed) is listed with its size, and with
``=delete`` removed under its task's lock, as clearing does.  Classes that
no collected file defines are never looked at, and a collection with errors
deletes nothing, since a root that failed to build would look unreachable.
Nothing is run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..cache import get_store
from ..clearing import remove_result
from ..inventory import Entry, scan_class
from ..spec import is_task_class
from .collect import COLLECTION, Collection
from .options import Options

DELETE = "delete"
LIST = "list"


def parse_prune(value: str) -> str:
    """``--taskproc-prune`` alone lists; ``=delete`` deletes; nothing else is a value."""
    if value in (LIST, DELETE):
        return value
    raise pytest.UsageError(
        f"--taskproc-prune={value}: use --taskproc-prune to list unreachable results or "
        "--taskproc-prune=delete to remove them (write file arguments before the option)"
    )


class Pruner:
    """Finds (and with ``=delete`` removes) the unreachable results after collection."""

    def __init__(self, config: pytest.Config, options: Options, mode: str) -> None:
        self.config = config
        self.options = options
        self.mode = mode
        self.found: list[Entry] = []
        self.classes: list[str] = []
        self.deleted = False
        self.refused: str | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        collection = self.config.stash[COLLECTION]
        self.classes = defined_classes(collection)
        reached = {key for key in collection.tasks}
        root = self.options.cache_root
        for name in self.classes:
            self.found.extend(
                e for e in scan_class(root, name) if e.key is None or (name, e.key) not in reached
            )
        if self.mode != DELETE or not self.found:
            return
        errors = collection.task_file_errors or session.testsfailed
        if errors:
            self.refused = (
                "the collection had errors (a root that failed to build would look "
                "unreachable); fix them and prune again"
            )
            return
        for entry in self.found:
            remove_result(get_store(root, entry.name), entry.task_id)
        self.deleted = True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        return True  # pruning runs nothing

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from ..cachetool import format_args, human_size

        write = terminalreporter.write_line
        terminalreporter.section("taskproc prune")
        total = human_size(sum(e.size for e in self.found))
        classes = f"{len(self.classes)} collected task class" + "es" * (len(self.classes) != 1)
        if not self.found:
            write(f"nothing to prune: every cached result of the {classes} is reached")
            return
        for entry in sorted(self.found, key=lambda e: (e.name, e.key or "", e.task_id)):
            args = "?" if entry.key is None else format_args(entry.args)
            write(
                f"  {entry.name}[{args}]  {human_size(entry.size)}  id {entry.task_id}  "
                f"{Path(entry.folder)}"
            )
        count = f"{len(self.found)} result" + "s" * (len(self.found) != 1)
        if self.deleted:
            write(f"taskproc prune: deleted {count} ({total}) that no collected item reaches")
        elif self.refused:
            write(f"taskproc prune: deleted nothing: {self.refused}")
        else:
            write(
                f"taskproc prune: {count} ({total}) that no collected item reaches; "
                "delete them with --taskproc-prune=delete"
            )


def defined_classes(collection: Collection) -> list[str]:
    """Cache names of the task classes defined in the collected task files."""
    names = set()
    for task_file in collection.task_files.values():
        try:
            module = task_file.obj
        except Exception:
            continue  # its import failed: a collection error, so nothing is deleted
        for value in vars(module).values():
            if is_task_class(value) and value.__module__ == module.__name__:
                names.add(value.task_name)
    return sorted(names)
