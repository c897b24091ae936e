"""End-to-end: running task items with ``pytest --taskproc``: caching, failures, reasons, output.

Every run is a pytest subprocess in a ``pytester`` directory with its own
cache; tasks append a line to ``run.log`` whenever ``run_task`` is called, so
a test proves caching by running twice and comparing what the log gained.
"""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from taskproject import Project

BINOM = """
@infer_task_type
class Choose(TaskBase):
    prev1: Requires[int]
    prev2: Requires[int]

    def build_task(self, n: int, k: int) -> None:
        if 0 < k < n:
            self.prev1 = Choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)
        elif k == 0 or k == n:
            self.prev1 = Const(0)
            self.prev2 = Const(1)
        else:
            raise ValueError((n, k))

    def run_task(self) -> int:
        log("Choose", self.task_args["n"], self.task_args["k"])
        return self.prev1 + self.prev2


class Root(TaskBase):
    top: Requires[int]

    def build_task(self) -> None:
        self.top = Choose(4, 2)

    def run_task(self) -> int:
        log("Root")
        return self.top


@pytest.mark.parametrize("n", [3, 5])
class Half(TaskBase):
    mid: Requires[int]

    def build_task(self, n: int) -> None:
        self.mid = Choose(n, n // 2)

    def run_task(self) -> int:
        log("Half", self.task_args["n"])
        return self.mid
"""

#: Choose(4, 2), Choose(3, 1) and Choose(5, 2) need these 11 Choose tasks.
CHOOSE_RUNS = [
    f"Choose {n} {k}"
    for n, k in [
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
        (2, 2),
        (3, 0),
        (3, 1),
        (3, 2),
        (4, 1),
        (4, 2),
        (5, 2),
    ]
]
ALL_RUNS = [*CHOOSE_RUNS, "Root", "Half 3", "Half 5"]
N_TASKS = len(ALL_RUNS)

FAILING = """
class Bad(TaskBase):
    def run_task(self) -> int:
        log("Bad")
        print("about to fail")
        raise RuntimeError("boom")


class Down(TaskBase):
    bad: Requires[int]

    def build_task(self) -> None:
        self.bad = Bad()

    def run_task(self) -> int:
        log("Down")
        return self.bad


class Good(TaskBase):
    def run_task(self) -> int:
        log("Good")
        return 1
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


def expect(result: pytest.RunResult, **counts: int) -> None:
    """The outcome counts of the run's last line, ``cached`` included (assert_outcomes lacks it)."""
    assert result.parseoutcomes() == counts, result.stdout.str()


def summary_line(computed: int, cached: int, failed: int, skipped: int, cache: Path) -> str:
    return (
        f"taskproc: {computed} computed, {cached} cached, {failed} failed, {skipped} skipped; "
        f"* s of task time in a * s run; cache: {cache}"
    )


# -- caching ------------------------------------------------------------------------
def test_second_run_reports_every_task_cached_and_computes_nothing(project: Project) -> None:
    project.task_file("task_binom.py", BINOM)
    first = project.run()
    expect(first, passed=N_TASKS)
    first.stdout.fnmatch_lines([summary_line(N_TASKS, 0, 0, 0, project.cache)])
    assert Counter(project.runs()) == Counter(ALL_RUNS)

    second = project.run()
    assert second.parseoutcomes() == {"cached": N_TASKS}
    second.stdout.fnmatch_lines(
        [
            "task_binom.py " + "c" * N_TASKS + "*",
            summary_line(0, N_TASKS, 0, 0, project.cache),
            f"*= {N_TASKS} cached in *",
        ]
    )
    assert project.runs() == []
    assert second.ret == pytest.ExitCode.OK


