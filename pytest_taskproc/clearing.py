"""Forgetting results under the locks a run takes, so a task being computed is never cut off.

``clear_task``, ``clear_all_tasks``, ``--taskproc-clear`` and ``--taskproc-prune``
all come here.  Each result is removed while its task's lock is held: a
process computing that task finishes and commits first, and its result is
then cleared, instead of its folder vanishing under it.  The locks are taken
one at a time, so clearing never deadlocks with a run that holds several.
"""

from __future__ import annotations

from .atomic import remove_tree
from .cache import ClassStore
from .idtable import listed
from .locks import task_lock

__all__ = ["clear_all", "clear_one", "remove_result", "result_ids"]


def clear_one(store: ClassStore, task_id: int) -> None:
    """Forget one result and its data directory; its folder and id stay."""
    with task_lock(store, task_id):
        store.clear_task(task_id)


def remove_result(store: ClassStore, task_id: int) -> None:
    """Remove one result folder whole (the id stays in the table, so it is never reused)."""
    with task_lock(store, task_id):
        remove_tree(store.result_dir(task_id))


def clear_all(store: ClassStore) -> int:
    """Remove every result of the class; returns how many folders were removed."""
    ids = result_ids(store)
    for task_id in ids:
        remove_result(store, task_id)
    return len(ids)


def result_ids(store: ClassStore) -> list[int]:
    """The ids of the class's result folders, in order."""
    return sorted(int(name) for name in listed(store.results_dir) if name.isdigit())
