"""The CI recipe: the example's GitHub Actions workflow, replayed by a script, end to end.

The end-to-end tests run the script (two fresh clones of this repository's
HEAD, a cache restored from a tarball with misleading file dates); the others
keep the workflow, the script and docs/provenance.md saying the same thing.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "example_project" / "ci_recipe.py"
WORKFLOW = ROOT / ".github" / "workflows" / "experiment.yml"
#: docs/provenance.md shows the workflow in the ```yaml block right after this line
DOC = ROOT / "docs" / "provenance.md"
DOC_MARKER = "<!-- checked by tests/test_ci_recipe.py: .github/workflows/experiment.yml -->"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="the recipe clones with git")


@pytest.fixture
def recipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The script as a module, registered only for this test (dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location("ci_recipe", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ci_recipe", module)
    spec.loader.exec_module(module)
    yield module


def run_recipe(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=240,
    )


@needs_git
@pytest.mark.slow
def test_restored_cache_computes_nothing_and_the_slice_verifies() -> None:
    done = run_recipe(SCRIPT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    first = re.search(r"manifest: (\d+) tasks, all computed; summary: (\d+) computed", output)
    assert first, output
    total = int(first[1])
    assert total > 0
    assert int(first[2]) == total
    assert (
        f"nothing computed: manifest {total} cached, summary {total} cached, "
        f"JUnit {total} cached; same values as pipeline 1"
    ) in output
    verified = re.search(r"verified (\d+) of (\d+) selected tasks; the cache is unchanged", output)
    assert verified, output
    assert 0 < int(verified[1]) == int(verified[2]) < total  # a slice, all of it verified
    assert "newest written = oldest date" in output
    assert output.rstrip().splitlines()[-1].startswith("[ci] ci recipe OK")


@needs_git
@pytest.mark.slow
def test_a_workflow_that_clears_the_cache_fails_the_recipe(tmp_path: Path) -> None:
    """The checks can fail: a run with ``--taskproc-clear`` recomputes the restored cache."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    workflow = repo / ".github" / "workflows" / "experiment.yml"
    text = workflow.read_text(encoding="utf-8")
    clearing = text.replace(
        "run: python -m pytest --taskproc -n 2", "run: python -m pytest --taskproc-clear -n 2"
    )
    assert clearing != text
    workflow.write_text(clearing, encoding="utf-8")
    identity = ["-c", "user.name=recipe test", "-c", "user.email=recipe@example.invalid"]
    subprocess.run(
        ["git", *identity, "commit", "--quiet", "-am", "clear the cache in every run"],
        cwd=repo,
        check=True,
    )

    done = run_recipe(repo / "example_project" / "ci_recipe.py")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "pipeline 1: fresh clone" in done.stdout
    assert "ci recipe FAILED: with the restored cache nothing should be computed" in done.stderr


def test_the_script_runs_the_commands_of_the_workflow(recipe: ModuleType) -> None:
    workflow = recipe.read_workflow(WORKFLOW)
    assert workflow.working_directory == "example_project"
    assert workflow.cache_path == "example_project/.cache"
    assert workflow.experiment.startswith("python -m pytest --taskproc ")
    assert workflow.verify.startswith("python -m pytest --taskproc --taskproc-verify -k ")
    # what the experiment writes is what the workflow uploads
    for option in ("--junitxml", "--taskproc-manifest"):
        written = re.search(rf"{option}=(\S+)", workflow.experiment)
        assert written, workflow.experiment
        assert f"{workflow.working_directory}/{written[1]}" in workflow.artifacts


def test_the_summary_line_is_read_by_its_words(recipe: ModuleType) -> None:
    line = (
        "taskproc: 36 verified, 2 computed (+3 upstream; not verified), 0 cached, "
        "1 failed (1 not reproducible), 0 skipped; 0.01 s computing, 0.1 s verifying; cache: /c"
    )
    assert recipe.read_summary(f"collected 55 items\n{line}\n") == {
        "verified": 36,
        "computed": 2,
        "upstream": 3,
        "cached": 0,
        "failed": 1,
        "not reproducible": 1,
        "skipped": 0,
    }
    with pytest.raises(recipe.RecipeError, match="expected one 'taskproc:' summary line"):
        recipe.read_summary("no summary here\n")


def test_the_yaml_subset_parser_rejects_what_it_does_not_know(recipe: ModuleType) -> None:
    parsed = recipe._YamlSubset(
        "jobs:\n  a:\n    steps:\n      - run: |\n          echo '#1'\n          ls\n"
        '      - name: "quoted: yes"  # a comment\n'
    ).parse()
    assert parsed == {
        "jobs": {"a": {"steps": [{"run": "echo '#1'\nls\n"}, {"name": "quoted: yes"}]}}
    }
    with pytest.raises(recipe.RecipeError, match="unsupported YAML"):
        recipe._YamlSubset("on: [push, pull_request]\n").parse()


def test_docs_show_the_workflow_file_verbatim() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert DOC_MARKER in doc
    after = doc.split(DOC_MARKER, 1)[1]
    block = re.match(r"\s*```yaml\n(.*?)```\n", after, re.DOTALL)
    assert block, "docs/provenance.md: no ```yaml block right after the workflow marker"
    assert block[1] == WORKFLOW.read_text(encoding="utf-8")
