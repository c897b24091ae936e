"""What a task item's reports say became of its task: each status's word, letter and colour.

The word travels on the reports (``report.taskproc``, a plain dict, so it
survives xdist's serialisation) and in JUnit XML and the manifest; the
letter and the colour are what the terminal shows, as pytest's own
statuses.  One count of the summary line per status.
"""

from __future__ import annotations

import enum
from typing import Any

from ..ledger import Kind


class Status(enum.Enum):
    """A status of a task item: its word, its progress letter, its colour."""

    COMPUTED = ("computed", ".", "green")
    CACHED = ("cached", "c", "cyan")
    VERIFIED = ("verified", "v", "green")
    NOT_REPRODUCIBLE = ("not reproducible", "F", "red")
    FAILED = ("failed", "F", "red")
    SKIPPED = ("skipped", "s", "yellow")
    XFAILED = ("xfailed", "x", "yellow")
    XPASSED = ("xpassed", "X", "yellow")
    ERRORS = ("errors", "E", "red")
    RERUN = ("rerun", "R", "yellow")

    @property
    def word(self) -> str:
        word: str = self.value[0]
        return word

    @property
    def letter(self) -> str:
        letter: str = self.value[1]
        return letter

    @property
    def colour(self) -> str:
        colour: str = self.value[2]
        return colour

    @classmethod
    def of(cls, word: object) -> Status | None:
        """The status a report's word names (None: not one of ours)."""
        return _BY_WORD.get(word) if isinstance(word, str) else None

    @classmethod
    def of_kind(cls, kind: Kind) -> Status:
        """How the end of a task (failed, skipped, xfailed) shows."""
        return _BY_WORD[kind.value]

    def markup(self, plain: bool = False) -> Any:
        """The upper-case word of ``-v``, coloured unless ``plain``."""
        word = self.word.upper()
        return word if plain else (word, {self.colour: True})

    @property
    def drawn(self) -> Status:
        """The state a task of this status is drawn in by the graph export."""
        return _DRAWN.get(self, self)

    @property
    def singular(self) -> str:
        """The word for one of them, as pytest says "1 error"."""
        return "error" if self is Status.ERRORS else self.word


_BY_WORD = {status.word: status for status in Status}
_DRAWN = {
    Status.XFAILED: Status.FAILED,
    Status.XPASSED: Status.COMPUTED,
    Status.ERRORS: Status.FAILED,
    Status.VERIFIED: Status.CACHED,
}

#: always in the summary line; the others only when they happened
MAIN_COUNTS = (Status.COMPUTED, Status.CACHED, Status.FAILED, Status.SKIPPED)
EXTRA_COUNTS = (Status.XFAILED, Status.XPASSED, Status.ERRORS, Status.RERUN)
#: passing statuses with a category of their own; pytest's ``-rp`` lists them with ``passed``
OWN_CATEGORIES = (Status.CACHED, Status.VERIFIED)
