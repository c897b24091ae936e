"""End-to-end: ``--taskproc-manifest`` and ``--taskproc-verify``.

- The manifest is one JSON document written by the reporting process: one
  entry per collected task item (node id, status in this run, record), in
  item order with sorted keys; the same with xdist workers and a pool.
- Verifying recomputes the selected cached tasks aside: a deterministic graph
  is ``verified``, a random value is ``not reproducible``, a set of strings
  survives another hash seed; the cache is left byte for byte (and time for
  time) as it was; stale tasks are computed and said not to be verified.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from taskproject import Project, assert_counts_agree

DAG = """
class Seed(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("Seed", self.i, os.getpid())
        return self.i * 10


class Total(TaskBase):
    seeds: RequiresList[int]

    def build_task(self) -> None:
        self.seeds = [Seed(i) for i in range(3)]

    def run_task(self) -> int:
        log("Total", os.getpid())
        return sum(self.seeds)


class Summary(TaskBase):
    total: Requires[int]

    def build_task(self) -> None:
        self.total = Total()

    def run_task(self) -> dict[str, int]:
        log("Summary", os.getpid())
        return {"total": self.total}
"""
#: the DAG's tasks by class, each run once (as ``project.runs()`` logs them, sorted)
DAG_RUNS = ["Seed", "Seed", "Seed", "Summary", "Total"]
DAG_ITEMS = [
    "task_dag.py::Seed[0]",
    "task_dag.py::Seed[1]",
    "task_dag.py::Seed[2]",
    "task_dag.py::Summary",
    "task_dag.py::Total",
]

NOISE = """
import random


class Noise(TaskBase):
    def run_task(self) -> float:
        log("Noise")
        return random.random()
"""

WORDS = """
class Words(TaskBase):
    def run_task(self) -> set[str]:
        log("Words")
        return {f"word{i}" for i in range(64)}
"""

MIXED = """
class Bad(TaskBase):
    def run_task(self) -> int:
        raise RuntimeError("boom")


class AfterBad(TaskBase):
    bad: Requires[int]

    def build_task(self) -> None:
        self.bad = Bad()

    def run_task(self) -> int:
        return self.bad


class Quiet(TaskBase):
    def run_task(self) -> int:
        return 2
"""


#: The pytest process (not an xdist worker) notes its pid, to tell where tasks ran.
CONFTEST = """
import os


def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        with open("pytest.pid", "w") as handle:
            handle.write(str(os.getpid()))
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    project = Project(pytester)
    project.task_file("task_dag.py", DAG)
    (pytester.path / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    return project


def manifest(path: Path) -> dict[str, Any]:
    """The manifest, checked to be written with sorted keys (so two of them diff cleanly)."""
    text = path.read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    assert text == json.dumps(document, sort_keys=True, indent=1) + "\n"
    items = [entry["item"] for entry in document["tasks"]]
    assert items == sorted(items)
    return document


def by_item(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["item"]: entry for entry in document["tasks"]}


def summary_line(result: pytest.RunResult) -> str:
    (line,) = [line for line in result.outlines if line.startswith("taskproc: ")]
    return line


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under ``root``: size, modification time and content digest."""
    found = {}
    for path in [root, *root.rglob("*")]:
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns, digest)
    return found


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_manifest_and_records_name_the_git_commit_and_imported_versions(project: Project) -> None:
    """The environment is shown once at the top; each record keeps its own."""
    project.task_file(
        "task_yaml.py",
        "import yaml\n\n\nclass Dumped(TaskBase):\n"
        "    def run_task(self) -> str:\n        return yaml.safe_dump([1])\n",
    )
    (project.path / ".gitignore").write_text("tpcache/\n*.json\n", encoding="utf-8")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tasks"]):
        subprocess.run([*git, *command], cwd=project.path, check=True, capture_output=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project.path, check=True, capture_output=True, text=True
    ).stdout.strip()
    project.run("--taskproc-manifest=m.json", "-n", "2").assert_outcomes(passed=6)
    document = manifest(project.path / "m.json")
    assert list(document) == ["cache", "environment", "tasks"]
    environment = document["environment"]
    assert environment["git"] == {"commit": head, "dirty": False}
    assert environment["packages"]["PyYAML"] == metadata.version("PyYAML")
    records = {e["item"]: e["record"] for e in document["tasks"]}
    assert records["task_yaml.py::Dumped"]["made"]["packages"]["PyYAML"] == (
        metadata.version("PyYAML")
    )
    assert "PyYAML" not in records["task_dag.py::Total"]["made"]["packages"]
    assert {r["made"]["git"]["commit"] for r in records.values()} == {head}


# -- the manifest ------------------------------------------------------------------------
def test_manifest_lists_every_item_with_its_status_and_record(project: Project) -> None:
    project.run("--taskproc-manifest=out/manifest.json").assert_outcomes(passed=5)
    cold = manifest(project.path / "out" / "manifest.json")
    assert cold["cache"] == str(project.cache.resolve())
    assert [e["item"] for e in cold["tasks"]] == DAG_ITEMS
    assert {e["status"] for e in cold["tasks"]} == {"computed"}
    entries = by_item(cold)
    total = entries["task_dag.py::Total"]
    assert (total["task"], total["args"], total["record"]["args"]) == ("task_dag.Total", {}, {})
    assert isinstance(total["id"], int)
    record = total["record"]
    assert record["code"]["digest"] and record["value"]["size"] > 0
    assert record["made"]["seconds"] >= 0 and record["made"]["at"]
    # Which upstream values made it: exactly the digests of the seeds' own values.
    seeds = [entries[f"task_dag.py::Seed[{i}]"]["record"] for i in range(3)]
    assert [(u["args"], u["digest"]) for u in record["upstream"]] == [
        (s["args"], s["value"]["digest"]) for s in seeds
    ]
    assert entries["task_dag.py::Seed[1]"]["args"] == {"i": 1}

    assert project.run("--taskproc-manifest=out/manifest.json").parseoutcomes() == {"cached": 5}
    warm = manifest(project.path / "out" / "manifest.json")
    assert {e["status"] for e in warm["tasks"]} == {"cached"}
    # Why each was computed, in the words of -v; a cached task has no reason.
    assert {e.get("reason") for e in cold["tasks"]} == {"no result yet"}
    assert {e.get("reason") for e in warm["tasks"]} == {None}
    # Only the statuses (and reasons) differ between the two runs' manifests.
    for entry in [*cold["tasks"], *warm["tasks"]]:
        del entry["status"]
        entry.pop("reason", None)
    assert warm == cold


def test_manifest_statuses_of_failed_skipped_upstream_and_deselected_items(
    project: Project,
) -> None:
    project.task_file("task_mixed.py", MIXED)
    result = project.run("--taskproc-manifest=m.json", "-k", "Summary or Bad")
    result.assert_outcomes(passed=1, failed=1, skipped=1, deselected=5)
    statuses = {e["item"]: e["status"] for e in manifest(project.path / "m.json")["tasks"]}
    assert statuses == {
        **dict.fromkeys(DAG_ITEMS, "upstream"),  # computed only for Summary
        "task_dag.py::Summary": "computed",
        "task_mixed.py::Bad": "failed",
        "task_mixed.py::AfterBad": "skipped",
        "task_mixed.py::Quiet": "deselected",
    }
    entries = by_item(manifest(project.path / "m.json"))
    assert entries["task_mixed.py::Bad"]["record"] is None  # nothing of it is cached
    assert entries["task_mixed.py::Quiet"]["record"] is None


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [["-n", "2"], ["--taskproc-executor=process:2"]])
def test_manifest_of_a_parallel_run_has_every_entry(project: Project, parallel: list[str]) -> None:
    pytest.importorskip("xdist")
    project.task_file("task_noise.py", NOISE)
    result = project.run("--taskproc-manifest=m.json", "-k", "not Noise", *parallel)
    assert result.parseoutcomes()["passed"] == 5
    parallel_run = manifest(project.path / "m.json")
    assert parallel_run["cache"] == str(project.cache.resolve())
    statuses = {e["item"]: e["status"] for e in parallel_run["tasks"]}
    assert statuses == {
        **dict.fromkeys(DAG_ITEMS, "computed"),
        "task_noise.py::Noise": "deselected",
    }
    assert all(e["record"] for e in parallel_run["tasks"] if e["status"] == "computed")
    # The same as a serial run that finds the results cached.
    serial_run = project.run("--taskproc-manifest=serial.json", "-k", "not Noise")
    assert serial_run.parseoutcomes() == {"cached": 5, "deselected": 1}
    serial = manifest(project.path / "serial.json")
    assert [(e["item"], e["record"]) for e in serial["tasks"]] == [
        (e["item"], e["record"]) for e in parallel_run["tasks"]
    ]


def test_manifest_option_is_relative_to_the_invocation_dir_and_ini_to_the_rootdir(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.path / "pytest.ini").write_text("[pytest]\ntaskproc_manifest = reports/m.json\n")
    sub = project.path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    project.run(str(project.path)).assert_outcomes(passed=5)
    assert [e["item"] for e in manifest(project.path / "reports" / "m.json")["tasks"]] == DAG_ITEMS
    project.run(str(project.path), "--taskproc-manifest=here.json")
    assert [e["status"] for e in manifest(sub / "here.json")["tasks"]] == ["cached"] * 5


# -- verification ---------------------------------------------------------------------------
def test_a_deterministic_graph_is_verified_and_stays_cached(project: Project) -> None:
    project.run().assert_outcomes(passed=5)
    assert len(project.runs()) == 5
    result = project.run("--taskproc-verify", "-rA", "--taskproc-manifest=m.json")
    assert result.ret == 0, result.stdout.str()
    assert_counts_agree(result)
    assert result.parseoutcomes() == {"verified": 5}
    assert summary_line(result).startswith(
        "taskproc: 5 verified, 0 computed (not verified), 0 cached, "
        "0 failed (0 not reproducible), 0 skipped;"
    )
    result.stdout.fnmatch_lines(["VERIFIED task_dag.py::Total"])
    # Each task was recomputed once, to verify it.
    assert sorted(line.split()[0] for line in project.runs()) == DAG_RUNS
    assert {e["status"] for e in manifest(project.path / "m.json")["tasks"]} == {"verified"}
    assert project.run().parseoutcomes() == {"cached": 5}
    assert project.runs() == []


def test_a_random_value_is_not_reproducible(project: Project) -> None:
    project.task_file("task_noise.py", NOISE)
    project.run().assert_outcomes(passed=6)
    result = project.run("--taskproc-verify", "--taskproc-manifest=m.json")
    assert result.ret == 1
    assert result.parseoutcomes() == {"verified": 5, "failed": 1}
    assert_counts_agree(result)
    assert "1 failed (1 not reproducible)" in summary_line(result)
    result.stdout.fnmatch_lines(
        [
            "not reproducible: value: cached 0.*, recomputed 0.*",
            "task Noise() is not reproducible",
            "FAILED task_noise.py::Noise - not reproducible: value: cached 0.*",
        ]
    )
    assert by_item(manifest(project.path / "m.json"))["task_noise.py::Noise"]["status"] == (
        "not reproducible"
    )
    # The cached value stays: a plain run finds every task cached.
    project.runs()
    assert project.run().parseoutcomes() == {"cached": 6}
    assert project.runs() == []


def test_a_set_of_strings_is_verified_under_another_hash_seed(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.task_file("task_words.py", WORDS)
    monkeypatch.setenv("PYTHONHASHSEED", "1")
    project.run("-k", "Words").assert_outcomes(passed=1, deselected=5)
    monkeypatch.setenv("PYTHONHASHSEED", "2")
    result = project.run("-k", "Words", "--taskproc-verify", "--junitxml=out.xml")
    assert result.parseoutcomes() == {"verified": 1, "deselected": 5}
    # The set is pickled in another order, so it was compared by value.
    junit = (project.path / "out.xml").read_text()
    assert "taskproc: verified; why: recomputed to an equal value, pickled differently" in junit


def test_verifying_leaves_every_cache_file_as_it_was(project: Project) -> None:
    project.task_file("task_noise.py", NOISE)
    project.run().assert_outcomes(passed=6)
    before = snapshot(project.cache)
    result = project.run("--taskproc-verify")
    assert result.parseoutcomes() == {"verified": 5, "failed": 1}
    assert snapshot(project.cache) == before


def test_verify_a_slice_selected_with_k(project: Project) -> None:
    project.run().assert_outcomes(passed=5)
    project.runs()
    result = project.run("--taskproc-verify", "-k", "Total")
    assert result.parseoutcomes() == {"verified": 1, "deselected": 4}
    assert [line.split()[0] for line in project.runs()] == ["Total"]


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [["-n", "2"], ["--taskproc-executor=process:2"]])
def test_verify_in_parallel(project: Project, parallel: list[str]) -> None:
    pytest.importorskip("xdist")
    project.task_file("task_noise.py", NOISE)
    project.run().assert_outcomes(passed=6)
    project.runs()
    before = snapshot(project.cache)
    result = project.run("--taskproc-verify", *parallel)
    assert result.parseoutcomes() == {"verified": 5, "failed": 1}, result.stdout.str()
    assert "1 failed (1 not reproducible)" in summary_line(result)
    lines = [line.split() for line in project.runs()]
    assert sorted(line[0] for line in lines) == [
        "Noise",
        "Seed",
        "Seed",
        "Seed",
        "Summary",
        "Total",
    ]
    # Recomputed on the workers or the pool, not in the pytest process.
    pytest_pid = (project.path / "pytest.pid").read_text()
    assert pytest_pid not in {line[-1] for line in lines if line[0] != "Noise"}
    assert snapshot(project.cache) == before


def test_stale_tasks_are_computed_and_not_verified(project: Project) -> None:
    project.run().assert_outcomes(passed=5)
    project.runs()
    # Summary's code changes: it is stale; everything upstream of it stays cached.
    project.task_file("task_dag.py", DAG.replace('{"total": self.total}', '{"sum": self.total}'))
    result = project.run("--taskproc-verify")
    assert result.parseoutcomes() == {"verified": 4, "passed": 1}
    assert_counts_agree(result)
    assert summary_line(result).startswith(
        "taskproc: 4 verified, 1 computed (not verified), 0 cached, "
        "0 failed (0 not reproducible), 0 skipped;"
    )
    assert sorted(line.split()[0] for line in project.runs()) == DAG_RUNS
    # The stale one was cached as in any run.
    assert project.run().parseoutcomes() == {"cached": 5}
