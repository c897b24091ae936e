"""End-to-end: the ``taskproc`` command-line and ini options, their errors and the graph export."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from taskproject import HEADER, unused_plugins

TASKS = """
@infer_task_type
class Choose(TaskBase):
    prev1: Requires[int]
    prev2: Requires[int]

    def build_task(self, n: int, k: int) -> None:
        if 0 < k < n:
            self.prev1 = Choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)
        else:
            self.prev1 = Const(0)
            self.prev2 = Const(1)

    def run_task(self) -> int:
        log("Choose", self.task_args["n"], self.task_args["k"])
        return self.prev1 + self.prev2


class Root(TaskBase):
    top: Requires[int]

    def build_task(self) -> None:
        self.top = Choose(3, 1)

    def run_task(self) -> int:
        log("Root")
        return self.top


class Bad(TaskBase):
    def run_task(self) -> int:
        raise RuntimeError("boom")


class AfterBad(TaskBase):
    bad: Requires[int]

    def build_task(self) -> None:
        self.bad = Bad()

    def run_task(self) -> int:
        return self.bad
"""
#: Choose(3, 1) needs Choose(2, 0), (2, 1), (1, 0), (1, 1).
N_TASKS = 5 + 3


def write_tasks(pytester: pytest.Pytester, name: str = "task_graph.py", body: str = TASKS) -> Path:
    path = pytester.path / name
    log = pytester.path / "run.log"
    path.write_text(HEADER.format(log=str(log)) + textwrap.dedent(body), encoding="utf-8")
    return path


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *unused_plugins(args, pytester.path), *args, timeout=120
    )


def runs(pytester: pytest.Pytester) -> list[str]:
    log = pytester.path / "run.log"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def error_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.errlines if line.strip()]


# -- usage errors -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("notjson", "ERROR: --taskproc-rate-limits: not valid JSON *'notjson'"),
        ('{"<gpu>": 0}', "ERROR: --taskproc-rate-limits: expected a JSON object *"),
        ("[1, 2]", "ERROR: --taskproc-rate-limits: expected a JSON object *"),
    ],
)
def test_bad_rate_limits_are_a_one_line_usage_error(
    pytester: pytest.Pytester, value: str, message: str
) -> None:
    write_tasks(pytester)
    result = run(pytester, "--taskproc", f"--taskproc-rate-limits={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert len(error_lines(result)) == 1
    result.stderr.fnmatch_lines([message])
    assert runs(pytester) == []


def test_bad_rate_limits_in_the_ini_file_are_a_usage_error(pytester: pytest.Pytester) -> None:
    write_tasks(pytester)
    pytester.makeini("[pytest]\ntaskproc_rate_limits = {gpu: 1}\n")
    result = run(pytester, "--taskproc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ['ERROR: ini option taskproc_rate_limits: expected JSON such as {"<gpu>": 1}*']
    )


def test_graph_file_must_be_mermaid_or_graphviz(pytester: pytest.Pytester) -> None:
    write_tasks(pytester)
    result = run(pytester, "--taskproc", "--taskproc-graph=x.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert len(error_lines(result)) == 1
    result.stderr.fnmatch_lines(["ERROR: --taskproc-graph: 'x.txt' must end in *.md*.dot*"])
    assert not (pytester.path / "x.txt").exists()


def test_help_lists_the_taskproc_options(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "cached task graphs (pytest-taskproc):",
            "  --taskproc *",
            "  --taskproc-clear *",
            "  --taskproc-cache-dir=DIR",
            "  --taskproc-rate-limits=JSON",
            "  --taskproc-no-source-check",
            "  --taskproc-graph=FILE",
        ]
    )
    result.stdout.fnmatch_lines_random(
        ["  taskproc_files (args):*", "  taskproc_cache_dir (string):*"]
    )


# -- graph export -------------------------------------------------------------------
def test_mermaid_graph_groups_tasks_by_class_with_their_states(pytester: pytest.Pytester) -> None:
    write_tasks(pytester)
    cache = f"--taskproc-cache-dir={pytester.path / 'cache'}"
    run(pytester, "--taskproc", cache, "--taskproc-graph=out/g.md").assert_outcomes(
        passed=6, failed=1, skipped=1
    )
    text = (pytester.path / "out" / "g.md").read_text()
    assert text.startswith("```mermaid\nflowchart LR\n")
    assert text.rstrip().endswith("```")
    assert sum(line.strip().startswith("subgraph") for line in text.splitlines()) == 4
    for name in ("Choose", "Root", "Bad", "AfterBad"):
        assert f'["{name}"]' in text
    assert re.search(r'n\d+\["Choose\[3-1\]<br/>computed"\]:::computed', text)
    assert re.search(r'n\d+\["Bad<br/>failed"\]:::failed', text)
    assert re.search(r'n\d+\["AfterBad<br/>skipped"\]:::skipped', text)
    assert len(re.findall(r"^  n\d+ --> n\d+$", text, re.MULTILINE)) == 2 * 2 + 1 + 1

    run(pytester, "--taskproc", cache, "--taskproc-graph=out/g.md", "-k", "not Bad")
    text = (pytester.path / "out" / "g.md").read_text()
    assert re.search(r'n\d+\["Root<br/>cached"\]:::cached', text)


def test_graphviz_graph_of_a_dry_run_shows_planned_states(pytester: pytest.Pytester) -> None:
    write_tasks(pytester)
    cache = f"--taskproc-cache-dir={pytester.path / 'cache'}"
    run(pytester, "--taskproc", cache, "-k", "Choose and 2")
    run(pytester, "--taskproc", cache, "--collect-only", "--taskproc-graph=g.dot")
    text = (pytester.path / "g.dot").read_text()
    assert text.startswith("digraph taskproc {")
    assert text.rstrip().endswith("}")
    assert len(re.findall(r"subgraph cluster_\d+ \{ label=\"\w+\";", text)) == 4
    assert re.search(r'label="Choose\[2-1\]\\ncached"', text)
    assert re.search(r'label="Choose\[3-1\]\\nstale"', text)
    assert len(re.findall(r"^  n\d+ -> n\d+;$", text, re.MULTILINE)) == 6


# -- ini options and the cache root ---------------------------------------------------
def test_ini_taskproc_files_chooses_the_task_files(pytester: pytest.Pytester) -> None:
    write_tasks(pytester, "exp_graph.py")
    write_tasks(pytester, "task_other.py", "class Ignored(TaskBase):\n    pass\n")
    pytester.makeini("[pytest]\ntaskproc_files = exp_*.py\n")
    result = run(pytester, "--taskproc", "--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line and not line.startswith(" ")]
    assert len(ids) == N_TASKS
    assert all(i.startswith("exp_graph.py::") for i in ids)


def test_ini_cache_dir_is_relative_to_rootdir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tasks(pytester)
    pytester.makeini("[pytest]\ntaskproc_cache_dir = ini-cache\n")
    cache = pytester.path / "ini-cache"
    first = run(pytester, "--taskproc", "-k", "not Bad")
    first.stdout.fnmatch_lines([f"taskproc: 6 computed, *; cache: {cache}"])
    assert (cache / "taskproc").is_dir()

    # From a subdirectory, the same cache is found.
    sub = pytester.mkdir("sub")
    monkeypatch.chdir(sub)
    again = run(pytester, "--taskproc", "-k", "not Bad", str(pytester.path))
    again.stdout.fnmatch_lines([f"taskproc: 0 computed, 6 cached, *; cache: {cache}"])
    assert not (sub / "ini-cache").exists()
    # The command line wins over the ini file.
    elsewhere = pytester.path / "cli-cache"
    third = run(pytester, "--taskproc", f"--taskproc-cache-dir={elsewhere}", str(pytester.path))
    third.stdout.fnmatch_lines([f"taskproc: *; cache: {elsewhere}"])


def test_default_cache_is_in_rootdir_unless_cp_cache_dir_says_otherwise(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tasks(pytester)
    run(pytester, "--taskproc", "-k", "Root").stdout.fnmatch_lines(
        [f"taskproc: *; cache: {pytester.path / '.cache'}"]
    )
    env_cache = pytester.path / "env-cache"
    monkeypatch.setenv("CP_CACHE_DIR", str(env_cache))
    run(pytester, "--taskproc", "-k", "Root").stdout.fnmatch_lines(
        [f"taskproc: 1 computed (+5 upstream), 0 cached, *; cache: {env_cache}"]
    )


def test_the_entry_point_imports_nothing_of_the_library() -> None:
    """pytest imports the plugin on every run; without --taskproc that must cost nothing."""
    code = (
        "import sys, pytest_taskproc.plugin; "
        "print(sorted(m for m in sys.modules if m.startswith('pytest_taskproc')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "['pytest_taskproc', 'pytest_taskproc.plugin']"


#: the scheduler, the cache and planning: imported when a task item runs or a task is built
HEAVY = ("cache", "execute", "freshness", "inputs", "job", "scheduler", "idtable", "serialize")


def test_a_run_without_task_items_imports_neither_the_cache_nor_the_scheduler(
    pytester: pytest.Pytester,
) -> None:
    """``--taskproc`` with task files that build no task costs the start-up of a plain run."""
    pytester.makepyfile(task_empty="from pytest_taskproc import TaskBase\n")
    pytester.makepyfile(test_one="def test_one() -> None:\n    pass\n")
    pytester.makeconftest(
        f"""
        import sys

        def pytest_sessionfinish(session):
            loaded = [m for m in {HEAVY!r} if "pytest_taskproc." + m in sys.modules]
            print("heavy modules:", loaded)
        """
    )
    result = run(pytester, "--taskproc", "-s")
    result.assert_outcomes(passed=1)
    assert "heavy modules: []" in result.stdout.str()
    # Once a task item runs, they are there (the probe sees them).
    write_tasks(pytester)
    result = run(pytester, "--taskproc", "-s", "-k", "Root")
    assert f"heavy modules: {list(HEAVY)}" in result.stdout.str()


# -- rate limits in pyproject.toml, and limits that limit nothing ------------------------------

GPU_TASK = """
class OnGpu(TaskBase, channel="<gpu>"):
    def run_task(self) -> int:
        log("OnGpu")
        return 1
