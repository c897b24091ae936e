"""A pytester directory of task files, for the plugin's end-to-end tests.

Every run is a pytest subprocess with a cache of its own; the generated task
modules share a ``log()`` helper that appends one line to ``run.log`` each
time it is called, so a test can tell exactly which ``run_task`` calls a run
made (a task computed twice shows up twice).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

HEADER = """\
from __future__ import annotations

import os
import time

import pytest

from pytest_taskproc import Const, Requires, RequiresList, TaskBase, infer_task_type

LOG = {log!r}


def log(*parts: object) -> None:
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(" ".join(str(p) for p in parts) + "\\n")

"""


#: Two items downstream of a task class ``Slow`` the test defines (timeout tests).
AFTER_SLOW = """
@pytest.mark.parametrize("i", [1, 2])
class After(TaskBase):
    slow: Requires[int]

    def build_task(self, i: int) -> None:
        self.slow = Slow()

    def run_task(self) -> int:
        log("After", self.task_args["i"])
        return self.slow
"""


class Project:
    """Task files, a run log and a cache in one pytester directory."""

    def __init__(self, pytester: pytest.Pytester, *, warnings_as_errors: bool = True) -> None:
        self.pytester = pytester
        self.path = pytester.path
        self.log = pytester.path / "run.log"
        self.cache = pytester.path / "tpcache"
        self.warnings_as_errors = warnings_as_errors

    def task_file(self, name: str, *bodies: str) -> Path:
        text = HEADER.format(log=str(self.log)) + "".join(textwrap.dedent(b) for b in bodies)
        path = self.path / name
        path.write_text(text, encoding="utf-8")
        return path

    def options(self, taskproc: bool = True) -> list[str]:
        options = ["-p", "no:cacheprovider", f"--taskproc-cache-dir={self.cache}"]
        if self.warnings_as_errors:
            options += ["-W", "error"]
        return ["--taskproc", *options] if taskproc else options

    def run(self, *args: str, taskproc: bool = True) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess(
            *self.options(taskproc), *unused_plugins(args, self.path), *args, timeout=120
        )

    def runs(self) -> list[str]:
        """Log lines since the last call: what ``run_task`` computed in between."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines()
        self.log.write_text("", encoding="utf-8")
        return lines

    def collected(self, *args: str) -> list[str]:
        """Node ids listed by ``--collect-only -q``, in order."""
        result = self.run("--collect-only", "-q", *args)
        return [line for line in result.outlines if "::" in line and not line.startswith(" ")]


#: plugins installed for the test suite that an inner run loads only when it uses them:
#: name -> the option prefixes, or ini keys, that use it
OPTIONAL_PLUGINS = {
    "randomly": ("--randomly", "randomly"),
    "rerunfailures": ("--reruns", "--only-rerun", "--rerun-except", "reruns"),
    "timeout": ("--timeout", "timeout"),
    "html": ("--html", "--self-contained-html", "--css", "html"),
    "metadata": ("--html", "--metadata", "--json-report", "html", "metadata"),
    # pytest-sugar takes over the terminal whenever it is a tty (the pty tests)
    "sugar": ("--force-sugar", "sugar"),
    "pytest_jsonreport": ("--json-report", "json_report"),
    "pytest_cov": ("--cov", "--no-cov", "pytest_cov", "[tool.coverage", "[coverage"),
}
INI_FILES = ("pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml")


def unused_plugins(args: tuple[str, ...], folder: Path) -> list[str]:
    """``-p no:NAME`` for each optional plugin neither the arguments nor the ini files use.

    Each costs every pytest process its start-up (pytest-randomly imports
    numpy to reseed it and shuffles plain tests; pytest-html, its templates),
    about a third of a trivial run's CPU time, paid by every inner run and
    every xdist worker of the suite.
    """
    ini = " ".join(
        (folder / name).read_text(encoding="utf-8")
        for name in INI_FILES
        if (folder / name).is_file()
    )
    off = []
    for name, uses in OPTIONAL_PLUGINS.items():
        if any(a.startswith(u) for a in args for u in uses if u.startswith("-")):
            continue
        if any(u in ini for u in uses if not u.startswith("-")):
            continue
        off += ["-p", f"no:{name}"]
    return off


#: pytest's word for each count of the ``taskproc:`` line
PYTEST_WORD = {
    "computed": "passed",
    "cached": "cached",
    "verified": "verified",
    "failed": "failed",
    "skipped": "skipped",
    "xfailed": "xfailed",
    "xpassed": "xpassed",
    "errors": "errors",
    "rerun": "rerun",
}


def taskproc_counts(result: pytest.RunResult) -> dict[str, int]:
    """The counts of the run's ``taskproc:`` line, by name."""
    (line,) = [line for line in result.outlines if line.startswith("taskproc: ")]
    counts = line[len("taskproc: ") :].split(";", 1)[0]
    found = {word: int(n) for n, word, *_ in (part.split() for part in counts.split(", "))}
    if "error" in found:
        found["errors"] = found.pop("error")
    return found


def assert_counts_agree(result: pytest.RunResult) -> dict[str, int]:
    """The ``taskproc:`` line and pytest's last line count the same items the same way.

    For runs of task items only: every pytest count but ``deselected`` and
    ``warnings`` must be one of the ``taskproc:`` line's, with the same number.
    """
    ours = taskproc_counts(result)
    theirs = {
        k: v for k, v in result.parseoutcomes().items() if k not in ("deselected", "warnings")
    }
    as_pytest = {PYTEST_WORD[k]: n for k, n in ours.items() if n}
    assert as_pytest == theirs, result.stdout.str()
    return ours
