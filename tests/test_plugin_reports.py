"""End-to-end: what a ``--taskproc`` run reports, in the terminal, JUnit XML and pytest-html.

- JUnit XML validates against the xunit2 schema pytest tests itself with
  (``junit-10.xsd``, vendored beside this file); the task status is in each
  testcase's ``system-out`` (and a property under ``xunit1``), never an
  empty output banner; locations name the task class's file and line.
- ``-rs`` names each task's class line, ``-rA`` lists cached items too.
- Errors outside ``run_task`` are short and specific; a failure in a
  ``job_prefix`` child shows the child's line of ``run_task``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from taskproject import Project, assert_counts_agree

SCHEMA = Path(__file__).parent / "junit-10.xsd"

MIXED = """
class Loud(TaskBase):
    def run_task(self) -> int:
        log("Loud")
        print("hello from Loud")
        return 1


class Bad(TaskBase):
    def run_task(self) -> int:
        log("Bad")
        raise RuntimeError("boom")


class AfterBad(TaskBase):
    bad: Requires[int]

    def build_task(self) -> None:
        self.bad = Bad()

    def run_task(self) -> int:
        return self.bad


@pytest.mark.xfail(reason="known")
class Known(TaskBase):
    def run_task(self) -> int:
        raise ValueError("known")


class Quiet(TaskBase):
    def run_task(self) -> int:
        log("Quiet")
        return 2
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def cases(path: Path) -> dict[str, ET.Element]:
    return {case.attrib["name"]: case for case in ET.parse(path).getroot().iter("testcase")}


def system_out(case: ET.Element) -> list[str]:
    return [element.text or "" for element in case.iter("system-out")]


def test_junit_xml_is_valid_xunit2_and_holds_each_task_s_status(project: Project) -> None:
    xmlschema = pytest.importorskip("xmlschema")
    schema = xmlschema.XMLSchema(str(SCHEMA))
    project.task_file("task_mixed.py", MIXED)
    project.run("--junitxml=cold.xml")
    project.run("--junitxml=warm.xml")
    for name in ("cold.xml", "warm.xml"):
        schema.validate(str(project.path / name))  # raises on the first violation

    cold, warm = cases(project.path / "cold.xml"), cases(project.path / "warm.xml")
    assert "hello from Loud" in system_out(cold["Loud"])[0]
    assert "taskproc: computed; why: no result yet; task id 0;" in system_out(cold["Loud"])[0]
    assert "taskproc: failed; why: no result yet; task id 0" in system_out(cold["Bad"])[0]
    assert system_out(warm["Quiet"]) == [
        "-" * 33 + " Captured Out " + "-" * 33 + "\ntaskproc: cached; task id 0\n\n"
    ]
    # No testcase carries an output banner with nothing under it.
    for case in [*cold.values(), *warm.values()]:
        for text in system_out(case):
            assert text.strip().splitlines()[1:], ET.tostring(case)
    skipped = warm["AfterBad"].find("skipped")
    assert skipped is not None
    where = line_of(project.path / "task_mixed.py", "class AfterBad")
    assert skipped.text == (
        f"{project.path / 'task_mixed.py'}:{where}: upstream task Bad() failed (RuntimeError: boom)"
    )


def test_junit_xml_under_xunit1_has_properties_and_class_lines(project: Project) -> None:
    project.task_file("task_mixed.py", MIXED)
    project.run("--junitxml=out.xml", "-o", "junit_family=xunit1")
    found = cases(project.path / "out.xml")
    source = project.path / "task_mixed.py"
    for name in ("Loud", "Bad", "Quiet"):
        assert found[name].attrib["file"] == "task_mixed.py"
        assert found[name].attrib["line"] == str(line_of(source, f"class {name}(") - 1)
    properties = {p.attrib["name"]: p.attrib["value"] for p in found["Loud"].iter("property")}
    assert properties["taskproc"] == "computed"
    assert properties["taskproc_reason"] == "no result yet"
    assert properties["taskproc_task_id"] == "0"
    failed = {p.attrib["name"]: p.attrib["value"] for p in found["Bad"].iter("property")}
    assert failed["taskproc"] == "failed"


