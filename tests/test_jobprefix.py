"""Tasks run through a ``job_prefix`` command, as in taskproc 0.11.2: shell words run by /bin/sh.

The prefix's elements are joined by spaces and run by ``/bin/sh``, so the
original README's prefixes work unchanged; what the project appends (the
interpreter, the child module, the job files inside the cache) is quoted.
Launchers (``srun``, ``jbsub``, ``bsub``, ``docker``) are stood in for by one
recording script on ``PATH``: it appends the argv it got to a log, then runs
the appended command, as the real launcher would on a node.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules

from pytest_taskproc import Context, JobPrefixError

WRAPPER = """\
#!/bin/sh
# A stand-in for srun or docker run: say something, then run the rest of argv.
echo "wrapper got [$1] and runs $(basename "$2")"
echo "wrapper note" >&2
shift
exec "$@"
"""

RECORDER = """\
#!{python}
# Stands in for a launcher: records its argv, then runs the command appended to it.
import json, os, sys

with open({log!r}, "a", encoding="utf-8") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
args = sys.argv[1:]
start = args.index({python!r})
os.execv(args[start], args[start:])
"""

LAUNCHERS = ("srun", "sbatch", "jbsub", "bsub", "docker")


@pytest.fixture
def wrapper(tmp_path: Path) -> Path:
    folder = tmp_path / "bin dir with space"
    folder.mkdir()
    script = folder / "wrap job.sh"
    script.write_text(WRAPPER)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def launchers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Recording ``srun``/``jbsub``/``bsub``/``docker`` on ``PATH``; returns their log."""
    folder = tmp_path / "launchers"
    folder.mkdir()
    log = tmp_path / "launched.jsonl"
    for name in LAUNCHERS:
        script = folder / name
        script.write_text(RECORDER.format(python=sys.executable, log=str(log)))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


def launched(log: Path) -> list[list[str]]:
    """Each launcher call as ``[launcher, its arguments up to our appended command]``."""
    calls = []
    for line in log.read_text(encoding="utf-8").splitlines():
        argv = json.loads(line)
        calls.append(argv[: argv.index(sys.executable)])
    return calls


def appended(log: Path) -> list[str]:
    """The command we appended, as the last launcher received it."""
    argv: list[str] = json.loads(log.read_text(encoding="utf-8").splitlines()[-1])
    return argv[argv.index(sys.executable) :]


def prefixed_module(modules: TaskModules, prefix: list[str], name: str = "prefixed") -> ModuleType:
    return modules.load(
        name,
        f"""
        class Up(TaskBase):
            def run_task(self) -> int:
                log("run", "Up", os.getpid())
                return 20

        class Wrapped(TaskBase, job_prefix={prefix!r}):
            up: Requires[int]

            def build_task(self, n: int) -> None:
                self.up = Up()
                self.n = n

            def run_task(self) -> dict[str, object]:
                log("run", "Wrapped", os.getpid())
                print("task prints", self.n)
                print("task warns", self.n, file=sys.stderr)
                (self.task_directory / "made").write_text("in the child")
                env = {{k: os.environ.get(k) for k in ("A", "B", "X")}}
                return {{"sum": self.up + self.n, "env": env}}

        class Boom(Exception):
            pass

        class Broken(TaskBase, job_prefix={prefix!r}):
            def run_task(self) -> None:
                print("about to fail")
                raise Boom("raised in the child")
        """,
    )


NO_ENV = {"A": None, "B": None, "X": None}


def run_in_thread(task: object) -> object:
    """The caller's thread pool: what the prefix prints is relayed to this process."""
    with ThreadPoolExecutor(2) as pool:
        return task.run_graph(executor=pool)  # type: ignore[attr-defined]