def test_a_cached_value_changed_in_place_is_recomputed_and_the_rest_stays_cached(
    pytester: pytest.Pytester,
) -> None:
    # Cached items are not re-read: only planning's stat check stands between a
    # changed value file and a wrong "cached" verdict, so it must catch this.
    project = Project(pytester, warnings_as_errors=False)
    project.task_file("task_binom.py", BINOM)
    expect(project.run(), passed=N_TASKS)
    project.runs()
    (value,) = (project.cache / "taskproc" / "task_binom.Root" / "results").glob("*/result.pkl")
    blob = bytearray(value.read_bytes())
    assert blob[-2] == 6  # the pickle of Choose(4, 2) = 6: 0x80 0x05 K 6 .
    blob[-2] = 7
    value.write_bytes(bytes(blob))  # same size, a valid pickle of another value

    second = project.run("-v")
    second.stdout.fnmatch_lines(["*CacheCorruptionWarning*task_binom.Root*"])
    assert second.parseoutcomes() == {"passed": 1, "cached": N_TASKS - 1, "warnings": 1}
    assert project.runs() == ["Root"]
    assert project.run().parseoutcomes() == {"cached": N_TASKS}


def test_verbose_says_why_a_task_is_computed_and_cached_otherwise(project: Project) -> None:
    project.task_file("task_binom.py", BINOM)
    project.run("-v").stdout.fnmatch_lines(
        [
            "task_binom.py::Choose[[]2-0] PASSED (computed: no result yet)*",
            "task_binom.py::Root PASSED (computed: no result yet)*",
        ]
    )
    project.run("-v").stdout.fnmatch_lines(
        ["task_binom.py::Choose[[]2-0] CACHED*", "task_binom.py::Root CACHED*"]
    )


def test_mixed_run_counts_computed_and_cached_tasks(project: Project) -> None:
    project.task_file("task_binom.py", BINOM)
    expect(project.run("-k", "Root"), passed=1, deselected=N_TASKS - 1)
    assert len(project.runs()) == 9  # Root's graph: eight Choose tasks and Root

    result = project.run()
    expect(result, passed=5, cached=9)
    result.stdout.fnmatch_lines(
        [summary_line(5, 9, 0, 0, project.cache), "*= 5 passed, 9 cached in *"]
    )
    assert sorted(project.runs()) == sorted(
        ["Choose 3 0", "Choose 4 1", "Choose 5 2", "Half 3", "Half 5"]
    )


# -- failures ---------------------------------------------------------------------
def test_a_failing_task_fails_its_downstream_is_skipped_and_the_rest_goes_on(
    project: Project,
) -> None:
    project.task_file("task_fail.py", FAILING)
    result = project.run("-rs")
    expect(result, passed=1, failed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*_ Bad() _*",
            "    def run_task(self) -> int:",
            '>       raise RuntimeError("boom")',
            "E       RuntimeError: boom",
            "task_fail.py:*: RuntimeError",
            "*- taskproc -*",
            "task Bad() failed",
            "  class:     task_fail.Bad",
            "  arguments: {}",
            "  task id:   0",
            f"  stdout:    {project.cache}/taskproc/task_fail.Bad/results/0/stdout.txt",
            "*- Captured stdout call -*",
            "about to fail",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            summary_line(1, 0, 1, 1, project.cache),
            "SKIPPED [[]1[]] task_fail.py:25: upstream task Bad() failed (RuntimeError: boom)",
        ]
    )
    # The traceback starts at run_task: no frames of the plugin or of pytest.
    result.stdout.no_fnmatch_line("*pytest_taskproc*.py:*")
    # Bad printed nothing to stderr, so the header names no stderr file.
    result.stdout.no_fnmatch_line("  stderr: *")
    assert sorted(project.runs()) == ["Bad", "Good"]

    # Nothing of the failed task was cached: it runs again, the good task does not.
    again = project.run("-rs")
    expect(again, cached=1, failed=1, skipped=1)
    assert project.runs() == ["Bad"]
    assert not list((project.cache / "taskproc" / "task_fail.Bad").rglob("result.pkl*"))


def test_exitfirst_stops_after_the_first_failing_task(project: Project) -> None:
    project.task_file(
        "task_two_bad.py",
        """
        class Bad1(TaskBase):
            def run_task(self) -> int:
                log("Bad1")
                raise RuntimeError("first")


        class Bad2(TaskBase):
            def run_task(self) -> int:
                log("Bad2")
                raise RuntimeError("second")


        class Good(TaskBase):
            def run_task(self) -> int:
                log("Good")
                return 1
        """,
    )
    result = project.run("-x")
    expect(result, failed=1)
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])
    assert project.runs() == ["Bad1"]

    expect(project.run(), failed=2, passed=1)
    assert project.runs() == ["Bad1", "Bad2", "Good"]


