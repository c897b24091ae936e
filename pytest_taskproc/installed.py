"""What is installed: each distribution's name, version and top-level import names.

Every record names the versions of the distributions its task's code
imports, so each process that writes records needs this table once.  The
standard library's ``importlib.metadata`` builds it at ~50 ms a process
(most of it a path object for every file of every distribution that does
not declare its top-level names); the walk here reads the same files as
strings and gives the same answer, and leaves what it does not imitate
exactly to the standard library (``tests/test_environment.py`` compares the
two on every supported Python).
"""

from __future__ import annotations

import csv
import functools
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Installed:
    """The installed distributions, as records name them."""

    #: top-level import name -> names of the distributions that provide it
    tops: dict[str, tuple[str, ...]]
    #: normalized distribution name -> its version (the first one on ``sys.path``)
    versions: dict[str, str]


_installed: Installed | None = None
_installed_lock = threading.Lock()


def installed() -> Installed:
    """The installed distributions, found once per process."""
    global _installed
    found = _installed
    if found is not None:
        return found
    with _installed_lock:
        if _installed is None:
            tops, versions = _scan_distributions()
            names = {top: tuple(dict.fromkeys(found)) for top, found in tops.items()}
            _installed = Installed(names, versions)
        return _installed


def _normalized(name: str) -> str:
    """A distribution name as packaging compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


#: Files a distribution's folder may hold, read as ``importlib.metadata`` reads them.
_UNREADABLE = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class _Unusual(Exception):
    """Something the quick walk does not imitate: the standard library's walk answers."""


def _scan_distributions() -> tuple[dict[str, list[str]], dict[str, str]]:
    """``importlib.metadata.packages_distributions()`` and every distribution's version.

    Asked once in every process that writes a record (each pytest-xdist
    worker, each pool process not forked from a warm parent), where the
    standard library's walk costs ~50 ms, most of it making a path object
    for every file of every distribution that does not declare its top-level
    names.  This walk visits the same folders in the same order and reads
    the same files as strings, names and versions from the headers only.
    Whatever it does not imitate exactly (a zip or an egg on ``sys.path``,
    a finder of the user's, Python 3.10's older rules, a metadata file that
    is not a folder of files) is answered by the standard library instead.
    """
    if sys.version_info < (3, 11) or any(
        hasattr(finder, "find_distributions") and not _is_path_finder(finder)
        for finder in sys.meta_path
    ):
        return _scan_with_importlib()
    table: dict[str, list[str]] = {}
    versions: dict[str, str] = {}
    try:
        for folder in _distribution_folders():
            name, version, tops = _read_distribution(folder)
            if version is not None:
                versions.setdefault(_normalized(name), version)  # sys.path order: first wins
            for top in tops:
                table.setdefault(top, []).append(name)
    except _Unusual:
        return _scan_with_importlib()
    return table, versions


def _is_path_finder(finder: object) -> bool:
    """The standard library's walk of ``sys.path``, or the ``importlib_metadata``
    backport's copy of it (which Dask, among others, puts on ``sys.meta_path`` in
    the standard library's place)."""
    from importlib.machinery import PathFinder

    if finder is PathFinder:
        return True
    kind = finder if isinstance(finder, type) else type(finder)
    return kind.__name__ == "MetadataPathFinder" and kind.__module__ in (
        "importlib.metadata",
        "importlib_metadata",
    )


def _distribution_folders() -> Iterator[str]:
    """The ``.dist-info`` and ``.egg-info`` folders on ``sys.path``, in the order
    ``importlib.metadata.distributions()`` yields them."""
    for entry in sys.path:
        root = entry or "."
        if os.path.basename(root).lower().endswith(".egg"):
            raise _Unusual(root)
        try:
            children = os.listdir(root)
        except OSError:
            if os.path.isfile(root):
                raise _Unusual(root) from None  # a zip on sys.path
            continue
        by_name: dict[str, list[str]] = {}
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                name = low.rpartition(".")[0].partition("-")[0]
                # grouped by name as importlib.metadata groups them
                by_name.setdefault(_normalized(name), []).append(os.path.join(entry, child))
        for folders in by_name.values():
            yield from folders


