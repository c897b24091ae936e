"""Ctrl+C under xdist: the controller stops its workers within a second.

On an interrupt, xdist asks each worker to exit and waits up to ten seconds
before killing it; a worker inside a long ``run_task`` never answers, so the
run hung for that long.  A killed worker loses nothing that was saved (a
result is committed atomically) and the task it ran was never cached; the
summary counts what was saved before the interrupt (see ``report.py``).
"""

from __future__ import annotations

import pytest

#: seconds a worker has to exit after an interrupt before it is killed
EXIT_AFTER_INTERRUPT = 0.5


class InterruptedWorkers:
    """Registered on the xdist controller only."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_keyboard_interrupt(self) -> None:
        dsession = self.config.pluginmanager.getplugin("dsession")
        manager = getattr(dsession, "nodemanager", None)
        if manager is not None and hasattr(manager, "EXIT_TIMEOUT"):
            manager.EXIT_TIMEOUT = min(manager.EXIT_TIMEOUT, EXIT_AFTER_INTERRUPT)