def test_skip_locations_name_each_task_s_class_line(project: Project) -> None:
    project.task_file(
        "task_two_skips.py",
        """
        class Bad(TaskBase):
            def run_task(self) -> int:
                raise RuntimeError("boom")


        class First(TaskBase):
            bad: Requires[int]

            def build_task(self) -> None:
                self.bad = Bad()

            def run_task(self) -> int:
                return self.bad


        class Second(TaskBase):
            bad: Requires[int]

            def build_task(self) -> None:
                self.bad = Bad()

            def run_task(self) -> int:
                return self.bad
        """,
    )
    result = project.run("-rs")
    source = project.path / "task_two_skips.py"
    result.stdout.fnmatch_lines(
        [
            f"SKIPPED [[]1[]] task_two_skips.py:{line_of(source, 'class First')}: upstream task "
            "Bad() failed (RuntimeError: boom)",
            f"SKIPPED [[]1[]] task_two_skips.py:{line_of(source, 'class Second')}: upstream task "
            "Bad() failed (RuntimeError: boom)",
        ]
    )


def test_report_all_lists_cached_items_too(project: Project) -> None:
    project.task_file("task_mixed.py", MIXED)
    project.run()
    warm = project.run("-rA", "-p", "no:randomly")
    warm.stdout.fnmatch_lines(
        [
            "*short test summary info*",
            "CACHED task_mixed.py::Loud",
            "CACHED task_mixed.py::Quiet",
        ]
    )
    # Only for the summary: pytest's own count still says cached, not passed.
    assert assert_counts_agree(warm) == {
        "computed": 0,
        "cached": 2,
        "failed": 1,
        "skipped": 1,
        "xfailed": 1,
    }


def test_pytest_html_report_lists_every_task(project: Project) -> None:
    pytest.importorskip("pytest_html")
    project.task_file("task_mixed.py", MIXED)
    project.run()
    result = project.run("--html=report.html", "--self-contained-html")
    assert_counts_agree(result)
    html = (project.path / "report.html").read_text(encoding="utf-8")
    for name in ("Loud", "Bad", "AfterBad", "Known", "Quiet"):
        assert f"task_mixed.py::{name}" in html
    assert "upstream task Bad() failed" in html


def test_cached_items_are_cached_in_pytest_html_json_report_and_sugar(project: Project) -> None:
    """Each reporting plugin shows a cached item as cached, not as a plain pass."""
    pytest.importorskip("pytest_html")
    pytest.importorskip("pytest_jsonreport")
    pytest.importorskip("pytest_sugar")
    project.task_file("task_mixed.py", MIXED)
    project.run().assert_outcomes(passed=2, failed=1, skipped=1, xfailed=1)
    (project.path / "task_mixed.py").write_text(
        (project.path / "task_mixed.py").read_text().replace("return 2", "return 3")
    )
    result = project.run(
        "--html=report.html",
        "--self-contained-html",
        "--json-report",
        "--json-report-file=report.json",
        "--junitxml=junit.xml",
    )
    assert result.parseoutcomes()["cached"] == 1
    page = (project.path / "report.html").read_text(encoding="utf-8")
    assert 'data-column-type="taskproc">Task</th>' in page
    # The rows live in the page's data as escaped HTML.
    assert "col-taskproc taskproc-cached\\&#34;&gt;cached&lt;" in page
    assert "taskproc-computed\\&#34;&gt;computed (its code changed" in page

    tests = {
        t["nodeid"]: t for t in json.loads((project.path / "report.json").read_text())["tests"]
    }
    loud = tests["task_mixed.py::Loud"]["metadata"]["taskproc"]
    assert loud == {"status": "cached", "reason": None, "task_id": 0}
    quiet = tests["task_mixed.py::Quiet"]["metadata"]["taskproc"]
    assert quiet["status"] == "computed" and "code changed" in quiet["reason"]
    assert isinstance(quiet["task_id"], int)
    ET.parse(project.path / "junit.xml")  # xunit2 has no properties: nothing was added there
    assert "<properties>" not in (project.path / "junit.xml").read_text()

    sugar = project.run("--force-sugar", "-p", "no:randomly")
    # Sugar draws its own symbols (✓ for a pass); a cached item is a c, not a ✓.
    lines = [line.split() for line in sugar.outlines if line.lstrip().startswith("task_mixed.py")]
    assert lines[0][:2] == ["task_mixed.py", "c"]  # Loud
    assert lines[-1][1].endswith("sxc")  # ..., AfterBad skipped, Known xfailed, Quiet cached
    assert not any("✓" in part for line in lines for part in line)
    # Its "Results" block counts them, where it would count passes.
    sugar.stdout.fnmatch_lines(
        ["Results (*", "* 2 cached", "* 1 failed", "* - *Bad()", "* 1 xfailed", "* 1 skipped"],
        consecutive=True,
    )