"""


def test_rate_limits_as_a_toml_table_in_pyproject(pytester: pytest.Pytester) -> None:
    write_tasks(pytester, "task_gpu.py", GPU_TASK)
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\ntaskproc_rate_limits = {"<gpu>" = 1}\n')
    result = run(pytester, "--taskproc", "-W", "error")
    result.assert_outcomes(passed=1)
    assert runs(pytester) == ["OnGpu"]


def test_rate_limits_in_pyproject_must_still_be_positive_ints(pytester: pytest.Pytester) -> None:
    write_tasks(pytester, "task_gpu.py", GPU_TASK)
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\ntaskproc_rate_limits = {"<gpu>" = 0}\n')
    result = run(pytester, "--taskproc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: ini option taskproc_rate_limits: expected a JSON object mapping channel*"]
    )


@pytest.mark.parametrize("where", ["option", "ini"])
def test_a_rate_limit_no_task_carries_is_a_warning_naming_it(
    pytester: pytest.Pytester, where: str
) -> None:
    """A misspelt channel would silently limit nothing."""
    write_tasks(pytester, "task_gpu.py", GPU_TASK)
    limits = '{"<gpo>": 1, "<gpu>": 1}'
    args = ["--taskproc"]
    if where == "ini":
        pytester.makeini(f"[pytest]\ntaskproc_rate_limits = {limits}\n")
    else:
        args.append(f"--taskproc-rate-limits={limits}")
    result = run(pytester, *args)
    result.assert_outcomes(passed=1, warnings=1)
    source = "tox.ini" if where == "ini" else "--taskproc-rate-limits"
    result.stdout.fnmatch_lines(
        [
            f"*{source}:0: PytestConfigWarning: taskproc rate limits name '<gpo>', which no "
            "collected task carries, so they limit nothing; channels of the collected tasks: "
            "'<gpu>'"
        ]
    )
    # Warnings as errors (a strict CI) make it a failing run.
    assert run(pytester, *args, "-W", "error::pytest.PytestConfigWarning").ret != 0


# -- collection errors ----------------------------------------------------------------------

BROKEN_ROOT = """
class Broken(TaskBase):
    def build_task(self) -> None:
        raise ValueError("cannot build")

    def run_task(self) -> int:
        return 1


