"""Where the plugin's cache is, worked out without pytest: for the cache tool and messages.

The plugin's order (SPEC 2.4): ``--taskproc-cache-dir``, else the ini option
``taskproc_cache_dir`` (relative to the rootdir), else ``$CP_CACHE_DIR``, else
``<rootdir>/.cache``.  The rootdir is found as pytest finds it for a run
without arguments: the nearest directory upwards holding an ini file that
configures pytest, else the working directory.
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from pathlib import Path

__all__ = ["PIN_HINT", "default_cache_root", "find_ini"]

#: How to pin the cache, for the messages that say where it is.
PIN_HINT = (
    "pin it with `taskproc_cache_dir = .cache` under [pytest] in pytest.ini "
    "(or [tool.pytest.ini_options] in pyproject.toml)"
)

_INI_SECTIONS = {
    "pytest.ini": "pytest",
    ".pytest.ini": "pytest",
    "tox.ini": "pytest",
    "setup.cfg": "tool:pytest",
}


def find_ini(start: Path) -> tuple[Path, str | None] | None:
    """``(ini file, its taskproc_cache_dir or None)`` of the nearest pytest ini upwards."""
    for folder in (start, *start.parents):
        for name in ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg"):
            path = folder / name
            if not path.is_file():
                continue
            found = _read(path)
            if found is not None:
                return path, found[0]
    return None


def _read(path: Path) -> tuple[str | None] | None:
    """``(taskproc_cache_dir or None,)`` when the file configures pytest, else None."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if path.name == "pyproject.toml":
        return _read_pyproject(text)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    section = _INI_SECTIONS[path.name]
    if not parser.has_section(section):
        return (None,) if path.name in ("pytest.ini", ".pytest.ini") else None
    return (parser.get(section, "taskproc_cache_dir", fallback=None),)


def _read_pyproject(text: str) -> tuple[str | None] | None:
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            options = tomllib.loads(text).get("tool", {}).get("pytest", {}).get("ini_options")
        except tomllib.TOMLDecodeError:
            return None
        if not isinstance(options, dict):
            return None
        value = options.get("taskproc_cache_dir")
        return (None if value is None else str(value),)
    # No tomllib: the one line we need, read by hand.
    if not re.search(r"^\[tool\.pytest\.ini_options\]", text, re.M):
        return None
    found = re.search(r"^taskproc_cache_dir\s*=\s*[\"']([^\"']*)[\"']", text, re.M)
    return (found.group(1) if found else None,)


def default_cache_root(start: Path | None = None) -> Path:
    """The cache a ``pytest --taskproc`` run started in ``start`` (default: here) would use."""
    here = Path(start or Path.cwd()).resolve()
    found = find_ini(here)
    rootdir = here if found is None else found[0].parent
    if found is not None and found[1]:
        return (rootdir / found[1]).resolve()
    env = os.environ.get("CP_CACHE_DIR")
    if env:
        return Path(env).resolve()
    return rootdir / ".cache"