# -- short errors --------------------------------------------------------------------------

ERRORS = """
import threading


class Data(TaskBase):
    def run_task(self) -> dict[str, int]:
        return {"train": 1, "test": 2}


class Fit(TaskBase):
    data: Requires[int]

    def build_task(self) -> None:
        self.data = Data()["tset"]

    def run_task(self) -> int:
        return self.data


class Locky(TaskBase):
    def run_task(self) -> object:
        return threading.Lock()


class Peek(TaskBase):
    data: Requires[dict[str, int]]

    def build_task(self) -> None:
        self.data = Data()
        self.size = len(self.data)

    def run_task(self) -> int:
        return self.size
"""


def test_errors_outside_run_task_are_short_and_name_the_fix(project: Project) -> None:
    project.task_file("task_errors.py", ERRORS)
    result = project.run()
    result.stdout.fnmatch_lines(
        [
            "*_ Fit() _*",
            "MissingItemError: Fit(): requirement slot 'data' reads Data()['tset'], but the dict "
            "Data() has no key 'tset'; its keys: 'train', 'test'",
            "*- taskproc -*",
            "task Fit() failed",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ Locky() _*",
            "ResultNotPicklableError: Locky(): run_task returned a lock that cloudpickle cannot "
            "serialise*",
            "fix: return plain data*or save the object under self.task_directory*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting task_errors.py*",
            "*SlotReadInBuildError: Peek: requirement slot 'data' was read inside build_task*",
        ]
    )
    # No pytest or plugin internals around them.
    result.stdout.no_fnmatch_line("*_pytest*")
    result.stdout.no_fnmatch_line("*pytest_taskproc/worker.py*")
    assert assert_counts_agree(result) == {
        "computed": 1,
        "cached": 0,
        "failed": 2,
        "skipped": 0,
        "errors": 1,
    }


AGGREGATE = """
class Square(TaskBase):
    def build_task(self, n: int) -> None:
        self.n = n

    def run_task(self) -> int:
        log("Square", self.n)
        print("square of", self.n)


class Main(TaskBase):
    '''The original's own examples aggregate upstream tasks in a Main like this.'''

    squares: RequiresList[int]

    def build_task(self) -> None:
        self.squares = [Square(n) for n in range(2)]

    def runtask(self) -> int:
        return sum(self.squares)
"""


def test_a_class_without_run_task_or_without_return_runs_and_caches_none_with_a_warning(
    pytester: pytest.Pytester,
) -> None:
    project = Project(pytester, warnings_as_errors=False)
    project.task_file("task_typo.py", AGGREGATE)
    result = project.run("-rA")
    result.assert_outcomes(passed=3, warnings=2)
    result.stdout.fnmatch_lines_random(
        [
            "*task_typo.py:*: TaskDefinitionWarning: Main defines build_task but no run_task "
            "('runtask' is defined: a misspelling?), so it runs and caches None, as in taskproc*",
            "*task_typo.py:*: TaskDefinitionWarning: Square.run_task has no return statement, so "
            "Square caches None as its result*",
        ]
    )
    assert project.runs() == ["Square 0", "Square 1"]
    # None is cached like any value.
    assert project.run().parseoutcomes() == {"cached": 3, "warnings": 2}
    assert project.runs() == []


def test_under_W_error_a_class_without_run_task_is_a_collection_error_naming_it(
    project: Project,
) -> None:
    project.task_file("task_typo.py", AGGREGATE.replace("print(", "return print("))
    result = project.run()
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting task_typo.py*",
            "*TaskDefinitionWarning: Main defines build_task but no run_task ('runtask' is "
            "defined: a misspelling?)*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert project.runs() == []


def test_a_failure_under_job_prefix_shows_the_child_s_run_task_line(project: Project) -> None:
    project.task_file(
        "task_prefixed.py",
        """
        class Remote(TaskBase, job_prefix=["env", "WHERE=child"]):
            def run_task(self) -> int:
                log("Remote", os.environ.get("WHERE"))
                raise ValueError("failed in the child")
        """,
    )
    result = project.run()
    source = project.path / "task_prefixed.py"
    line = line_of(source, 'raise ValueError("failed in the child")')
    result.stdout.fnmatch_lines(
        [
            "*_ Remote() _*",
            f'*File "{source}", line {line}, in run_task*',
            "*ValueError: failed in the child*",
        ]
    )
    assert project.runs() == ["Remote child"]
