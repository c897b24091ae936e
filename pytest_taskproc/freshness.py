"""Why each task of a graph is fresh or stale, decided from records only.

A task is fresh when its result has a record that matches what the task is
now: the same upstream tasks, each of them fresh and holding the value the
record names (digest and lineage), and, with source-change detection on, the
same code digest.  No file date and no clock is compared anywhere.

Planning reads one record per task, upstream first, and writes nothing.  A
task whose only problem is a stale upstream task is *pending*: whether it
must run is decided again once its upstream tasks are done (``judge``), so a
recomputation that reproduces a value byte for byte leaves its downstream
fresh (early cutoff).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import ClassStore, get_store
from .context import cache_root
from .graph import TaskGraph
from .inputs import input_reads
from .record import InputRead, Record, UpstreamRead
from .source import CodeDigest, changed_names, code_digest, warn_if_edited
from .spec import NodeKey, TaskObject, TaskSpec, spec_of


class Reason(enum.Enum):
    """Why a task has to run; :attr:`sentence` is what users read (``-v``, dry run, manifest).

    No reason speaks of time: records are compared, never dates.
    """

    MISSING = "no result yet"
    CLEARED = "its result was cleared"
    SOURCE_CHANGED = "its code changed"
    UPSTREAM_SET = "its upstream tasks changed"
    UPSTREAM_CHANGED = "an upstream result changed"
    #: pending: an upstream task is stale, so its result is about to change (the
    #: same words as UPSTREAM_CHANGED, which it becomes unless the value comes
    #: out byte-identical; a value of its own keeps the enum member apart)
    UPSTREAM_STALE = "an upstream result is being recomputed"
    DAMAGED = "its result is damaged"
    #: a file it wrote into its task_directory was edited, truncated or deleted since
    FILES_CHANGED = "its written files changed"
    INPUT_CHANGED = "an input file changed"
    INPUT_MISSING = "an input file is missing"
    CONST_CHANGED = "an input value changed"

    @property
    def sentence(self) -> str:
        if self is Reason.UPSTREAM_STALE:
            return Reason.UPSTREAM_CHANGED.value
        return str(self.value)


@dataclass
class TaskState:
    """What the planner knows about one task."""

    task: TaskObject
    spec: TaskSpec
    store: ClassStore
    task_id: int | None
    record: Record | None
    code: CodeDigest
    reason: Reason | None = None
    detail: str = ""

    @property
    def stale(self) -> bool:
        return self.reason is not None

    @property
    def pending(self) -> bool:
        """Stale only because an upstream task is: it may turn out fresh."""
        return self.reason is Reason.UPSTREAM_STALE

    @property
    def stale_for_sure(self) -> bool:
        """Stale for a reason that no upstream result can undo."""
        return self.reason is not None and self.reason is not Reason.UPSTREAM_STALE

    def describe(self) -> str:
        if self.reason is None:
            return "fresh"
        return self.reason.sentence + (f" ({self.detail})" if self.detail else "")


def reads_of(record: Record) -> UpstreamRead:
    """How a downstream record names this result's value."""
    return UpstreamRead(record.name, record.key, record.digest, record.lineage)


def judge(
    spec: TaskSpec,
    record: Record | None,
    code: CodeDigest | None,
    upstream: Mapping[NodeKey, UpstreamRead | None],
    names: Mapping[NodeKey, Any] | None = None,
) -> tuple[Reason | None, str]:
    """Whether a result with ``record`` is fresh for ``spec``; (reason, detail) when not.

    ``upstream`` maps each upstream task to the value it holds now, or None
    while it is stale; ``code`` is None when source changes are ignored.
    """
    if record is None:
        return Reason.MISSING, ""
    recorded = {(u.name, u.key): u for u in record.upstream}
    if recorded.keys() != upstream.keys():
        return Reason.UPSTREAM_SET, _set_detail(recorded.keys(), upstream.keys(), names)
    if record.layout is not None and record.layout != spec.layout:
        # the same tasks, handed to run_task in other places (order, slot, item)
        return Reason.UPSTREAM_SET, "the same tasks, in other slots, positions or items"
    if code is not None and code.digest is not None and record.code != code.digest:
        return Reason.SOURCE_CHANGED, _code_detail(spec, code, record)
    if code is not None and record.value_code:
        # the value names classes or functions by name only (a fitted model's class):
        # what it does changed with their code
        held = changed_names(record.value_code)
        if held:
            shown = ", ".join(n.replace(":", ".") for n in held[:4])
            return Reason.SOURCE_CHANGED, f"{shown}, which its result holds"
    if spec.inputs or record.inputs:
        changed = _changed_input(record.inputs, input_reads(spec, cache_root()))
        if changed is not None:
            return changed
    waiting = None
    for node, now in upstream.items():
        if now is None:
            waiting = waiting or node
            continue
        read = recorded[node]
        if read.digest != now.digest or read.lineage != now.lineage:
            return Reason.UPSTREAM_CHANGED, _name(node, names)
    if waiting is not None:
        return Reason.UPSTREAM_STALE, _name(waiting, names)
    return None, ""


