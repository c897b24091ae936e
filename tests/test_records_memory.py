"""Records a process wrote are not read back from disk, unless the file could have changed.

A downstream task reads its upstream's record to find the value; when the
same process committed that record (or the run's job handed its stamp on),
the record is taken from memory while the file at its path is still the one
the writer left.  These tests replace and damage the files behind that
memory and expect what is on disk to win.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import math
import os
import re
import struct
import termios
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules
from conftest import run_on_threads as run

from pytest_taskproc import CorruptResultError, ResultMissingError, recordmemory
from pytest_taskproc.atomic import read_to_end, write_text_atomic
from pytest_taskproc.cache import ClassStore, get_store
from pytest_taskproc.identity import encode_key
from pytest_taskproc.record import (
    InputRead,
    Record,
    UpstreamRead,
    _encode,
    _timestamp,
    made_now,
    new_lineage,
    parse_record,
)
from pytest_taskproc.spec import spec_of

TASKS = """
class Up(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> list[int]:
        log("run", "Up", self.n)
        return list(range(self.n))


class Down(TaskBase):
    up: Requires[list[int]]

    def build_task(self, n: int) -> None:
        self.up = Up(n)

    def run_task(self) -> int:
        log("run", "Down")
        return sum(self.up)
"""


@pytest.fixture
def tasks(modules: TaskModules) -> ModuleType:
    return modules.load("memory_tasks", TASKS)


def committed(cache_root: Path, task: object) -> tuple[ClassStore, int, str, bytes, Record]:
    """The store of ``task``, its id and key, and the text and record this process committed."""
    spec = spec_of(task)
    store = get_store(cache_root, spec.name)
    task_id = store.known_id(spec.key)
    assert task_id is not None
    _, text, record = recordmemory._committed[store.record_path(task_id)]
    return store, task_id, spec.key, text, record


def test_encoding_is_json_dumps_and_a_record_reads_back_equal() -> None:
    for value in (
        'caf\u00e9 \u2603\n"quoted"',
        {"a": [1, 2.5, None, True, False], "b": {"c": 10**30, "d": -0.0}},
        [1e-05, 1e300, math.inf, -math.inf],
        {"nested": {"deep": [{"x": "y"}]}, "empty": {}, "list": []},
    ):
        assert _encode(value) == json.dumps(value)
    assert _encode(math.nan) == json.dumps(math.nan)
    record = Record(
        name="pkg.Task",
        key=encode_key({"alpha": 1e-05, "name": "caf\u00e9", "sizes": [1, 2]}),
        code="c" * 64,
        code_parts={"pkg.Task": "d" * 64, "pkg.helper": "e" * 64},
        upstream=(UpstreamRead("pkg.Up", encode_key({"n": 3}), "f" * 64, new_lineage()),),
        digest="a" * 64,
        size=12,
        file="result.pkl.gz",
        stored_size=40,
        lineage=new_lineage(),
        made=made_now(0.1234567891, "run-1", Record),
        inputs=(InputRead("data", "data/x.csv", "b" * 64), InputRead("k", None, "9" * 64)),
        files="1" * 64,
        stat=(1765000000123456789, 42, 1765000000123456789),
        written={"out/a.txt": ((3, 1765000000123456789, 43, 1765000000123456789), "2" * 64)},
    )
    text = record.to_json()
    assert parse_record(text) == record
    assert parse_record(text.encode()).to_json() == text
    document = json.loads(text)
    assert document["made"]["seconds"] == 0.123457
    assert re.fullmatch(r"[0-9a-f]{32}", record.lineage)


def test_the_timestamp_is_isoformat_in_utc_to_the_millisecond() -> None:
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    stamp = _timestamp()
    after = datetime.datetime.now(datetime.timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before <= when <= after


def test_a_record_replaced_on_disk_is_read_from_disk_not_from_memory(
    tasks: ModuleType, cache_root: Path
) -> None:
    assert run(tasks.Down(3)) == 3
    store, task_id, key, text, record = committed(cache_root, tasks.Up(3))
    handed = store.handed(task_id, record)
    assert handed is not None
    assert store.load_value(task_id, key) == ([0, 1, 2], record)  # from memory: the same object
    # Another process recomputes Up: same bytes, a new lineage, a new record file.
    document = json.loads(text)
    document["value"]["lineage"] = "0" * 32
    write_text_atomic(store.record_path(task_id), json.dumps(document))
    for given in (None, (handed, record.digest, record.lineage)):
        value, found = store.load_value(task_id, key, given)
        assert value == [0, 1, 2]
        assert found.lineage == "0" * 32
        assert found.made == record.made  # the whole record, read from the file
    assert recordmemory._committed.get(store.record_path(task_id)) is None


def test_a_handed_record_is_taken_as_is_only_while_its_file_is_unchanged(
    tasks: ModuleType, cache_root: Path
) -> None:
    assert run(tasks.Down(4)) == 6
    store, task_id, key, _, record = committed(cache_root, tasks.Up(4))
    handed = store.handed(task_id, record)
    assert handed is not None
    del recordmemory._committed[store.record_path(task_id)]  # as in another process
    given = (handed, record.digest, record.lineage)
    value, partial = store.load_value(task_id, key, given)
    assert value == [0, 1, 2, 3]
    assert (partial.digest, partial.lineage, partial.made) == (record.digest, record.lineage, {})
    # The value damaged in place (same size): its bytes are checked all the same.
    path = Path(store.folder(task_id), record.file)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptResultError, match="is damaged"):
        store.load_value(task_id, key, given)


LARGE = """
import random


class BigUp(TaskBase):
    def run_task(self) -> bytes:
        return random.Random(1).randbytes(1_500_000)


class BigDown(TaskBase):
    up: Requires[bytes]

    def build_task(self) -> None:
        self.up = BigUp()

    def run_task(self) -> int:
        return len(self.up)
"""


def test_a_large_value_under_a_handed_record_is_trusted_by_its_stat_and_damage_is_found(
    modules: TaskModules, cache_root: Path
) -> None:
    import os
    import random

    mod = modules.load("memory_large", LARGE)
    assert run(mod.BigDown()) == 1_500_000
    store, task_id, key, _, record = committed(cache_root, mod.BigUp())
    handed = store.handed(task_id, record)
    assert handed is not None and handed.stat == record.stat is not None
    del recordmemory._committed[store.record_path(task_id)]  # as in another process
    given = (handed, record.digest, record.lineage)
    value, partial = store.load_value(task_id, key, given)
    assert value == random.Random(1).randbytes(1_500_000)
    assert partial.made == {}  # the record was not read
    path = Path(store.folder(task_id), record.file)
    stat = path.stat()
    with open(path, "r+b") as handle:  # same size, inode and date: only ctime says it
        handle.seek(stat.st_size // 2)
        handle.write(b"\x00" * 16)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(CorruptResultError, match="is damaged"):
        store.load_value(task_id, key, given)


def test_a_value_damaged_after_its_record_was_committed_is_not_served(
    tasks: ModuleType, modules: TaskModules, cache_root: Path
) -> None:
    assert run(tasks.Down(5)) == 10
    store, task_id, key, _, record = committed(cache_root, tasks.Up(5))
    path = Path(store.folder(task_id), record.file)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptResultError, match="is damaged"):
        store.load_value(task_id, key)
    modules.clear_log()
    assert run(tasks.Down(5)) == 10  # the damaged result was withdrawn: computed again
    assert sorted(modules.runs()) == ["run Down", "run Up 5"]


@pytest.mark.parametrize("how", ["deleted", "truncated"])
@pytest.mark.parametrize("source", ["memory", "handed"])
def test_a_value_file_gone_or_cut_behind_a_remembered_record_is_told_as_from_disk(
    tasks: ModuleType, cache_root: Path, how: str, source: str
) -> None:
    assert run(tasks.Down(6)) == 15
    store, task_id, key, _, record = committed(cache_root, tasks.Up(6))
    handed = store.handed(task_id, record)
    assert handed is not None
    if source == "handed":
        del recordmemory._committed[store.record_path(task_id)]  # as in another process
    given = (handed, record.digest, record.lineage)
    path = Path(store.folder(task_id), record.file)
    if how == "deleted":
        path.unlink()
        with pytest.raises(ResultMissingError, match="no cached result"):
            store.load_value(task_id, key, given)
    else:
        path.write_bytes(path.read_bytes()[:-1])
        with pytest.raises(CorruptResultError, match="bytes where its record says"):
            store.load_value(task_id, key, given)


def test_a_remembered_record_that_disagrees_with_the_file_gives_way_to_the_file(
    tasks: ModuleType, cache_root: Path
) -> None:
    # Another process's record with the very same stamp (an inode reused within one tick of
    # a coarse clock) is not something a test can make; a memory that disagrees with the
    # file while its stamp matches stands for it: the file's record must win.
    assert run(tasks.Down(7)) == 21
    store, task_id, key, _, record = committed(cache_root, tasks.Up(7))
    path = store.record_path(task_id)
    stale = dataclasses.replace(record, digest="0" * 64, lineage="1" * 32)
    stamp = recordmemory._committed[path][0]
    recordmemory._committed[path] = (stamp, stale.to_json().encode(), stale)
    value, found = store.load_value(task_id, key)
    assert value == list(range(7))
    assert (found.digest, found.lineage) == (record.digest, record.lineage)


def test_a_planned_id_whose_folder_holds_another_task_reads_as_vanished_not_as_its_value(
    tasks: ModuleType, cache_root: Path
) -> None:
    # A downstream job reads its upstream by the planner's id without asking the id
    # table again; when another process rebuilt the table meanwhile and that folder
    # went to another task, the record there names the other task: the read fails as
    # a vanished upstream, and the other task's value is neither served nor dropped.
    from pytest_taskproc.errors import UpstreamChangedError
    from pytest_taskproc.job import _read_upstream

    assert run(tasks.Down(2)) == 1 and run(tasks.Down(5)) == 10
    store, two_id, two_key, _, two = committed(cache_root, tasks.Up(2))
    _, five_id, _, five_text, _ = committed(cache_root, tasks.Up(5))
    recordmemory._committed.clear()  # as in another process: the files are read
    read = UpstreamRead(store.name, two_key, two.digest, two.lineage)
    assert _read_upstream(cache_root, tasks.Up(2), read, two_id) == [0, 1]
    with pytest.raises(UpstreamChangedError, match="vanished"):
        _read_upstream(cache_root, tasks.Up(2), read, five_id)
    assert Path(store.record_path(five_id)).read_bytes() == five_text


@pytest.mark.parametrize("size", [0, 15, 70_000, (1 << 20) - 1, 1 << 20, 3 << 20])
def test_a_value_file_is_read_whole_even_when_it_grew_after_its_stat(
    tmp_path: Path, size: int
) -> None:
    # Small files in one read of the size fstat gave, large ones by FileIO.readall;
    # either way a file longer than its stat said is read to its end, so a changed
    # file shows up as bytes without the digest.
    data = os.urandom(size)
    path = tmp_path / "value"
    path.write_bytes(data)
    for hint in (size, max(size - 100, 0)):
        fd = os.open(path, os.O_RDONLY)
        try:
            assert read_to_end(fd, hint) == data
        finally:
            os.close(fd)


def test_a_short_read_before_the_end_reads_on() -> None:
    # A network or FUSE file may give fewer bytes than asked before its end: only
    # a read of exactly the size fstat gave is taken for the whole file.  A pipe
    # forces it: the reader gets the first half, and the second half is written
    # only once the reader has taken the first (the pipe is empty).
    data = os.urandom(3000)
    read_end, write_end = os.pipe()
    got: list[bytes] = []
    try:
        os.write(write_end, data[:1000])
        reader = threading.Thread(target=lambda: got.append(read_to_end(read_end, len(data))))
        reader.start()
        while _unread(read_end):
            time.sleep(0.001)  # polls the pipe's own count, not a guess at timing
        os.write(write_end, data[1000:])
        os.close(write_end)
        write_end = -1
        reader.join(timeout=30)
        assert got == [data]
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)


def _unread(fd: int) -> int:
    """The bytes waiting in a pipe (``FIONREAD``)."""
    (count,) = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))
    return int(count)
