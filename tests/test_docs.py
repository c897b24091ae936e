"""The documentation's code blocks: each one runs as shown, or is marked as a fragment.

Every fenced block in README.md, CONTRIBUTING.md and docs/*.md has a marker, an
HTML comment on the line right before its fence (CONTRIBUTING.md has the table):
``fragment`` (not run), ``file: NAME`` / ``append: NAME`` / ``edit: NAME`` (write,
extend or patch a file of the page's project folder; an ``edit`` block is a
diff), ``run`` (each line a ``pytest`` or ``python`` command), ``run-python`` (the
block as a script), ``output`` (what the previous run printed) or ``checked by
tests/TEST.py`` (another test checks it). A comment line ``project: PATH ...``
copies repository files into the project folder.

Each page runs in page order in one fresh folder holding its own cache, so a
page can write a task file, run it, edit it and run it again. An ``output``
block is compared line by line: its non-empty lines must appear in that order
in the real output, with durations, absolute paths, runs of ``=``/``-``/``_``
and ``...`` matching anything.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")],
    key=lambda p: p.relative_to(ROOT).as_posix(),
)
#: pages whose task files are also in the repository: the page's last version must match
PAGE_FILES = {"docs/tutorial.md": ROOT / "docs" / "tutorial"}

ACTIONS = ("file", "append", "edit", "run", "run-python", "output")
MARKER = re.compile(r"^<!--\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(```+)\s*([\w+-]*)\s*$")


@dataclass
class Step:
    kind: str  # one of ACTIONS, "project", "fragment" or "checked"
    arg: str
    text: str
    line: int  # 1-based line of the fence (or of the project comment)
    lang: str = ""


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def parse(page: Path) -> list[Step]:
    """The page's blocks and actions in order; a block without a marker is a failing step."""
    steps: list[Step] = []
    lines = page.read_text(encoding="utf-8").split("\n")
    marker: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        comment = MARKER.match(line)
        fence = FENCE.match(line)
        if comment:
            marker = comment[1]
            if marker.startswith("project:"):
                steps.append(Step("project", marker.split(":", 1)[1].strip(), "", i + 1))
        elif fence:
            end = i + 1
            while end < len(lines) and lines[end].rstrip() != fence[1]:
                end += 1
            text = "\n".join(lines[i + 1 : end]) + "\n"
            steps.append(_block_step(marker, text, i + 1, fence[2]))
            marker = None
            i = end
        else:
            marker = None
        i += 1
    return steps


def _block_step(marker: str | None, text: str, line: int, lang: str) -> Step:
    if marker is None:
        return Step("unmarked", "", text, line, lang)
    word, _, arg = marker.partition(":")
    word = word.strip()
    if word.startswith("checked by "):
        return Step("checked", word.removeprefix("checked by ").strip(), text, line, lang)
    if word in ACTIONS or word == "fragment":
        return Step(word, arg.strip(), text, line, lang)
    return Step("unmarked", marker, text, line, lang)


# -- the markers -------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_block_is_run_or_marked_as_a_fragment(page: Path) -> None:
    problems = []
    previous = ""
    for step in parse(page):
        where = f"{page_id(page)}:{step.line}"
        if step.kind == "unmarked":
            problems.append(f"{where}: a ```{step.lang} block with no marker ({step.arg!r})")
        elif step.kind == "output" and previous not in ("run", "run-python"):
            problems.append(f"{where}: an output block must follow a run or run-python block")
        elif step.kind in ("file", "append", "edit") and not step.arg:
            problems.append(f"{where}: {step.kind} needs a file name")
        elif step.kind == "checked":
            test = ROOT / step.arg.split(":")[0].strip()
            if not test.is_file() or page.name not in test.read_text(encoding="utf-8"):
                problems.append(f"{where}: {test.name} does not exist or never names {page.name}")
        if step.kind != "project":
            previous = step.kind
    assert not problems, "\n".join(problems)


def test_marker_parser_reads_actions_fragments_and_checks() -> None:
    page = ROOT / "CONTRIBUTING.md"
    kinds = [s.kind for s in parse(page)]
    assert kinds == ["fragment"], kinds
    sample = _block_step("file: task_x.py", "x = 1\n", 3, "python")
    assert (sample.kind, sample.arg) == ("file", "task_x.py")
    assert _block_step("checked by tests/test_x.py: a.yml", "", 1, "").arg == "tests/test_x.py"
    assert _block_step("what is this", "", 1, "").kind == "unmarked"
    assert _block_step(None, "", 1, "").kind == "unmarked"


# -- running the pages -------------------------------------------------------------------------

_TIME = re.compile(r"\d+(\.\d+)?\s?s\b")
_PATH = re.compile(r"(?<=[\s('\"=:])/(?=[\w.~])[^\s'\",)]*|^/(?=[\w.~])[^\s'\",)]*")
_RULE = re.compile(r"[=_-]{3,}")