# -- source changes ----------------------------------------------------------------
STAGES = """
@pytest.mark.parametrize("i", [1, 2])
class Base(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> int:
        log("Base", self.i)
        return self.i


class Mid(TaskBase):
    base: Requires[int]

    def build_task(self, i: int) -> None:
        self.base = Base(i)

    def run_task(self) -> int:
        log("Mid", self.task_args["i"])
        return self.base * 10


class Top(TaskBase):
    a: Requires[int]
    b: Requires[int]

    def build_task(self) -> None:
        self.a = Mid(1)
        self.b = Mid(2)

    def run_task(self) -> int:
        log("Top")
        return self.a + self.b
"""


def test_a_code_change_recomputes_that_class_and_its_downstream(project: Project) -> None:
    project.task_file("task_stages.py", STAGES)
    expect(project.run(), passed=5)
    assert len(project.runs()) == 5

    # A comment or a blank line is no change of code.
    project.task_file(
        "task_stages.py",
        STAGES.replace('log("Mid", ', '# still the same computation\n        log("Mid", '),
    )
    expect(project.run(), cached=5)
    assert project.runs() == []

    project.task_file("task_stages.py", STAGES.replace("self.base * 10", "self.base * 100"))
    result = project.run("-v")
    expect(result, passed=3, cached=2)
    result.stdout.fnmatch_lines_random(
        [
            "task_stages.py::Base[[]1] CACHED*",
            "task_stages.py::Base[[]2] CACHED*",
            "task_stages.py::Mid[[]1] PASSED (computed: its code changed)*",
            "task_stages.py::Mid[[]2] PASSED (computed: its code changed)*",
            "task_stages.py::Top PASSED (computed: an upstream result changed (Mid(*)))*",
        ]
    )
    assert sorted(project.runs()) == ["Mid 1", "Mid 2", "Top"]


def test_no_source_check_ignores_code_changes(project: Project) -> None:
    project.task_file("task_stages.py", STAGES)
    expect(project.run(), passed=5)
    project.runs()
    project.task_file("task_stages.py", STAGES.replace("self.base * 10", "self.base * 100"))
    expect(project.run("--taskproc-no-source-check"), cached=5)
    assert project.runs() == []
    # The edit was real: without the option it is noticed.
    expect(project.run(), passed=3, cached=2)
    assert sorted(project.runs()) == ["Mid 1", "Mid 2", "Top"]


# -- clearing ----------------------------------------------------------------------
def test_clear_recomputes_the_selected_tasks_and_then_their_downstream(project: Project) -> None:
    project.task_file("task_binom.py", BINOM)
    expect(project.run(), passed=N_TASKS)
    project.runs()

    result = project.run("--taskproc-clear", "-k", "Choose[3-1]", "-v")
    expect(result, passed=1, deselected=N_TASKS - 1)
    result.stdout.fnmatch_lines(
        [
            "task_binom.py::Choose[[]3-1] PASSED (computed: its result was cleared)*",
            "taskproc clear: cleared 1 cached result of 1 task class (1 task selected)",
        ]
    )
    assert project.runs() == ["Choose 3 1"]

    # Its downstream tasks now have an older result than it, and only they run.
    result = project.run()
    expect(result, passed=6, cached=N_TASKS - 6)
    assert sorted(project.runs()) == [
        "Choose 4 1",
        "Choose 4 2",
        "Choose 5 2",
        "Half 3",
        "Half 5",
        "Root",
    ]


