"""``python -m pytest_taskproc.cache`` (also ``taskproc-cache``): look into a cache.

``ls [CLASS]`` lists results (arguments, size, when and how long they took,
whether the record is whole), ``show CLASS ID|ARGS`` prints one record and
the paths of its files, ``du`` sums sizes per class.  Only folders and
records are read (see ``inventory.py``), never a value, so it is fast on a
large cache and safe on one you do not trust.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import TaskprocError
from .identity import encode_key
from .inventory import WHOLE, Entry, class_names, scan_class
from .location import default_cache_root

__all__ = ["main"]

#: Widest arguments column of the table; ``--json`` has them whole.
ARGS_WIDTH = 48


class ToolError(TaskprocError):
    """A command of the cache tool that cannot be done (an unknown class, say)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskproc-cache",
        description="Inspect a pytest-taskproc cache: list, show and size its results.",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="the cache root (default: as `pytest --taskproc` run here: taskproc_cache_dir "
        "of the ini file, else $CP_CACHE_DIR, else <rootdir>/.cache)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ls = commands.add_parser("ls", help="list results (of one class)")
    ls.add_argument("cls", nargs="?", metavar="CLASS", help="module.Class, or Class alone")
    ls.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    show = commands.add_parser("show", help="one result's record and the paths of its files")
    show.add_argument("cls", metavar="CLASS")
    show.add_argument("which", metavar="ID|ARGS", help='a task id, or arguments as JSON: {"n": 1}')
    du = commands.add_parser("du", help="results and bytes per class")
    du.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    root = Path(options.cache_dir).resolve() if options.cache_dir else default_cache_root()
    try:
        if options.command == "ls":
            return _ls(root, options.cls, options.json)
        if options.command == "show":
            return _show(root, options.cls, options.which)
        return _du(root, options.json)
    except TaskprocError as exc:
        print(f"taskproc-cache: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head`
        return 0


# -- commands --------------------------------------------------------------------------------
def _ls(root: Path, wanted: str | None, as_json: bool) -> int:
    names = [resolve_class(root, wanted)] if wanted else class_names(root)
    entries = [e for name in names for e in scan_class(root, name)]
    entries.sort(key=lambda e: (e.name, e.key or "", e.task_id))
    if as_json:
        # One result per line, each encoded compactly: indenting the whole
        # document would run json's pure-Python encoder, slow on a big cache.
        lines = ",\n ".join(json.dumps(e.as_json(), sort_keys=True) for e in entries)
        sys.stdout.write(f'{{"cache": {json.dumps(str(root))}, "results": [\n {lines}\n]}}\n')
        return 0
    if not entries:
        print(f"no results in {root}" + (f" for {names[0]}" if wanted else ""))
        return 0
    rows = [
        [
            e.name,
            str(e.task_id),
            _short(format_args(e.args)),
            human_size(e.size),
            _when(e.at),
            "" if e.seconds is None else f"{e.seconds:.2f} s",
            e.state,
        ]
        for e in entries
    ]
    header = ["CLASS", "ID", "ARGUMENTS", "SIZE", "COMPUTED (UTC)", "TOOK", "RECORD"]
    print(table(header, rows, right={1, 3, 5}))
    whole = sum(e.state == WHOLE for e in entries)
    total = human_size(sum(e.size for e in entries))
    print(f"{len(entries)} results ({whole} whole), {total} in {root}")
    return 0


def _show(root: Path, wanted: str, which: str) -> int:
    name = resolve_class(root, wanted)
    entry = find_entry(root, name, which)
    folder = Path(entry.folder)
    record: Any = None
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
    value = record.get("value", {}).get("file") if isinstance(record, dict) else None
    lines = [
        f"class:     {entry.name}",
        f"id:        {entry.task_id}",
        f"arguments: {'?' if entry.key is None else entry.key}",
        f"record:    {entry.state}",
        f"folder:    {folder}",
        f"value:     {_path_or_none(folder / value) if value else 'none'}",
        f"stdout:    {_path_or_none(folder / 'stdout.txt')}",
        f"stderr:    {_path_or_none(folder / 'stderr.txt')}",
        f"data:      {_path_or_none(folder / 'data')}",
        f"size:      {human_size(entry.size)} in all",
    ]
    print("\n".join(lines))
    print()
    if record is None:
        print("(no readable record.json: this folder holds no result)")
    else:
        print(json.dumps(record, indent=2))
    return 0


def _du(root: Path, as_json: bool) -> int:
    sizes = []
    for name in class_names(root):
        entries = scan_class(root, name)
        whole = sum(e.state == WHOLE for e in entries)
        sizes.append((name, len(entries), whole, sum(e.size for e in entries)))
    sizes.sort(key=lambda row: (-row[3], row[0]))
    if as_json:
        classes = [{"class": n, "results": c, "whole": w, "size": s} for n, c, w, s in sizes]
        json.dump({"cache": str(root), "classes": classes}, sys.stdout, indent=1)
        print()
        return 0
    rows = [[n, str(c), str(w), human_size(s)] for n, c, w, s in sizes]
    rows.append(["total", str(sum(r[1] for r in sizes)), str(sum(r[2] for r in sizes)),
                 human_size(sum(r[3] for r in sizes))])  # fmt: skip
    print(table(["CLASS", "RESULTS", "WHOLE", "SIZE"], rows, right={1, 2, 3}))
    print(f"cache: {root}")
    return 0


# -- finding things --------------------------------------------------------------------------
def resolve_class(root: Path, wanted: str) -> str:
    """The class folder named ``wanted``: ``module.Class``, or ``Class`` if only one matches."""
    names = class_names(root)
    if wanted in names:
        return wanted
    matches = [n for n in names if n.rsplit(".", 1)[-1] == wanted or n.endswith("." + wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ToolError(f"{wanted!r} matches several classes: {', '.join(matches)}")
    known = ", ".join(names) if names else "none"
    raise ToolError(f"no class {wanted!r} in the cache {root} (classes there: {known})")


def find_entry(root: Path, name: str, which: str) -> Entry:
    entries = scan_class(root, name)
    if which.isdigit():
        found = [e for e in entries if e.task_id == int(which)]
    else:
        try:
            key = encode_key(json.loads(which))
        except (ValueError, TypeError, AttributeError):
            raise ToolError(
                f"{which!r} is neither a task id nor arguments as a JSON object, "
                "such as '{\"seed\": 1}'"
            ) from None
        found = [e for e in entries if e.key == key]
    if not found:
        raise ToolError(f"no result of {name} for {which} in {root}")
    return found[0]


# -- formatting ------------------------------------------------------------------------------
def format_args(args: Any) -> str:
    if not isinstance(args, dict):
        return "?"
    return ", ".join(f"{k}={_encode(v)}" for k, v in args.items())


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _short(text: str) -> str:
    return text if len(text) <= ARGS_WIDTH else text[: ARGS_WIDTH - 3] + "..."


def _when(at: str | None) -> str:
    return "" if not at else at[:19].replace("T", " ")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _path_or_none(path: Path) -> str:
    return str(path) if path.exists() else "none"


def table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join(line(r) for r in [header, *rows])