class Fine(TaskBase):
    def run_task(self) -> int:
        log("Fine")
        return 1
"""


def test_a_broken_root_does_not_stop_the_rest(pytester: pytest.Pytester) -> None:
    write_tasks(pytester, "task_roots.py", BROKEN_ROOT)
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = run(pytester, "--taskproc")
    result.assert_outcomes(passed=2, errors=1)
    assert runs(pytester) == ["Fine"]


def test_a_broken_test_file_still_stops_the_run_as_without_taskproc(
    pytester: pytest.Pytester,
) -> None:
    """--taskproc lets task files fail to collect without stopping; other files as pytest does."""
    write_tasks(pytester, "task_roots.py", BROKEN_ROOT)
    pytester.makepyfile(test_broken="def test_broken(:\n    pass\n")
    result = run(pytester, "--taskproc")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*Interrupted: 2 errors during collection*"])
    assert runs(pytester) == []
    # pytest's own way out still works.
    allowed = run(pytester, "--taskproc", "--continue-on-collection-errors")
    allowed.assert_outcomes(passed=1, errors=2)
    assert runs(pytester) == ["Fine"]


@pytest.mark.slow
def test_a_broken_root_is_one_error_with_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    write_tasks(pytester, "task_roots.py", BROKEN_ROOT)
    result = run(pytester, "--taskproc", "-n", "2")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["taskproc: 1 computed, 0 cached, 0 failed, 0 skipped, 1 error;*"])


# -- options that imply --taskproc -----------------------------------------------------
ONE_TASK = """
class Only(TaskBase):
    def run_task(self) -> int:
        log("Only")
        return 1