def test_clear_of_everything_computes_each_task_once(project: Project) -> None:
    project.task_file("task_binom.py", BINOM)
    expect(project.run(), passed=N_TASKS)
    project.runs()
    # --taskproc-clear alone implies --taskproc.
    result = project.pytester.runpytest_subprocess(
        "--taskproc-clear",
        "-p",
        "no:cacheprovider",
        f"--taskproc-cache-dir={project.cache}",
        timeout=120,
    )
    expect(result, passed=N_TASKS)
    assert Counter(project.runs()) == Counter(ALL_RUNS)
    result.stdout.fnmatch_lines(
        [
            f"taskproc clear: cleared {N_TASKS} cached results of 3 task classes "
            f"({N_TASKS} tasks selected)"
        ]
    )


# -- reports -----------------------------------------------------------------------
def test_junit_xml_has_every_task_and_marks_cached_ones(project: Project) -> None:
    """Under ``xunit1`` the status is a testcase property (``xunit2`` allows none)."""
    project.task_file("task_binom.py", BINOM)
    xunit1 = ("-o", "junit_family=xunit1")
    expect(project.run("--junitxml=first.xml", *xunit1), passed=N_TASKS)
    expect(project.run("--junitxml=second.xml", *xunit1), cached=N_TASKS)

    def properties(case: ET.Element) -> dict[str, str]:
        return {p.attrib["name"]: p.attrib["value"] for p in case.iter("property")}

    def testcases(name: str) -> dict[str, dict[str, str]]:
        tree = ET.parse(project.path / name)
        return {case.attrib["name"]: properties(case) for case in tree.iter("testcase")}

    first = testcases("first.xml")
    assert len(first) == N_TASKS
    assert first["Root"]["taskproc"] == "computed"
    assert first["Root"]["taskproc_reason"] == "no result yet"
    second = testcases("second.xml")
    assert set(second) == set(first)
    assert {props["taskproc"] for props in second.values()} == {"cached"}
    assert "Choose[4-2]" in second


PRINTER = """
class Loud(TaskBase):
    def run_task(self) -> int:
        log("Loud")
        print("hello from Loud")
        return 1
"""


def test_no_capture_shows_task_output_live_and_still_writes_it_to_the_file(
    project: Project,
) -> None:
    project.task_file("task_loud.py", PRINTER)
    result = project.run("-s")
    expect(result, passed=1)
    result.stdout.fnmatch_lines(["*hello from Loud*"])
    outputs = list((project.cache / "taskproc").glob("task_loud.Loud/results/*/stdout.txt"))
    assert [p.read_text() for p in outputs] == ["hello from Loud\n"]


def test_captured_output_of_passing_tasks_shows_with_report_all(project: Project) -> None:
    project.task_file("task_loud.py", PRINTER)
    quiet = project.run()
    quiet.stdout.no_fnmatch_line("*hello from Loud*")
    project.task_file("task_loud.py", PRINTER.replace("hello", "hello again"))
    shown = project.run("-rA")
    shown.stdout.fnmatch_lines(["*- Captured stdout call -*", "hello again from Loud"])


def test_junit_xml_holds_a_task_s_captured_output(project: Project) -> None:
    """Task output is the point of a task report, so it is in the XML by default."""
    project.task_file("task_loud.py", PRINTER)
    expect(project.run("--junitxml=out.xml"), passed=1)
    (case,) = ET.parse(project.path / "out.xml").getroot().iter("testcase")
    system_out = case.find("system-out")
    assert system_out is not None and "hello from Loud" in (system_out.text or "")
    quiet = project.run("--junitxml=quiet.xml", "-o", "junit_logging=no", "--taskproc-clear")
    expect(quiet, passed=1)
    (case,) = ET.parse(project.path / "quiet.xml").getroot().iter("testcase")
    assert case.find("system-out") is None


RECORDING_PDB = """
class Recorder:
    '''Stands in for pdb: notes where post-mortem debugging would stop.'''

    quitting = False

    def reset(self) -> None:
        pass

    def interaction(self, frame, tb) -> None:
        tb = getattr(tb, "__traceback__", tb)  # pytest on Python 3.13 hands the exception
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        with open("stopped.txt", "w") as handle:
            handle.write(f"{code.co_name} {code.co_filename} {tb.tb_frame.f_locals.get('self')!r}")
"""


