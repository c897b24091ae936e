"""One line when a run creates a new cache: where it is, and how to pin it.

A run started from another directory (``cd .. && pytest --taskproc exp``)
would otherwise make a fresh ``.cache`` there and recompute everything
without a word (SPEC 2.4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..location import PIN_HINT


class NewCacheNote:
    """Remembers whether the cache existed when the run began; says so at the end if not."""

    def __init__(self, config: pytest.Config, root: Path) -> None:
        self.root = root
        self.existed = (root / "taskproc").exists()
        self.pinned = bool(
            config.getoption("taskproc_cache_dir") or config.getini("taskproc_cache_dir")
        )

    def line(self) -> str | None:
        if self.existed or not (self.root / "taskproc").exists():
            return None
        text = f"created a new taskproc cache at {self.root}"
        return text if self.pinned else f"{text}; {PIN_HINT}"

    @pytest.hookimpl(tryfirst=True)  # before the summary line, which ends the output
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        text = self.line()
        if text is not None:
            terminalreporter.write_line(text)
