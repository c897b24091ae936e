"""Rate limits: at most N running tasks per channel label.

:class:`ChannelLimiter` is the scheduler's own count, for one ``run_graph``.
:class:`FileSlots` holds across processes (pytest-xdist workers, concurrent
runs): a channel limited to N has N slot lock files, and a task holds one of
them while it runs.  Channels are taken in sorted order, so two tasks that
need the same two channels can never wait on each other.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .cache import ensure_directory

POLL_SECONDS = 0.02


def check_limits(limits: Mapping[str, int] | None) -> dict[str, int]:
    """Validated limits; a limit below 1 could never let its tasks run."""
    checked: dict[str, int] = {}
    for label, limit in (limits or {}).items():
        if not isinstance(label, str) or type(limit) is not int or limit < 1:
            raise ValueError(
                f"rate_limits: {label!r}: {limit!r} must map a channel name to an int >= 1"
            )
        checked[label] = limit
    return checked


class ChannelLimiter:
    """Counts running tasks per channel inside one scheduler."""

    def __init__(self, limits: Mapping[str, int] | None) -> None:
        self.limits = check_limits(limits)
        self.running = dict.fromkeys(self.limits, 0)

    def limited(self, channels: Iterable[str]) -> list[str]:
        return [c for c in channels if c in self.limits]

    def try_acquire(self, channels: Iterable[str]) -> bool:
        limited = self.limited(channels)
        if any(self.running[c] >= self.limits[c] for c in limited):
            return False
        for c in limited:
            self.running[c] += 1
        return True

    def release(self, channels: Iterable[str]) -> None:
        for c in self.limited(channels):
            self.running[c] -= 1


def _slot_file_stem(channel: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", channel)[:40]
    digest = hashlib.sha1(channel.encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


class FileSlots:
    """Channel limits shared by every process using one cache directory."""

    def __init__(self, directory: Path, limits: Mapping[str, int] | None) -> None:
        self.directory = directory
        self.limits = check_limits(limits)

    @contextmanager
    def hold(self, channels: Iterable[str]) -> Iterator[None]:
        limited = sorted({c for c in channels if c in self.limits})
        if not limited:
            yield
            return
        ensure_directory(self.directory)
        with ExitStack() as stack:
            for channel in limited:
                stack.enter_context(self._one_slot(channel))
            yield

    @contextmanager
    def _one_slot(self, channel: str) -> Iterator[None]:
        from filelock import FileLock, Timeout  # slow to import: only when a limit applies

        stem = _slot_file_stem(channel)
        locks = [
            FileLock(str(self.directory / f"{stem}.{i}.lock"), thread_local=False)
            for i in range(self.limits[channel])
        ]
        while True:
            for lock in locks:
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                try:
                    yield
                finally:
                    lock.release()
                return
            time.sleep(POLL_SECONDS)
