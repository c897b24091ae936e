"""The environment in records: distributions a task's code imports, and the project's git state."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest
from conftest import TaskModules

from pytest_taskproc.provenance import build_manifest

HELPER = """
from yaml import safe_dump


def dump(value: object) -> str:
    return safe_dump(value)
"""

TASKS = """
import envhelper_{n}


class Dumped(TaskBase):
    def run_task(self) -> str:
        import networkx  # imported inside run_task: counts too

        log("run Dumped")
        return envhelper_{n}.dump([networkx.__name__])
"""


def git(directory: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def load(modules: TaskModules, n: int) -> object:
    modules.write(f"envhelper_{n}", HELPER)
    return modules.load(f"envtasks_{n}", TASKS.format(n=n))


def compute(module: object) -> dict[str, object]:
    task = module.Dumped()  # type: ignore[attr-defined]
    with ThreadPoolExecutor(1) as executor:
        task.run_graph(executor=executor)
    made: dict[str, object] = task.task_record["made"]
    return made


def test_a_record_names_the_distributions_the_task_code_imports(modules: TaskModules) -> None:
    made = compute(load(modules, 1))
    packages = made["packages"]
    assert isinstance(packages, dict)
    # Through a user module it calls (yaml), inside run_task (networkx), and always.
    assert packages["PyYAML"] == metadata.version("PyYAML")
    assert packages["networkx"] == metadata.version("networkx")
    assert packages["pytest-taskproc"] and packages["cloudpickle"]
    # Loaded in this process, but not by the task's code.
    assert "pluggy" not in packages and "pytest" not in packages and "diskcache" not in packages
    assert list(packages) == sorted(packages, key=str.lower)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_record_names_the_commit_and_whether_tracked_files_differ(
    modules: TaskModules,
) -> None:
    repository = modules.directory
    git(repository, "init", "-q")
    module = load(modules, 2)
    git(repository, "add", "envhelper_2.py", "envtasks_2.py")
    git(repository, "commit", "-q", "-m", "tasks")
    head = git(repository, "rev-parse", "HEAD")
    (repository / "data.csv").write_text("untracked data does not make the tree dirty\n")
    assert compute(module)["git"] == {"commit": head, "dirty": False}

    # A tracked file edited (even a comment), then a new run: dirty.
    helper = repository / "envhelper_2.py"
    helper.write_text(helper.read_text() + "# edited\n")
    module.Dumped().clear_task()  # type: ignore[attr-defined]
    assert compute(module)["git"] == {"commit": head, "dirty": True}

    manifest = build_manifest([module.Dumped()])  # type: ignore[attr-defined]
    assert list(manifest) == ["cache", "environment", "tasks"]
    environment = manifest["environment"]
    assert environment["git"] == {"commit": head, "dirty": True}
    assert environment["python"] == ".".join(map(str, sys.version_info[:3]))
    assert environment["packages"]["PyYAML"] == metadata.version("PyYAML")
    json.dumps(manifest)


def test_outside_a_repository_git_is_none(modules: TaskModules, tmp_path: Path) -> None:
    if any((parent / ".git").exists() for parent in (tmp_path, *tmp_path.parents)):
        pytest.skip("the temporary folder is inside a git repository")
    assert compute(load(modules, 3))["git"] is None


def once(table: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """A table with each distribution once per name: the ``importlib_metadata`` backport,
    once imported (by Dask, say), makes the standard library find every one twice."""
    return {top: list(dict.fromkeys(names)) for top, names in table.items()}


def test_the_table_of_installed_distributions_is_the_standard_librarys() -> None:
    # Worked out with a cheaper name lookup than importlib.metadata's: the same answer.
    from pytest_taskproc import installed

    assert once(installed._scan_distributions()[0]) == once(metadata.packages_distributions())


def test_a_distribution_name_is_read_from_the_headers_only() -> None:
    from pytest_taskproc.installed import _headers

    text = "Metadata-Version: 2.1\nSummary: a\n  Name: folded\nName: real-name\n\nName: body\n"
    assert _headers(text).get("name") == "real-name"
    assert _headers("Metadata-Version: 2.1\n\nName: body\n").get("name") is None
    assert _headers(None).get("name") is None


def _distribution(site: Path, folder: str, files: dict[str, str]) -> None:
    (site / folder).mkdir(parents=True)
    for name, text in files.items():
        (site / folder / name).write_text(text)


RECORD = "\n".join(
    [
        "beta/__init__.py,sha256=x,1",
        "beta/sub/deep.py,,",
        "beta_single.py,,",
        "beta.pth,,",
        "../../bin/beta-tool,,",
        '"comma,name.py",,',
        "_native.cpython-311-x86_64-linux-gnu.so,,",
        "./dotted/inside.py,,",
        "trailing/,,",
        "/absolute/path.py,,",
        "Beta_Pkg-2.0.dist-info/METADATA,,",
        "ghost/listed_but_missing.py,,",
    ]
)


def _fake_sites(tmp_path: Path, with_old_egg: bool) -> list[str]:
    first, second = tmp_path / "first", tmp_path / "second"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n\nName: not-a-header\n"
    _distribution(
        first,
        "alpha-1.0.dist-info",
        {"METADATA": meta.format("alpha", "1.0"), "top_level.txt": "alpha\nalpha_extra\n"},
    )
    _distribution(
        first,
        "Beta_Pkg-2.0.dist-info",
        {"METADATA": meta.format("Beta_Pkg", "2.0"), "RECORD": RECORD},
    )
    for present in ("beta/__init__.py", "beta_single.py", "dotted/inside.py", "trailing"):
        (first / present).parent.mkdir(parents=True, exist_ok=True)
        (first / present).write_text("")
    _distribution(
        first,
        "gamma-3.0.egg-info",
        {"PKG-INFO": meta.format("gamma", "3.0"), "top_level.txt": "gamma\n"},
    )
    _distribution(
        second,
        "alpha-9.0.dist-info",
        {"METADATA": meta.format("alpha", "9.0"), "top_level.txt": "alpha\n"},
    )
    if with_old_egg:
        (second / "delta-0.1.egg-info").write_text(meta.format("delta", "0.1"))
    return [str(first), str(second), str(tmp_path / "missing")]


@pytest.mark.parametrize("with_old_egg", [False, True], ids=["quick-walk", "single-file-egg-info"])
def test_the_quick_walk_answers_as_importlib_metadata_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_old_egg: bool
) -> None:
    # Top-level names by this Python's rules (nested files, single modules, .pth and
    # native files, paths outside the folder, quoted names), versions from the first
    # folder on sys.path, and a layout the quick walk leaves to the standard library.
    from pytest_taskproc import installed

    monkeypatch.setattr(sys, "path", _fake_sites(tmp_path, with_old_egg))
    # this Python's own rules, even where the importlib_metadata backport (imported by
    # Dask) took the standard library's place on sys.meta_path
    monkeypatch.setattr(sys, "meta_path", [metadata.MetadataPathFinder])
    if not with_old_egg and sys.version_info >= (3, 11):

        def not_used() -> object:
            raise AssertionError("the quick walk gave up")

        monkeypatch.setattr(installed, "_scan_with_importlib", not_used)
    tops, versions = installed._scan_distributions()
    assert once(tops) == once(metadata.packages_distributions())
    assert tops["alpha"] == ["alpha", "alpha"]  # one from each folder
    if sys.version_info >= (3, 11):  # 3.10 reads top_level.txt only
        assert "beta" in tops and "beta_single" in tops
    names = {d.metadata["Name"] for d in metadata.distributions()}
    assert versions == {installed._normalized(n): metadata.version(n) for n in names}
    assert versions["alpha"] == "1.0"  # the first on sys.path, as metadata.version says


def test_the_quick_walk_is_kept_beside_the_importlib_metadata_backport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dask imports the backport, which adds its own copy of the sys.path walk to
    # sys.meta_path; any other finder that provides distributions is left to the
    # standard library, which asks it.
    from pytest_taskproc import installed

    if sys.version_info < (3, 11):
        pytest.skip("Python 3.10 always asks importlib.metadata")
    backport = pytest.importorskip("importlib_metadata")
    monkeypatch.setattr(sys, "path", _fake_sites(tmp_path, False))
    finders = [metadata.MetadataPathFinder, backport.MetadataPathFinder]
    monkeypatch.setattr(sys, "meta_path", finders)
    monkeypatch.setattr(installed, "_scan_with_importlib", lambda: ({}, {}))
    assert installed._scan_distributions()[1]["alpha"] == "1.0"

    class Elsewhere:
        @staticmethod
        def find_distributions(context: object = None) -> list[object]:
            return []

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Elsewhere])
    assert installed._scan_distributions() == ({}, {})