def pattern(shown: str) -> str:
    """An fnmatch pattern for one line of an output block."""
    text = shown.rstrip()
    text = _RULE.sub("\0", text)
    text = _PATH.sub("\0", text)
    text = _TIME.sub("\0", text)
    text = text.replace("...", "\0")
    text = re.sub(r"[\[\]?*]", lambda m: f"[{m[0]}]", text)
    text = re.sub(r" {2,}", "\0", text)
    return re.sub("\0+", "*", text)


def output_mismatch(shown: str, actual: str, where: str) -> str | None:
    """None when the output block's lines appear in order in the real output, else why not."""
    got = [line.rstrip() for line in actual.splitlines()]
    cursor = 0
    for line in shown.splitlines():
        if not line.strip():
            continue
        wanted = pattern(line)
        for index in range(cursor, len(got)):
            if fnmatch.fnmatchcase(got[index], wanted):
                cursor = index + 1
                break
        else:
            return (
                f"{where}: the output block's line\n    {line}\nis not in the real output "
                f"(after line {cursor}); the real output:\n{actual}"
            )
    return None


def child_env() -> dict[str, str]:
    """The environment of a fresh shell: no cache settings, no test-run variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CP_", "PYTEST_"))}
    # pytest-randomly, when installed, reorders items and prints a seed; a reader may not have it
    env.update(PYTEST_ADDOPTS="-p no:randomly", COLUMNS="80", PY_COLORS="0", NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    return env


def run_command(command: str, cwd: Path) -> tuple[int, str]:
    words = shlex.split(command)
    if words[0] == "pytest":
        argv = [sys.executable, "-m", "pytest", *words[1:]]
    elif words[0] in ("python", "python3"):
        argv = [sys.executable, *words[1:]]
    else:
        raise AssertionError(f"a run block may only call pytest or python: {command!r}")
    done = subprocess.run(
        argv, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=300, check=False
    )
    return done.returncode, done.stdout + done.stderr


def apply_edit(path: Path, diff: str, where: str) -> None:
    """Replace the ``-``/context lines of a diff block by its ``+``/context lines."""
    old, new = [], []
    for line in diff.splitlines():
        sign, body = line[:1], line[1:]
        if sign in (" ", ""):
            old.append(body)
            new.append(body)
        elif sign == "-":
            old.append(body)
        elif sign == "+":
            new.append(body)
    text = path.read_text(encoding="utf-8")
    before = "\n".join(old) + "\n"
    assert text.count(before) == 1, f"{where}: the edit's old lines are not once in {path.name}"
    path.write_text(text.replace(before, "\n".join(new) + "\n"), encoding="utf-8")


def play_file_step(step: Step, project: Path, where: str) -> str:
    """Carry out a project, file, append or edit step; return the file's new text."""
    if step.kind == "project":
        for name in step.arg.split():
            shutil.copy(ROOT / name, project / Path(name).name)
        return ""
    target = project / step.arg
    target.parent.mkdir(parents=True, exist_ok=True)
    if step.kind == "file":
        target.write_text(step.text, encoding="utf-8")
    elif step.kind == "append":
        with target.open("a", encoding="utf-8") as handle:
            handle.write("\n\n" + step.text)
    else:
        apply_edit(target, step.text, where)
    return target.read_text(encoding="utf-8")


def run_page(page: Path, project: Path) -> tuple[dict[str, str], list[str]]:
    """Play the page's steps in ``project``: the files it wrote (as last written), mismatches.

    A page goes on after a mismatching output block, so that one run shows them all.
    """
    written: dict[str, str] = {}
    mismatches: list[str] = []
    output: str | None = None
    pending: tuple[str, int] | None = None  # a run whose exit status matters unless shown
    for step in parse(page):
        where = f"{page_id(page)}:{step.line}"
        if step.kind != "output" and pending is not None:
            assert pending[1] == 0, f"{pending[0]}: exited {pending[1]}:\n{output}"
            pending = None
        if step.kind == "project":
            play_file_step(step, project, where)
        elif step.kind in ("file", "append", "edit"):
            written[step.arg] = play_file_step(step, project, where)
        elif step.kind == "run":
            outputs, status = [], 0
            for command in step.text.splitlines():
                if command.strip() and not command.lstrip().startswith("#"):
                    code, text = run_command(command.strip(), project)
                    outputs.append(text)
                    status = status or code
            output, pending = "".join(outputs), (where, status)
        elif step.kind == "run-python":
            script = project / "docs_block.py"
            script.write_text(step.text, encoding="utf-8")
            code, output = run_command(f"python {script.name}", project)
            script.unlink()
            pending = (where, code)
        elif step.kind == "output":
            assert output is not None
            mismatch = output_mismatch(step.text, output, where)
            if mismatch:
                mismatches.append(mismatch)
            pending = None
    if pending is not None:
        assert pending[1] == 0, f"{pending[0]}: exited {pending[1]}:\n{output}"
    return written, mismatches