def _changed_input(
    recorded: tuple[InputRead, ...], now: tuple[InputRead, ...]
) -> tuple[Reason, str] | None:
    """The first declared input whose content (or place) is not what the record names."""
    before = {r.ident: r.digest for r in recorded}
    for read in now:
        if read.path is not None and read.digest is None:
            return Reason.INPUT_MISSING, read.path
        if before.get(read.ident, "") != read.digest:
            if read.path is not None:
                return Reason.INPUT_CHANGED, read.path
            return Reason.CONST_CHANGED, f"Const in slot {read.slot!r}"
    gone = before.keys() - {r.ident for r in now}
    if gone:
        slot, path = min(gone, key=str)
        if path is not None:
            return Reason.INPUT_CHANGED, path
        return Reason.CONST_CHANGED, f"Const in slot {slot!r}"
    return None


def _name(node: NodeKey, tasks: Mapping[NodeKey, Any] | None) -> str:
    if tasks is not None and node in tasks:
        return repr(tasks[node])
    return f"{node[0].rsplit('.', 1)[-1]} {node[1]}"


def _code_detail(spec: TaskSpec, code: CodeDigest, record: Record) -> str:
    """Which parts changed, when it was not (only) the class itself: helpers, constants."""
    changed = code.changed_parts(record.code_parts)
    if changed in ([], [spec.name]):
        return ""
    return ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")


def _set_detail(recorded: Any, now: Any, names: Mapping[NodeKey, Any] | None) -> str:
    added = [_name(n, names) for n in now if n not in recorded]
    removed = [f"{n[0].rsplit('.', 1)[-1]} {n[1]}" for n in recorded if n not in now]
    parts = []
    if added:
        parts.append("new: " + ", ".join(added[:3]) + (" ..." if len(added) > 3 else ""))
    if removed:
        parts.append("gone: " + ", ".join(removed[:3]) + (" ..." if len(removed) > 3 else ""))
    return "; ".join(parts)


def plan(
    graph: TaskGraph,
    root: Path,
    detect_source_change: bool,
    cleared: frozenset[NodeKey] = frozenset(),
) -> dict[NodeKey, TaskState]:
    """The state of every task in ``graph``, upstream first; reads records, writes nothing."""
    by_class: dict[str, list[NodeKey]] = {}
    for key in graph.order:
        by_class.setdefault(key[0], []).append(key)
    states: dict[NodeKey, TaskState] = {}
    for name, keys in by_class.items():
        store = get_store(root, name)
        ids = store.lookup_ids([k[1] for k in keys])
        code = code_digest(type(graph.tasks[keys[0]]), contents=True)
        if detect_source_change:
            warn_if_edited(type(graph.tasks[keys[0]]))
        for key, task_id in zip(keys, ids, strict=True):
            task = graph.tasks[key]
            record = None
            if task_id is not None and key not in cleared:
                record = store.read_record(task_id, key[1])
            states[key] = TaskState(task, spec_of(task), store, task_id, record, code)
    for key in graph.order:
        state = states[key]
        if key in cleared:
            state.reason = Reason.CLEARED
            continue
        upstream = {
            up: (None if states[up].stale else reads_of(states[up].record))  # type: ignore[arg-type]
            for up in graph.upstream(key)
        }
        state.reason, state.detail = judge(
            state.spec,
            state.record,
            state.code if detect_source_change else None,
            upstream,
            graph.tasks,
        )
        if state.record is not None and state.task_id is not None and not state.stale_for_sure:
            # Part of its result like the value (and checked the same way, by stat first);
            # checked also when pending, as its upstream may come back unchanged.
            changed = state.store.written_changes(state.task_id, state.record)
            if changed:
                state.reason, state.detail = Reason.FILES_CHANGED, _listed(changed)
    return states


def _listed(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