def test_wrapper_script_runs_the_task_and_its_output_is_relayed(
    modules: TaskModules, wrapper: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # A path with spaces is quoted inside its element, as in a shell.
    mod = prefixed_module(modules, [shlex.quote(str(wrapper)), "'arg with space'"])
    task = mod.Wrapped(3)
    result = run_in_thread(task)
    assert result == {"sum": 23, "env": NO_ENV}
    out, err = capfd.readouterr()
    assert "wrapper got [arg with space] and runs python" in out
    assert "wrapper note" in err
    assert "task prints" not in out
    assert task.task_stdout.read_text() == "task prints 3\n"
    assert task.task_stderr.read_text() == "task warns 3\n"
    assert (task.task_directory / "made").read_text() == "in the child"
    pids = {line.split()[1]: line.split()[2] for line in modules.runs()}
    assert pids["Wrapped"] != str(os.getpid())
    assert pids["Up"] == str(os.getpid())
    assert task.get_task_result() == result


def test_wrapper_script_from_a_process_pool(modules: TaskModules, wrapper: Path) -> None:
    """The job travels through a pool worker to the child and back through the cache.

    Where the relayed output lands is the worker's stdout, which depends on
    how the pool started (a fork server keeps the stdout it had when it
    started), so only the thread-pool test above checks the relay.
    """
    mod = prefixed_module(modules, [shlex.quote(str(wrapper)), "'arg with space'"])
    result, stats = mod.Wrapped(4).run_graph_with_stats(max_workers=2)
    assert result == {"sum": 24, "env": NO_ENV}
    assert stats["stats"] == {"prefixed.Up": 1, "prefixed.Wrapped": 1}
    assert mod.Wrapped(4).task_stdout.read_text() == "task prints 4\n"
    assert (mod.Wrapped(4).task_directory / "made").read_text() == "in the child"


# -- the original README's prefixes, verbatim ----------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (
            ["jbsub", "-interactive", "-tty", "-queue x86_1h", "-cores 16+1", "-mem 64g"],
            ["jbsub", "-interactive", "-tty", "-queue", "x86_1h", "-cores", "16+1", "-mem", "64g"],
        ),
        (["jbsub -interactive -tty"], ["jbsub", "-interactive", "-tty"]),
    ],
    ids=["one-option-per-element", "one-element"],
)
def test_the_original_readme_prefixes_reach_the_launcher_as_its_shell_words(
    modules: TaskModules, launchers: Path, prefix: list[str], expected: list[str]
) -> None:
    mod = prefixed_module(modules, prefix)
    assert run_in_thread(mod.Wrapped(1)) == {"sum": 21, "env": NO_ENV}
    assert launched(launchers) == [expected]


def test_env_with_two_assignments_in_one_element_sets_both(modules: TaskModules) -> None:
    """``['env', 'A=1 B=2']`` from the original README: two assignments for the task."""
    mod = prefixed_module(modules, ["env", "A=1 B=2"])
    assert run_in_thread(mod.Wrapped(1)) == {"sum": 21, "env": {"A": "1", "B": "2", "X": None}}


# -- scheduler-style prefixes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (
            ["srun", "-c", "4", "--mem=8G", "--job-name='my study'"],
            ["srun", "-c", "4", "--mem=8G", "--job-name=my study"],
        ),
        (
            ["bsub", "-K", "-q short", "-R 'rusage[mem=4096]'"],
            ["bsub", "-K", "-q", "short", "-R", "rusage[mem=4096]"],
        ),
        (
            ["docker run --rm", '-v "$HOME":/home/me', "-e X=in-docker", "python:3.11"],
            [
                *("docker", "run", "--rm", "-v", f"{os.environ['HOME']}:/home/me"),
                *("-e", "X=in-docker", "python:3.11"),
            ],
        ),
    ],
    ids=["slurm", "lsf", "docker"],
)
def test_scheduler_prefixes_are_run_by_the_shell(
    modules: TaskModules, launchers: Path, prefix: list[str], expected: list[str]
) -> None:
    mod = prefixed_module(modules, prefix)
    assert run_in_thread(mod.Wrapped(2)) == {"sum": 22, "env": NO_ENV}
    assert launched(launchers) == [expected]
    command = appended(launchers)
    assert command[1:3] == ["-m", "pytest_taskproc.jobprefix"]
    assert all(Path(p).is_relative_to(Context.get_cache_root()) for p in command[3:])