def _read_text(folder: str, name: str) -> str | None:
    try:
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            return handle.read()
    except _UNREADABLE:
        return None


def _read_distribution(folder: str) -> tuple[str, str | None, list[str]]:
    """A distribution's name, version and top-level import names."""
    if not os.path.isdir(folder):
        raise _Unusual(folder)  # an old single-file .egg-info
    text = _read_text(folder, "METADATA") or _read_text(folder, "PKG-INFO")
    headers = _headers(text)
    name, version = headers.get("name"), headers.get("version")
    if name is None:
        raise _Unusual(folder)
    declared = (_read_text(folder, "top_level.txt") or "").split()
    if declared:
        return name, version, declared
    record = _read_text(folder, "RECORD")
    if not record:
        raise _Unusual(folder)  # its files are listed elsewhere (an egg's)
    files = []
    for row in csv.reader(record.splitlines()):
        if not 1 <= len(row) <= 3:
            raise _Unusual(folder)
        files.append(row[0])
    return name, version, sorted(_inferred_tops(files, os.path.dirname(folder) or "."))


def _inferred_tops(files: list[str], base: str) -> set[str]:
    """``importlib.metadata._top_level_inferred`` of a distribution in folder ``base``
    listing ``files``, by the rules of this Python."""
    found: set[str] = set()
    for file in files:
        if (
            file not in ("", ".")
            and not file.startswith(("/", "./"))
            and not file.endswith(("/", "/."))
            and "//" not in file
            and "/./" not in file
        ):
            parts = file.split("/")  # "package/module.py": nearly every line
        else:  # what PurePosixPath(file).parts would be, spelled out
            parts = list(PurePosixPath(file).parts) or [""]
        top = _inferred_top(parts)
        if top is None or top in found:
            continue
        # Python 3.12 and later leave out listed files that are not there
        if sys.version_info < (3, 12) or os.path.exists(os.path.join(base, *parts)):
            found.add(top)
    return found


def _inferred_top(parts: list[str]) -> str | None:
    last = parts[-1]
    if sys.version_info < (3, 12):  # .py files only, unfiltered
        if not (last.endswith(".py") and len(last) > 3):
            return None
        return parts[0] if len(parts) > 1 else last[:-3]
    if len(parts) > 1:
        top: str | None = parts[0]
    else:
        from inspect import getmodulename

        top = getmodulename(last)
        if top is None and sys.version_info >= (3, 13):
            top = last
    return top if top is not None and "." not in top else None


def _scan_with_importlib() -> tuple[dict[str, list[str]], dict[str, str]]:
    """The standard library's walk (names and versions still read from the headers)."""
    from importlib import metadata

    table: dict[str, list[str]] = {}
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        headers = _headers(dist.read_text("METADATA") or dist.read_text("PKG-INFO"))
        name = headers.get("name") or dist.metadata["Name"]
        if name is None:
            continue
        version = headers.get("version") or dist.version
        if version is not None:
            versions.setdefault(_normalized(name), version)
    for top, names in metadata.packages_distributions().items():
        table[top] = list(names)
    return table, versions


def _headers(text: str | None, fields: tuple[str, ...] = ("name", "version")) -> dict[str, str]:
    """The first value of each of ``fields`` (lower case) among a metadata file's headers
    (they end at the first empty line)."""
    found: dict[str, str] = {}
    end = (text or "").find("\n\n")  # a long description follows the headers
    for line in (text or "")[: None if end < 0 else end + 1].splitlines():
        if not line.strip():
            break
        if line[0] in " \t":
            continue  # the continuation of a folded header
        name, colon, value = line.partition(":")
        field = name.strip().lower()
        if colon and field in fields and field not in found and value.strip():
            found[field] = value.strip()
    return found


def warm_up() -> None:
    """Find the installed distributions now, for processes forked from this one to inherit."""
    installed()


def version_of(distribution: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    version = installed().versions.get(_normalized(distribution))
    return version if version is not None else _version_from_metadata(distribution)


@functools.cache
def _version_from_metadata(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