#: pages that show behaviour another branch is still building (removed when it lands)
WAITING: dict[str, str] = {}
RUNNABLE = [
    pytest.param(p, marks=pytest.mark.xfail(reason=WAITING[page_id(p)], strict=False))
    if page_id(p) in WAITING
    else p
    for p in PAGES
    if any(s.kind in ("run", "run-python") for s in parse(p))
]


@pytest.mark.parametrize("page", RUNNABLE, ids=page_id)
def test_page_runs_as_shown(page: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    written, mismatches = run_page(page, project)
    if mismatches:
        pytest.fail("\n\n".join(mismatches), pytrace=False)
    folder = PAGE_FILES.get(page_id(page))
    if folder is not None:
        kept = {
            p.name: p.read_text(encoding="utf-8")
            for p in folder.iterdir()
            if p.is_file() and p.suffix != ".png"  # pictures of the results, for readers
        }
        assert set(kept) == set(written), (
            f"{folder} holds {sorted(kept)}, the page {sorted(written)}"
        )
        for name, text in written.items():
            assert kept[name] == text, f"{folder / name} differs from the page's last version"


def test_output_patterns_ignore_times_paths_and_rules() -> None:
    shown = "taskproc: 1 computed; 0.01 s computing; cache: /home/me/x/.cache"
    actual = "taskproc: 1 computed; 12.50 s computing; cache: /tmp/pytest-1/p/.cache"
    assert fnmatch.fnmatchcase(actual, pattern(shown))
    rule = "============================== 5 passed in 0.13s ==============================="
    assert fnmatch.fnmatchcase("=== 5 passed in 10.21s ===", pattern(rule))
    assert not fnmatch.fnmatchcase("=== 4 passed in 0.13s ===", pattern(rule))
    assert fnmatch.fnmatchcase("task_x.py::Fit[0.1] PASSED", pattern("task_x.py::Fit[0.1] PASSED"))
    assert fnmatch.fnmatchcase("a b c", pattern("a ... c"))
    assert not fnmatch.fnmatchcase("n // 2", pattern("n / 2"))


def load_make_reference() -> Any:
    """docs/make_reference.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "make_reference", ROOT / "docs" / "make_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_is_generated_from_the_current_docstrings() -> None:
    module = load_make_reference()
    current = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert module.render() == current, (
        "docs/reference.md is out of date: run python docs/make_reference.py"
    )
    assert module.render() == current, "rendering twice must give the same text"


def show(page: Path) -> None:
    """Play ``page`` in a temporary folder and print what each run printed, to paste."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        for step in parse(page):
            if step.kind in ("project", "file", "append", "edit"):
                play_file_step(step, project, f"{page_id(page)}:{step.line}")
            elif step.kind in ("run", "run-python"):
                if step.kind == "run-python":
                    (project / "docs_block.py").write_text(step.text, encoding="utf-8")
                    commands = ["python docs_block.py"]
                else:
                    commands = [c.strip() for c in step.text.splitlines() if c.strip()]
                for command in commands:
                    print(f"----- {page_id(page)}:{step.line}: {command}")
                    print(run_command(command, project)[1].replace(folder, "/home/me/project"))


if __name__ == "__main__":
    # python tests/test_docs.py docs/tutorial.md: the real outputs of a page's runs
    for name in sys.argv[1:]:
        show(ROOT / name)


# -- links -------------------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_links_between_pages_lead_somewhere(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {linked.name}")
    assert not broken, f"{page_id(page)}:\n" + "\n".join(broken)


def test_anchors_are_githubs() -> None:
    assert slug(" Step 2: a task, and a sweep") == "step-2-a-task-and-a-sweep"
    assert slug(" `python -m pytest_taskproc.app`") == "python--m-pytest_taskprocapp"
    assert slug(" The pytest plugin's options") == "the-pytest-plugins-options"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_headings_stand_apart_from_the_text_before_them(page: Path) -> None:
    """A heading right after a list item's last line is easy to miss when editing."""
    lines, fenced, crowded = page.read_text(encoding="utf-8").splitlines(), False, []
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#") and number > 1 and lines[number - 2].strip():
            crowded.append(f"{page_id(page)}:{number}: {line}")
    assert not crowded, "no blank line before these headings:\n" + "\n".join(crowded)


def test_the_plugin_page_names_every_option_and_ini_setting() -> None:
    from pytest_taskproc import plugin

    module = load_make_reference()
    recorder = module._OptionRecorder()
    plugin.pytest_addoption(recorder)
    names = [n for _, options in recorder.groups for names, _ in options for n in names]
    names += [name for name, _, _ in recorder.ini]
    page = (ROOT / "docs" / "plugin.md").read_text(encoding="utf-8")
    missing = [n for n in names if f"`{n}" not in page]
    assert not missing, f"docs/plugin.md's options table does not name {missing}"
