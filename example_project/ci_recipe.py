"""Plays the GitHub Actions workflow of the example experiment twice on this machine.

Pipeline 1 clones the repository into a temporary folder, runs the workflow's
``experiment`` step there (the experiment, with JUnit XML and the provenance
manifest) and packs the task cache into a tarball, as ``actions/cache`` would.
Pipeline 2 clones again, at another path, restores the tarball with dates
that lie (older than the sources, and newest-first), runs the same step,
which must compute nothing, then the workflow's ``verify`` step, which must
verify every task of its slice.

The commands, the cache path and the artifact paths are read from
``.github/workflows/experiment.yml`` in the clone, so the workflow and this
script cannot drift apart.  Only the install step is not replayed: the
commands run with this interpreter, which must have pytest, pytest-xdist and
numpy; the clone's own ``pytest_taskproc`` is put first on ``PYTHONPATH`` (and
checked), so the code under test is the committed code, as in CI.

Usage: ``python example_project/ci_recipe.py [--keep]``.  Exit status 0 when
every check held, 1 with a message naming the violated one otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

WORKFLOW = Path(".github/workflows/experiment.yml")
JOB = "experiment"
#: Dates given to the restored cache files: long before any clone of the sources.
RESTORED_EPOCH = 1_000_000_000  # 2001-09-09
COMMAND_TIMEOUT = 300.0


class RecipeError(Exception):
    """A check of the recipe failed; the message says which and why."""


# -- the workflow file: a tiny parser for the YAML it uses -----------------------------------


class _YamlSubset:
    """Block mappings, block lists, plain/quoted scalars, ``|`` blocks and comments.

    Enough for GitHub workflow files written plainly; anything else (flow
    collections, anchors, ``>`` folding) is rejected with its line number.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.pos = 0

    def parse(self) -> Any:
        head = self._peek()
        if head is None:
            return None
        value = self._node(head[0])
        if self._peek() is not None:
            self._fail("unexpected indentation")
        return value

    def _fail(self, message: str) -> None:
        raise RecipeError(f"{WORKFLOW}, line {self.pos + 1}: {message}")

    def _peek(self) -> tuple[int, str] | None:
        """Indentation and content (comment removed) of the next meaningful line."""
        while self.pos < len(self.lines):
            raw = self.lines[self.pos]
            content = _strip_comment(raw).rstrip()
            if content.strip():
                return len(content) - len(content.lstrip(" ")), content.strip()
            self.pos += 1
        return None

    def _node(self, indent: int) -> Any:
        head = self._peek()
        assert head is not None
        if head[1] == "-" or head[1].startswith("- "):
            return self._list(indent)
        return self._mapping(indent)

    def _mapping(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while (head := self._peek()) is not None and head[0] == indent:
            content = head[1]
            if content.startswith("- ") or content == "-":
                break
            key, colon, rest = content.partition(":")
            if not colon or (rest and not rest.startswith(" ")):
                self._fail(f"expected 'key: value', got {content!r}")
            self.pos += 1
            result[_scalar(key.strip())] = self._value(rest.strip(), indent)
        if head is not None and head[0] > indent:
            self._fail("unexpected indentation")
        return result

    def _list(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while (head := self._peek()) is not None and head[0] == indent:
            content = head[1]
            if not (content.startswith("- ") or content == "-"):
                break
            rest = content[1:].lstrip()
            if not rest:
                self.pos += 1
                nested = self._peek()
                items.append(self._node(nested[0]) if nested and nested[0] > indent else None)
            elif re.match(r"[^\s'\"][^:]*:(\s|$)", rest):
                # "- key: value" opens a mapping indented like its first key
                offset = indent + len(content) - len(rest)
                self.lines[self.pos] = " " * offset + rest
                items.append(self._mapping(offset))
            else:
                self.pos += 1
                items.append(_scalar(rest))
        return items

    def _value(self, rest: str, indent: int) -> Any:
        if rest in ("|", "|-"):
            return self._block(indent, keep_newline=rest == "|")
        if rest.startswith(("[", "{", "&", "*", ">", "!")):
            self._fail(f"unsupported YAML: {rest!r}")
        if rest:
            return _scalar(rest)
        head = self._peek()
        if head is None:
            return None
        if head[0] > indent or (head[0] == indent and head[1].startswith("- ")):
            return self._node(head[0])
        return None

    def _block(self, indent: int, keep_newline: bool) -> str:
        body: list[str] = []
        while self.pos < len(self.lines):
            raw = self.lines[self.pos]
            if raw.strip() and len(raw) - len(raw.lstrip(" ")) <= indent:
                break
            body.append(raw)
            self.pos += 1
        while body and not body[-1].strip():
            body.pop()
        margin = min(len(line) - len(line.lstrip(" ")) for line in body if line.strip())
        text = "\n".join(line[margin:] for line in body)
        return text + "\n" if keep_newline else text


def _strip_comment(line: str) -> str:
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def _scalar(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return str(json.loads(text))
    return text


@dataclass(frozen=True)
class Workflow:
    """What the recipe replays from the workflow file."""

    experiment: str
    verify: str
    working_directory: str
    cache_path: str
    artifacts: tuple[str, ...]


def read_workflow(path: Path) -> Workflow:
    document = _YamlSubset(path.read_text(encoding="utf-8")).parse()
    try:
        steps: list[dict[str, Any]] = document["jobs"][JOB]["steps"]
    except (KeyError, TypeError) as error:
        raise RecipeError(f"{WORKFLOW}: no jobs.{JOB}.steps") from error

    def step(*, step_id: str = "", uses: str = "") -> dict[str, Any]:
        for candidate in steps:
            if (step_id and candidate.get("id") == step_id) or (
                uses and str(candidate.get("uses", "")).startswith(uses)
            ):
                return candidate
        raise RecipeError(f"{WORKFLOW}: job {JOB!r} has no step {step_id or uses!r}")

    def command(found: dict[str, Any]) -> str:
        run = str(found.get("run", "")).strip()
        if not run or "${{" in run:
            raise RecipeError(f"{WORKFLOW}: step {found.get('id')!r} needs a plain 'run:' command")
        return run

    experiment, verify = step(step_id="experiment"), step(step_id="verify")
    directory = str(experiment.get("working-directory", "."))
    if str(verify.get("working-directory", ".")) != directory:
        raise RecipeError(f"{WORKFLOW}: 'experiment' and 'verify' run in different folders")
    cache_path = str(step(uses="actions/cache@")["with"]["path"]).strip()
    artifacts = str(step(uses="actions/upload-artifact@")["with"]["path"]).split()
    return Workflow(command(experiment), command(verify), directory, cache_path, tuple(artifacts))


# -- running things ------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"[ci] {message}", flush=True)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if done.returncode != 0:
        raise RecipeError(f"git {' '.join(args)} failed in {cwd}:\n{done.stderr.strip()}")
    return done.stdout.strip()


def clone(source: Path, commit: str, destination: Path) -> None:
    started = time.perf_counter()
    git("clone", "--quiet", "--no-checkout", str(source), str(destination), cwd=source)
    git("checkout", "--quiet", "--detach", commit, cwd=destination)
    say(f"  git clone {source} -> {destination} ({time.perf_counter() - started:.1f} s)")


def make_shims(folder: Path) -> Path:
    """``python`` and ``pytest`` on PATH mean this interpreter, as setup-python arranges in CI."""
    folder.mkdir(parents=True)
    quoted = shlex.quote(sys.executable)
    for name, target in (("python", quoted), ("pytest", f"{quoted} -m pytest")):
        shim = folder / name
        shim.write_text(f'#!/bin/sh\nexec {target} "$@"\n', encoding="utf-8")
        shim.chmod(0o755)
    return folder


def plugin_is_installed() -> bool:
    return any(
        entry.value.startswith("pytest_taskproc")
        for entry in metadata.entry_points(group="pytest11")
    )


def step_environment(checkout: Path, shims: Path) -> dict[str, str]:
    """This process's environment minus what would steer pytest or the cache from outside."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "CP_", "PYTHONPATH", "PY_COLORS", "FORCE_COLOR"))
    }
    env["PYTHONPATH"] = str(checkout)
    env["PATH"] = f"{shims}{os.pathsep}{env.get('PATH', '')}"
    env["PY_COLORS"] = "0"
    if not plugin_is_installed():
        # without the pytest11 entry point of an installed copy, name the plugin module
        env["PYTEST_PLUGINS"] = "pytest_taskproc.plugin"
    return env


def run_step(name: str, command: str, cwd: Path, env: Mapping[str, str]) -> str:
    """Runs a workflow ``run:`` command as Actions does (bash -eo pipefail); returns its output."""
    say(f"  $ {command}    (in {cwd.name}/)")
    started = time.perf_counter()
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    output = done.stdout
    tail = [line for line in output.splitlines() if line.startswith(("taskproc:", "=" * 5))]
    for line in tail[-2:]:
        say(f"    {line}")
    say(f"  step {name!r} exited {done.returncode} ({time.perf_counter() - started:.1f} s)")
    if done.returncode != 0:
        raise RecipeError(f"step {name!r} failed (exit {done.returncode}); its output:\n{output}")
    return output


def check_imports_from(checkout: Path, cwd: Path, env: Mapping[str, str]) -> None:
    done = subprocess.run(
        ["python", "-c", "import pytest_taskproc.plugin as p; print(p.__file__)"],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    where = Path(done.stdout.strip() or "?")
    if done.returncode != 0 or not where.is_relative_to(checkout):
        raise RecipeError(
            f"the steps would not run the clone's code: pytest_taskproc comes from {where}"
            f"\n{done.stderr}"
        )
    how = "entry point of the installed copy" if plugin_is_installed() else "PYTEST_PLUGINS"
    say(f"  pytest_taskproc is imported from the clone ({how}, PYTHONPATH={checkout.name})")


# -- what the runs left --------------------------------------------------------------------


def read_summary(output: str) -> dict[str, int]:
    """The counts of the plugin's one ``taskproc:`` line, by word.

    ``taskproc: 3 computed (+2 upstream), 5 cached, 0 failed, 0 skipped; ...``
    gives ``{"computed": 3, "upstream": 2, "cached": 5, "failed": 0, ...}``;
    counts in parentheses (``+2 upstream``) are read like the others.
    """
    lines = [line for line in output.splitlines() if line.startswith("taskproc: ")]
    if len(lines) != 1:
        raise RecipeError(f"expected one 'taskproc:' summary line, found {len(lines)}:\n{output}")
    counts: dict[str, int] = {}
    outside_parentheses = r"(?![^()]*\))"
    head = re.split(";" + outside_parentheses, lines[0].removeprefix("taskproc: "))[0]
    for part in re.split("," + outside_parentheses, head):
        for number, word in re.findall(r"\+?(\d+) ([a-z][a-z ]*[a-z])", part):
            counts[word] = int(number)
    return counts


def read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"the experiment wrote no manifest at {path}")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if not manifest.get("tasks"):
        raise RecipeError(f"the manifest {path} lists no tasks")
    return manifest


def statuses(manifest: Mapping[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in manifest["tasks"]:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    return counts


def value_digests(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Item → digest of the value its record names."""
    return {entry["item"]: entry["record"]["value"]["digest"] for entry in manifest["tasks"]}


def junit_statuses(path: Path) -> dict[str, int]:
    """How many testcases the plugin's status line in ``system-out`` calls what; failures too."""
    if not path.is_file():
        raise RecipeError(f"the experiment wrote no JUnit XML at {path}")
    counts: dict[str, int] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] = counts.get("failed", 0) + 1
            continue
        text = " ".join(out.text or "" for out in case.iter("system-out"))
        status = re.search(r"taskproc: (\w+)", text)
        key = status.group(1) if status else "no status"
        counts[key] = counts.get(key, 0) + 1
    return counts


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under ``root``, by relative path."""
    found: dict[str, tuple[int, int]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            stat = path.stat()
            found[path.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def pack_cache(cache: Path, tarball: Path) -> None:
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(cache, arcname=cache.name)
    files = sum(1 for path in cache.rglob("*") if path.is_file())
    size = tarball.stat().st_size / 2**10
    say(f"  packed {files} cache files into {tarball.name} ({size:.0f} KiB)")


def restore_cache(tarball: Path, destination: Path) -> None:
    """Unpacks the cache, then dates it before the sources, newest file first.

    Tools that compare file dates would call every result stale (older than
    the sources) and every downstream result older than its upstream.
    """
    with tarfile.open(tarball, "r:gz") as archive:
        members = archive.getmembers()
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and security releases before it
            archive.extractall(destination.parent, filter="data")
        else:
            archive.extractall(destination.parent)
    by_age = sorted(members, key=lambda member: (member.mtime, member.name), reverse=True)
    for rank, member in enumerate(by_age):
        stamp = RESTORED_EPOCH + 60 * rank
        os.utime(destination.parent / member.name, (stamp, stamp), follow_symlinks=False)
    when = time.strftime("%Y-%m-%d", time.gmtime(RESTORED_EPOCH))
    say(
        f"  restored {len(members)} files and folders, dated from {when} on, "
        "newest written = oldest date"
    )


# -- the two pipelines ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    checkout: Path
    workflow: Workflow
    env: dict[str, str]

    @property
    def project(self) -> Path:
        return self.checkout / self.workflow.working_directory

    @property
    def cache(self) -> Path:
        return self.checkout / self.workflow.cache_path

    def artifact(self, suffix: str) -> Path:
        for path in self.workflow.artifacts:
            if path.endswith(suffix):
                return self.checkout / path
        raise RecipeError(f"{WORKFLOW}: no uploaded artifact ending in {suffix!r}")


def start_pipeline(source: Path, commit: str, checkout: Path, shims: Path) -> Pipeline:
    clone(source, commit, checkout)
    workflow = read_workflow(checkout / WORKFLOW)
    env = step_environment(checkout, shims)
    pipeline = Pipeline(checkout, workflow, env)
    check_imports_from(checkout, pipeline.project, env)
    return pipeline


def first_pipeline(pipeline: Pipeline, tarball: Path) -> dict[str, Any]:
    if pipeline.cache.exists():
        raise RecipeError(f"a fresh clone already has a task cache at {pipeline.cache}")
    output = run_step("experiment", pipeline.workflow.experiment, pipeline.project, pipeline.env)
    summary = read_summary(output)
    manifest = read_manifest(pipeline.artifact("manifest.json"))
    counts = statuses(manifest)
    total = len(manifest["tasks"])
    if counts != {"computed": total} or summary.get("computed") != total:
        raise RecipeError(
            f"pipeline 1 started from no cache, so all {total} tasks should be computed; "
            f"manifest statuses {counts}, summary {summary}"
        )
    say(f"  manifest: {total} tasks, all computed; summary: {summary['computed']} computed")
    junit = junit_statuses(pipeline.artifact("junit.xml"))
    if junit != {"computed": total}:
        raise RecipeError(f"pipeline 1's JUnit XML should say {total} computed: {junit}")
    if not Path(manifest["cache"]).resolve().is_relative_to(pipeline.cache.resolve()):
        raise RecipeError(
            f"the run used the cache {manifest['cache']}, but the workflow caches "
            f"{pipeline.workflow.cache_path}"
        )
    pack_cache(pipeline.cache, tarball)
    return manifest


def second_pipeline(pipeline: Pipeline, tarball: Path, before: Mapping[str, Any]) -> None:
    restore_cache(tarball, pipeline.cache)
    output = run_step("experiment", pipeline.workflow.experiment, pipeline.project, pipeline.env)
    summary = read_summary(output)
    manifest = read_manifest(pipeline.artifact("manifest.json"))
    counts = statuses(manifest)
    total = len(manifest["tasks"])
    if total != len(before["tasks"]):
        raise RecipeError(f"pipeline 1 had {len(before['tasks'])} tasks, pipeline 2 has {total}")
    if counts != {"cached": total} or summary.get("computed") or summary.get("upstream"):
        raise RecipeError(
            f"with the restored cache nothing should be computed; "
            f"manifest statuses {counts}, summary {summary}"
        )
    junit = junit_statuses(pipeline.artifact("junit.xml"))
    if junit != {"cached": total}:
        raise RecipeError(f"pipeline 2's JUnit XML should say {total} cached: {junit}")
    if value_digests(manifest) != value_digests(before):
        raise RecipeError("the records of pipeline 2 name other values than those of pipeline 1")
    say(
        f"  nothing computed: manifest {total} cached, summary {summary['cached']} cached, "
        f"JUnit {junit['cached']} cached; same values as pipeline 1"
    )

    cache_before = snapshot(pipeline.cache)
    output = run_step("verify", pipeline.workflow.verify, pipeline.project, pipeline.env)
    verified = read_verification(output)
    changed = sorted(set(snapshot(pipeline.cache).items()) ^ set(cache_before.items()))
    if changed:
        raise RecipeError(f"verify changed the cache: {[path for path, _ in changed][:10]}")
    say(f"  verified {verified} of {verified} selected tasks; the cache is unchanged")


def read_verification(output: str) -> int:
    """How many tasks the verify step verified; every selected one must be, and nothing else."""
    summary = read_summary(output)
    final = re.search(r"^=+ (.*) in [\d.]+s", output, re.MULTILINE)
    counted = re.findall(r"(\d+) (\w+)", final[1] if final else "")
    outcomes = {word: int(number) for number, word in counted}
    verified = summary.get("verified", 0)
    others = {word: n for word, n in summary.items() if word != "verified" and n}
    if verified == 0 or others:
        raise RecipeError(f"verify should only verify, but counted {summary}:\n{output}")
    if set(outcomes) - {"verified", "deselected"} or outcomes.get("verified") != verified:
        raise RecipeError(f"pytest's outcomes {outcomes} disagree with {summary}:\n{output}")
    return verified


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args(argv)
    started = time.perf_counter()
    here = Path(__file__).resolve().parent
    workspace = Path(tempfile.mkdtemp(prefix="taskproc-ci-"))
    try:
        source = Path(git("rev-parse", "--show-toplevel", cwd=here))
        commit = git("rev-parse", "HEAD", cwd=source)
        say(f"repository {source} at {commit[:12]}; workspace {workspace}")
        if git("status", "--porcelain", "--untracked-files=no", cwd=source):
            say("note: uncommitted changes are not part of this run; it tests the commit, as CI")
        shims = make_shims(workspace / "bin")
        tarball = workspace / "task-cache.tar.gz"

        say("pipeline 1: fresh clone, empty cache")
        one = start_pipeline(source, commit, workspace / "run-1" / "repo", shims)
        manifest = first_pipeline(one, tarball)

        say("pipeline 2: fresh clone at another path, cache restored from the tarball")
        two = start_pipeline(source, commit, workspace / "run-2" / "elsewhere" / "checkout", shims)
        second_pipeline(two, tarball, manifest)
    except (RecipeError, subprocess.TimeoutExpired) as error:
        print(f"ci recipe FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        if options.keep:
            say(f"kept {workspace}")
        else:
            shutil.rmtree(workspace)
    say(f"ci recipe OK in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