def test_pdb_stops_inside_the_failing_run_task(project: Project) -> None:
    project.task_file("task_fail.py", FAILING)
    (project.path / "recorder.py").write_text(textwrap.dedent(RECORDING_PDB), encoding="utf-8")
    project.pytester.syspathinsert()
    result = project.run("--pdb", "--pdbcls=recorder:Recorder", "-k", "Bad")
    expect(result, failed=1, deselected=2)
    name, filename, task = (project.path / "stopped.txt").read_text().split(" ", 2)
    assert name == "run_task"
    assert Path(filename).name == "task_fail.py"
    assert task == "Bad()"


def test_last_failed_reruns_only_the_failed_task(project: Project) -> None:
    project.task_file("task_fail.py", FAILING)
    # --lf needs pytest's cache plugin, which the other tests switch off.
    options = ["--taskproc", f"--taskproc-cache-dir={project.cache}", "-W", "error"]
    first = project.pytester.runpytest_subprocess(*options, timeout=120)
    first.assert_outcomes(passed=1, failed=1, skipped=1)
    assert sorted(project.runs()) == ["Bad", "Good"]
    again = project.pytester.runpytest_subprocess(*options, "--lf", timeout=120)
    # pytest filters task files like test modules: only the failed item is collected.
    assert again.parseoutcomes() == {"failed": 1}, again.stdout.str()
    again.stdout.fnmatch_lines(
        ["*run-last-failure*", "FAILED task_fail.py::Bad - RuntimeError: boom"]
    )
    assert project.runs() == ["Bad"]


def test_the_taskproc_marker_selects_task_items(project: Project) -> None:
    project.task_file("task_fail.py", FAILING)
    project.pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    only_plain = project.run("-m", "not taskproc")
    only_plain.assert_outcomes(passed=1, deselected=3)
    assert project.runs() == []
    only_tasks = project.run("-m", "taskproc", "-k", "Good")
    only_tasks.assert_outcomes(passed=1, deselected=3)
    assert project.runs() == ["Good"]


GC_TASKS = """
import gc


class Counted(TaskBase):
    def run_task(self) -> int:
        log("during", gc.get_freeze_count() > 0)
        return 1
"""

GC_CONFTEST = """
import gc

FREEZE_FIRST = {freeze_first}


def pytest_configure(config):
    if FREEZE_FIRST:
        gc.freeze()


def pytest_sessionfinish(session):
    with open({log!r}, "a", encoding="utf-8") as handle:
        handle.write(f"after {{gc.get_freeze_count() > 0}}\\n")
"""


@pytest.mark.parametrize("freeze_first", [False, True], ids=["unfrozen", "frozen-by-the-user"])
def test_collected_objects_are_left_out_of_gc_scans_during_the_run_only(
    pytester: pytest.Pytester, freeze_first: bool
) -> None:
    # The run loop keeps what collection made in the permanent generation and gives it
    # back afterwards; a freeze somebody else made is left as it is.
    project = Project(pytester)
    project.task_file("task_gc.py", GC_TASKS)
    pytester.makeconftest(GC_CONFTEST.format(freeze_first=freeze_first, log=str(project.log)))
    project.run().assert_outcomes(passed=1)
    assert project.runs() == ["during True", f"after {freeze_first}"]


LOADERS_TASKS = """
class Small(TaskBase):
    def run_task(self) -> int:
        import pytest_taskproc.cache as cache

        log(type(cache.__loader__).__name__)
        return 1
"""


def test_the_library_is_not_rewritten_by_pytest_s_assertion_hook(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found on sys.path as an installed copy is (not through the editable finder), every
    # module of a pytest11 plugin's distribution is marked for assertion rewriting: each
    # import parses and compiles it again, unless the rewritten bytecode can be saved.
    import pytest_taskproc

    monkeypatch.setenv("PYTHONPATH", str(Path(pytest_taskproc.__file__).parents[1]))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    project = Project(pytester)
    project.task_file("task_small.py", LOADERS_TASKS)
    project.run().assert_outcomes(passed=1)
    assert project.runs() == ["SourceFileLoader"]  # not pytest's AssertionRewritingHook
