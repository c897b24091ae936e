"""The run's manifest (``--taskproc-manifest``): every task item's status and record, as JSON.

The process that runs an item reads its task's record once the item has run
and puts it on the item's teardown report, where the status already
travels: xdist carries both to the controller, and a worker that crashes
later has sent what it ran.  Deselected items have no reports; the process
that collected them adds them at the end (the first xdist worker, through
``workeroutput``: every worker collects the same items).  The reporting
process, the xdist controller or the only one, writes one document when
the session ends: entries sorted by item and keys sorted, so the manifests
of two runs diff line by line.

Under xdist an item may have no report at all: ``-x`` stopped the run before
it was sent to a worker, or its worker was killed (SIGKILL, the OOM killer)
and took its deselected items' list with it.  So every worker also leaves
the list of what it collected in the run's folder when collection ends, and
the controller fills each hole from it, reading the task's record itself:
``not run``, ``crashed``, ``deselected`` or ``upstream``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .options import Options
from .report import REASON, REPORT_ATTR, STATUS, count_of, is_task_file
from .status import Status

#: the entry of a task item, on its teardown report
MANIFEST_ATTR = "taskproc_manifest"
#: entries of deselected items, in an xdist worker's ``workeroutput``
WORKER_OUTPUT = "taskproc_manifest"

#: what each xdist worker collected, in the run's folder: ``{nodeid: [class, key, selected]}``
COLLECTED_PREFIX = "manifest-collected-"
#: how xdist words the failure of an item whose worker died under it
_CRASH_WORDS = "crashed while running"


def run_status(report: Any) -> str | None:
    """What a report says became of its item's task: ``computed``, ``not reproducible``, ..."""
    which = count_of(report)
    if which is None or which is Status.RERUN:
        return None
    status = getattr(report, REPORT_ATTR, None)
    word = status.get(STATUS) if isinstance(status, dict) else None
    if which in (Status.COMPUTED, Status.FAILED) and isinstance(word, str):
        return word  # "computed", "not reproducible", or "failed"
    return which.singular


class Manifest:
    """Entries of the run's manifest: made where items run, written where the run reports."""

    def __init__(self, config: pytest.Config, options: Options) -> None:
        assert options.manifest is not None
        self.config = config
        self.options = options
        self.path: Path = options.manifest
        self.runs_items = not options.controller
        self.reports = options.worker_id is None
        self.entries: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, str] = {}
        #: why a task was stale, in the words of ``-v`` and the dry run
        self.reasons: dict[str, str] = {}
        #: items whose xdist worker died while running them
        self.crashed: set[str] = set()

    # -- where items run ----------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        outcome = yield
        if call.when != "teardown" or not self.runs_items:
            return
        from .collect import TaskItem

        if isinstance(item, TaskItem):
            setattr(outcome.get_result(), MANIFEST_ATTR, _entry(item.task))

    def _unreported(self, selected_too: bool) -> dict[str, dict[str, Any]]:
        """Entries of collected items without a report: deselected, or (here) not run."""
        from .collect import COLLECTION

        found = self.config.stash.get(COLLECTION, None)
        if found is None:
            return {}
        selected = {item.key for item in found.selected}
        entries = {}
        for key, item in found.itemized.items():
            if item.nodeid in self.entries or (key in selected and not selected_too):
                continue
            entry = _entry(item.task)
            if key in selected:
                entry["status"] = "not run"  # the run stopped first (-x, --maxfail)
            else:
                made = (entry["record"] or {}).get("made", {})
                # Computed in this run only as upstream of the selection, or left alone.
                ran = made.get("run") == self.options.run_id
                entry["status"] = "upstream" if ran else "deselected"
            entries[item.nodeid] = entry
        return entries

    # -- where the run reports ----------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.reports:
            return
        entry = getattr(report, MANIFEST_ATTR, None)
        if isinstance(entry, dict):
            self.entries[report.nodeid] = entry
        elif report.failed and _CRASH_WORDS in str(report.longrepr):
            self.crashed.add(report.nodeid)  # xdist's report for the item a dead worker ran
        if entry is not None or is_task_file(self.config, report.nodeid):
            status = run_status(report)
            if status is not None:  # a failing teardown has the last word, as in pytest
                self.statuses[report.nodeid] = status
            reason = (getattr(report, REPORT_ATTR, None) or {}).get(REASON)
            if report.when == "call" and reason:
                self.reasons[report.nodeid] = str(reason)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.options.worker_id is not None and not self.options.collect_only:
            self._leave_collected()

    def _leave_collected(self) -> None:
        """What this worker collected, for the controller to fill holes with."""
        import contextlib
        import json

        from ..atomic import write_text_atomic
        from .collect import COLLECTION

        found = self.config.stash.get(COLLECTION, None)
        if found is None:
            return
        selected = {item.key for item in found.selected}
        items = {
            item.nodeid: [key[0], key[1], key in selected] for key, item in found.itemized.items()
        }
        path = self.options.run_dir / f"{COLLECTED_PREFIX}{self.options.worker_id}.json"
        with contextlib.suppress(OSError):  # a read-only cache: holes stay holes
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(items))

    def _fill_holes(self) -> None:
        """Entries for the collected items no report and no worker output told of."""
        import json

        from ..cache import get_store

        collected: dict[str, list[Any]] = {}
        for path in sorted(self.options.run_dir.glob(f"{COLLECTED_PREFIX}*.json")):
            try:
                collected = {**json.loads(path.read_text(encoding="utf-8")), **collected}
            except (OSError, ValueError):
                continue
        root = self.options.cache_root
        for nodeid, (name, key, selected) in collected.items():
            if nodeid in self.entries:
                continue
            store = get_store(root, name)
            task_id = store.known_id(key)
            record = None if task_id is None else store.read_record(task_id, key, warn=False)
            document = None if record is None else record.as_dict()
            if nodeid in self.crashed:
                status = "crashed"
            elif selected:
                status = "not run"
            elif document is not None and document["made"].get("run") == self.options.run_id:
                status = "upstream"
            else:
                status = "deselected"
            self.entries[nodeid] = {
                "task": name,
                "args": json.loads(key),
                "id": task_id,
                "record": document,
                "status": status,
            }
            if nodeid in self.crashed:
                self.statuses[nodeid] = "crashed"

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", None) or {}
        for nodeid, entry in (output.get(WORKER_OUTPUT) or {}).items():
            self.entries.setdefault(nodeid, entry)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.options.collect_only:
            return
        if not self.reports:
            # Every worker collects the same items; one tells the controller of
            # the deselected ones.  The others ran on some worker or other.
            if self.options.worker_id == "gw0":
                workeroutput: dict[str, Any] = getattr(self.config, "workeroutput", {})
                workeroutput[WORKER_OUTPUT] = self._unreported(selected_too=False)
            return
        if self.runs_items:
            self.entries.update(self._unreported(selected_too=True))
        else:
            self._fill_holes()
        self.write()

    def write(self) -> None:
        from ..provenance import manifest_document, write_manifest

        tasks = []
        for nodeid in sorted(self.entries):
            entry = dict(self.entries[nodeid], item=nodeid)
            entry["status"] = self.statuses.get(nodeid, entry.get("status", "not run"))
            if nodeid in self.reasons:
                entry["reason"] = self.reasons[nodeid]
            tasks.append(entry)
        document = manifest_document(self.options.cache_root, tasks, self.config.rootpath)
        write_manifest(self.path, document)


def _entry(task: Any) -> dict[str, Any]:
    from ..provenance import manifest_entry

    return manifest_entry(task)