def test_a_cache_path_with_space_quote_and_dollar_reaches_the_child_intact(
    modules: TaskModules, launchers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "it's a $HOME `cache` & more"
    monkeypatch.setattr(Context, "cache_dir", root)
    mod = prefixed_module(modules, ["srun", "-c", "1"], name="oddpath")
    assert run_in_thread(mod.Wrapped(5)) == {"sum": 25, "env": NO_ENV}
    job_file = appended(launchers)[3]
    assert job_file.startswith(str(root) + os.sep)
    assert (mod.Wrapped(5).task_directory / "made").read_text() == "in the child"
    assert str(mod.Wrapped(5).task_directory).startswith(str(root))


def test_shell_code_in_a_prefix_element_is_run_as_in_the_original(
    modules: TaskModules, tmp_path: Path
) -> None:
    """Elements are shell words (taskproc 0.11.2 joins them for /bin/sh): quote what must stay."""
    planted = tmp_path / "planted"
    mod = prefixed_module(modules, [f"touch {shlex.quote(str(planted))};", "env", "X='1; 2'"])
    assert run_in_thread(mod.Wrapped(1)) == {"sum": 21, "env": {"A": None, "B": None, "X": "1; 2"}}
    assert planted.exists()


# -- failures -----------------------------------------------------------------------------


def test_exception_in_the_child_is_raised_with_its_traceback(
    modules: TaskModules, launchers: Path
) -> None:
    mod = prefixed_module(modules, ["srun", "-c", "1"])
    with pytest.raises(mod.Boom, match="raised in the child") as info:
        run_in_thread(mod.Broken())
    shown = "".join(traceback.format_exception(info.value))
    # The child's own frame: file and line of the raise inside run_task.
    source = Path(str(mod.__file__)).read_text().splitlines()
    line = next(
        i for i, text in enumerate(source, 1) if 'raise Boom("raised in the child")' in text
    )
    assert f'File "{mod.__file__}", line {line}, in run_task' in shown
    assert mod.Broken().task_stdout.read_text() == "about to fail\n"
    with pytest.raises(FileNotFoundError):
        mod.Broken().get_task_result()


def test_exception_in_the_child_keeps_its_traceback_through_a_process_pool(
    modules: TaskModules, launchers: Path
) -> None:
    # By absolute path: pool processes may have been forked before PATH was changed.
    srun = launchers.parent / "launchers" / "srun"
    mod = prefixed_module(modules, [shlex.quote(str(srun)), "-c", "1"], name="pooled")
    with pytest.raises(mod.Boom) as info:
        mod.Broken().run_graph(max_workers=1)
    shown = "".join(traceback.format_exception(info.value))
    assert f'File "{mod.__file__}", line' in shown
    assert "in run_task" in shown


def test_prefix_that_exits_without_a_result_names_the_task(
    modules: TaskModules, tmp_path: Path
) -> None:
    failing = tmp_path / "fails.sh"
    failing.write_text("#!/bin/sh\necho 'scheduler says no' >&2\nexit 3\n")
    failing.chmod(failing.stat().st_mode | stat.S_IXUSR)
    mod = prefixed_module(modules, [str(failing)], name="refused")
    with pytest.raises(JobPrefixError) as info:
        run_in_thread(mod.Wrapped(1))
    message = str(info.value)
    assert message.startswith("Wrapped(1): job_prefix command")
    assert "exited with status 3" in message
    assert "refused.Wrapped" in message
    assert "scheduler says no" in message


def test_prefix_command_that_does_not_exist_names_the_task_and_the_shell_s_complaint(
    modules: TaskModules, tmp_path: Path
) -> None:
    mod = prefixed_module(modules, ["no-such-launcher-here", "-x"], name="missing")
    with pytest.raises(JobPrefixError) as info:
        run_in_thread(mod.Wrapped(1))
    message = str(info.value)
    assert message.startswith("Wrapped(1): job_prefix command 'no-such-launcher-here -x ")
    assert "exited with status 127" in message
    assert "no-such-launcher-here: not found" in message
