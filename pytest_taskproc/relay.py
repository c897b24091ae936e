"""Warnings a task raised in a pool process, carried back to the process that reports it.

Inline, a warning ``run_task`` raises (the read audit's
``UndeclaredInputWarning`` among them) reaches pytest's warning capture, its
summary and ``-W error``.  A pool process has none of that: its warnings
went to its own stderr.  So the pool's entry point records each job's
warnings (every one, once per place and text, whatever the pool process's
filters say) and sends them back with the job's outcome or error; the caller
issues them again, where its own filters decide what becomes of them.

Categories travel by name, never by reference: a warning class defined in a
script or a cell could not be unpickled by the caller (or pickled at all),
and a result that cannot cross the pool would break it.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Iterable, Iterator

#: (category module, category qualname, message, filename, line)
Relayed = tuple[str, str, str, str, int]

#: the attribute of an error that carries the warnings of the job it ended
ATTRIBUTE = "taskproc_warnings"

__all__ = ["ATTRIBUTE", "Relayed", "as_messages", "capturing", "carried_by", "reissue"]


@contextlib.contextmanager
def capturing() -> Iterator[list[Relayed]]:
    """Record the warnings of the block; the list is filled when the block ends."""
    found: list[Relayed] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    seen: set[Relayed] = set()
    for record in caught:
        category = record.category
        item = (
            category.__module__,
            category.__qualname__,
            str(record.message),
            record.filename,
            record.lineno,
        )
        if item not in seen:
            seen.add(item)
            found.append(item)


def carried_by(end: object) -> tuple[Relayed, ...]:
    """The warnings a job's end carries: its outcome's, or its error's (none for others)."""
    found = getattr(end, ATTRIBUTE if isinstance(end, BaseException) else "warnings", ())
    return tuple(found) if isinstance(found, (tuple, list)) else ()


def as_messages(relayed: Iterable[Relayed]) -> list[warnings.WarningMessage]:
    """Carried warnings as the records ``warnings.catch_warnings`` keeps."""
    return [
        warnings.WarningMessage(message, category_of(module, qualname), filename, lineno)
        for module, qualname, message, filename, lineno in relayed
    ]


def reissue(relayed: Iterable[Relayed]) -> None:
    """Issue carried warnings here, as if raised where they were first."""
    for found in as_messages(relayed):
        warnings.warn_explicit(found.message, found.category, found.filename, found.lineno)


def category_of(module: str, qualname: str) -> type[Warning]:
    """The warning class of that name, or ``UserWarning`` where it cannot be found here."""
    try:
        found: object = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return UserWarning
    if isinstance(found, type) and issubclass(found, Warning):
        return found
    return UserWarning