"""


@pytest.mark.parametrize(
    "option",
    [
        "--taskproc-verify",
        "--taskproc-manifest=m.json",
        "--taskproc-executor=thread:1",
        "--taskproc-graph=g.md",
    ],
)
def test_an_option_that_needs_a_run_implies_taskproc(
    pytester: pytest.Pytester, option: str
) -> None:
    """A CI step such as ``pytest --taskproc-verify`` must never pass having done nothing."""
    write_tasks(pytester, body=ONE_TASK)
    result = run(pytester, f"--taskproc-cache-dir={pytester.path / 'c'}", option)
    result.stdout.fnmatch_lines(["taskproc: *"])
    if option == "--taskproc-verify":
        # Nothing was cached, so verifying computes it (the next run verifies it).
        assert result.parseoutcomes()["passed"] == 1
        again = run(pytester, f"--taskproc-cache-dir={pytester.path / 'c'}", option)
        again.stdout.fnmatch_lines(["taskproc: 1 verified, *", "* 1 verified in *"])
        assert runs(pytester) == ["Only", "Only"]  # computed, then recomputed aside
        return
    else:
        result.assert_outcomes(passed=1)
        written = option.partition("=")[2]
        if written.endswith((".json", ".md")):
            assert (pytester.path / written).is_file()
    assert runs(pytester) == ["Only"]


def test_ini_options_do_not_turn_the_plugin_on(pytester: pytest.Pytester) -> None:
    """An ini file is read by every run, ordinary ones too: it only configures ``--taskproc``."""
    write_tasks(pytester, body=ONE_TASK)
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    pytester.makeini("[pytest]\ntaskproc_executor = thread:1\ntaskproc_manifest = m.json\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert runs(pytester) == []
    assert not (pytester.path / "m.json").exists()
