"""The cache tool: ``python -m pytest_taskproc.cache`` / ``taskproc-cache`` ls, show, du."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules

from pytest_taskproc.cachetool import main

TASKS = """
class Train(TaskBase):
    def build_task(self, seed: int, model: str = "mlp") -> None:
        self.seed = seed
        self.model = model

    def run_task(self) -> list[int]:
        print("training", self.seed)
        (self.task_directory / "weights.bin").write_bytes(bytes(5000))
        return [self.seed] * 10


class Score(TaskBase):
    train: Requires[list[int]]

    def build_task(self, seed: int) -> None:
        self.train = Train(seed)

    def run_task(self) -> int:
        return sum(self.train)
"""


@pytest.fixture
def tasks(modules: TaskModules, cache_root: Path) -> ModuleType:
    mod = modules.load("toolexp", TASKS)
    for seed in (2, 1):
        mod.Score(seed).run_graph(executor=None, max_workers=1)
    return mod


def run_tool(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_lists_results_sorted_with_arguments_size_time_and_state(
    tasks: ModuleType, cache_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_tool(capsys, "--cache-dir", str(cache_root), "ls")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["CLASS", "ID", "ARGUMENTS", "SIZE", "COMPUTED", "(UTC)", "TOOK",
                                "RECORD"]  # fmt: skip
    rows = [line.split() for line in lines[1:-1]]
    # Sorted by class, then arguments: seed 1 first although it got id 1.
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("toolexp.Score", "1", "seed=1"),
        ("toolexp.Score", "0", "seed=2"),
        ("toolexp.Train", "1", 'model="mlp",'),
        ("toolexp.Train", "0", 'model="mlp",'),
    ]
    assert all(r[-1] == "whole" for r in rows)
    assert "KiB" in lines[3]  # the data folder counts: 5000 bytes of weights
    assert lines[-1] == f"4 results (4 whole), {lines[-1].split(', ')[1]}"
    assert str(cache_root) in lines[-1]


def test_ls_json_for_scripts_and_one_class_by_its_short_name(
    tasks: ModuleType, cache_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_tool(capsys, "--cache-dir", str(cache_root), "ls", "Train", "--json")
    assert code == 0
    document = json.loads(out)
    assert document["cache"] == str(cache_root)
    results = document["results"]
    assert [r["args"] for r in results] == [
        {"model": "mlp", "seed": 1},
        {"model": "mlp", "seed": 2},
    ]
    first = results[0]
    assert first["class"] == "toolexp.Train" and first["record"] == "whole"
    assert first["size"] > 5000
    assert first["seconds"] >= 0 and first["computed_at"].endswith("Z")
    assert first["folder"] == str(tasks.Train(1).task_directory.parent)


def test_ls_says_which_results_are_not_whole(
    tasks: ModuleType, cache_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tasks.Train(1).task_directory.parent
    (folder / "result.pkl").write_bytes(b"truncated")
    (tasks.Train(2).task_directory.parent / "record.json").unlink()
    _, out, _ = run_tool(capsys, "--cache-dir", str(cache_root), "ls", "--json")
    states = {(r["class"], r["args"]["seed"]): r["record"] for r in json.loads(out)["results"]}
    assert states == {
        ("toolexp.Score", 1): "whole",
        ("toolexp.Score", 2): "whole",
        ("toolexp.Train", 1): "value damaged (size)",
        ("toolexp.Train", 2): "no record",
    }


def test_show_by_id_or_arguments_prints_the_record_and_the_paths(
    tasks: ModuleType, cache_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = tasks.Train(1)
    by_args = run_tool(capsys, "--cache-dir", str(cache_root), "show", "Train",
                       '{"seed": 1, "model": "mlp"}')  # fmt: skip
    by_id = run_tool(capsys, "--cache-dir", str(cache_root), "show", "toolexp.Train",
                     str(task.task_id))  # fmt: skip
    assert by_args == by_id
    code, out, _ = by_id
    assert code == 0
    head, _, record = out.partition("\n\n")
    fields = dict(line.split(":", 1) for line in head.splitlines())
    assert fields["record"].strip() == "whole"
    assert fields["stdout"].strip() == str(task.task_stdout)
    assert fields["data"].strip() == str(task.task_directory)
    assert fields["value"].strip().startswith(str(task.task_directory.parent / "result.pkl"))
    assert fields["stderr"].strip() == "none"
    assert json.loads(record) == task.task_record


def test_du_sums_sizes_per_class(
    tasks: ModuleType, cache_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run_tool(capsys, "--cache-dir", str(cache_root), "du", "--json")
    classes = {c["class"]: c for c in json.loads(out)["classes"]}
    assert classes["toolexp.Train"]["results"] == 2
    assert classes["toolexp.Train"]["size"] > 10_000 > classes["toolexp.Score"]["size"]
    _, text, _ = run_tool(capsys, "--cache-dir", str(cache_root), "du")
    assert text.splitlines()[1].split()[:3] == ["toolexp.Train", "2", "2"]  # biggest first
    assert text.splitlines()[-2].split()[:3] == ["total", "4", "4"]


def test_unknown_class_or_result_is_one_line_naming_what_is_there(
    tasks: ModuleType, cache_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_tool(capsys, "--cache-dir", str(cache_root), "ls", "Nope")
    assert code == 2
    assert err.strip() == (
        f"taskproc-cache: no class 'Nope' in the cache {cache_root} "
        "(classes there: toolexp.Score, toolexp.Train)"
    )
    code, _, err = run_tool(capsys, "--cache-dir", str(cache_root), "show", "Train", "7")
    assert code == 2 and "no result of toolexp.Train for 7" in err


def test_module_and_console_script_use_the_plugins_default_cache(
    tasks: ModuleType, cache_root: Path, tmp_path: Path
) -> None:
    # A project that pins its cache in pytest.ini, the tool run from a subdirectory.
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\ntaskproc_cache_dir = results-cache\n")
    shutil.copytree(cache_root, project / "results-cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CP_"))}
    script = Path(sys.executable).with_name("taskproc-cache")
    commands = [[sys.executable, "-m", "pytest_taskproc.cache"]]
    if script.exists():
        commands.append([str(script)])
    for command in commands:
        done = subprocess.run(
            [*command, "du"], cwd=project / "sub", env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # no RuntimeWarning about running a module twice
        assert done.stdout.splitlines()[-1] == f"cache: {project / 'results-cache'}"
    # Without an ini file: CP_CACHE_DIR, as the plugin.
    env["CP_CACHE_DIR"] = str(cache_root)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_taskproc.cache", "ls", "Score"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 results (2 whole)" in done.stdout
