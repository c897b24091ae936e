"""Tasks run through a ``job_prefix`` command: a wrapper script, with no shell in between."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules

from pytest_taskproc import JobPrefixError

WRAPPER = """\
#!/bin/sh
# A stand-in for srun or docker run: say something, then run the rest of argv.
echo "wrapper got [$1] and runs $(basename "$2")"
echo "wrapper note" >&2
shift
exec "$@"
"""


@pytest.fixture
def wrapper(tmp_path: Path) -> Path:
    folder = tmp_path / "bin dir with space"
    folder.mkdir()
    script = folder / "wrap job.sh"
    script.write_text(WRAPPER)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


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
                return {{"sum": self.up + self.n, "env": os.environ.get("X")}}

        class Boom(Exception):
            pass

        class Broken(TaskBase, job_prefix={prefix!r}):
            def run_task(self) -> None:
                print("about to fail")
                raise Boom("raised in the child")
        """,
    )


def test_wrapper_script_runs_the_task_and_its_output_is_relayed(
    modules: TaskModules, wrapper: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    mod = prefixed_module(modules, [str(wrapper), "arg with space"])
    task = mod.Wrapped(3)
    with ThreadPoolExecutor(2) as pool:
        result = task.run_graph(executor=pool)
    assert result == {"sum": 23, "env": None}
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
    mod = prefixed_module(modules, [str(wrapper), "arg with space"])
    result, stats = mod.Wrapped(4).run_graph_with_stats(max_workers=2)
    assert result == {"sum": 24, "env": None}
    assert stats["stats"] == {"prefixed.Up": 1, "prefixed.Wrapped": 1}
    assert mod.Wrapped(4).task_stdout.read_text() == "task prints 4\n"
    assert (mod.Wrapped(4).task_directory / "made").read_text() == "in the child"


def test_prefix_elements_are_arguments_not_shell_code(modules: TaskModules, tmp_path: Path) -> None:
    """Joined into a shell command line, ``X=1; touch FILE`` would create FILE."""
    planted = tmp_path / "planted"
    mod = prefixed_module(modules, ["env", f"X=1; touch {planted}"], name="no_shell")
    with ThreadPoolExecutor(1) as pool:
        result = mod.Wrapped(1).run_graph(executor=pool)
    assert not planted.exists()
    # env received the element whole, as one NAME=VALUE assignment
    assert result == {"sum": 21, "env": f"1; touch {planted}"}


def test_exception_in_the_child_is_raised_in_the_caller(
    modules: TaskModules, wrapper: Path
) -> None:
    mod = prefixed_module(modules, [str(wrapper), "x"])
    with ThreadPoolExecutor(1) as pool, pytest.raises(mod.Boom, match="raised in the child"):
        mod.Broken().run_graph(executor=pool)
    assert mod.Broken().task_stdout.read_text() == "about to fail\n"
    with pytest.raises(FileNotFoundError):
        mod.Broken().get_task_result()


def test_prefix_that_exits_without_a_result_names_the_task(
    modules: TaskModules, tmp_path: Path
) -> None:
    failing = tmp_path / "fails.sh"
    failing.write_text("#!/bin/sh\necho 'scheduler says no' >&2\nexit 3\n")
    failing.chmod(failing.stat().st_mode | stat.S_IXUSR)
    mod = prefixed_module(modules, [str(failing)], name="refused")
    with ThreadPoolExecutor(1) as pool, pytest.raises(JobPrefixError) as info:
        mod.Wrapped(1).run_graph(executor=pool)
    message = str(info.value)
    assert message.startswith("Wrapped(1): job_prefix command")
    assert "exited with status 3" in message
    assert "refused.Wrapped" in message
    assert "scheduler says no" in message


def test_prefix_command_that_does_not_exist_names_the_task(
    modules: TaskModules, tmp_path: Path
) -> None:
    mod = prefixed_module(modules, [str(tmp_path / "no such launcher")], name="missing")
    with ThreadPoolExecutor(1) as pool, pytest.raises(JobPrefixError) as info:
        mod.Wrapped(1).run_graph(executor=pool)
    assert str(info.value).startswith("Wrapped(1): cannot start job_prefix command")
    assert "no such launcher" in str(info.value)
