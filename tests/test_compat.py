"""Code and tests written for taskproc 0.11.2 run with only the import changed.

The scenarios of taskproc 0.11.2's own test suite, in our words: clearing
counts, channels and compression levels read through ``_task_config``, task
directories through ``_task_worker``, ``**params`` arguments, item access and
``job_prefix`` output.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TaskModules

ORIGINAL_STYLE = """
from typing import Any


@infer_task_type
class Left(TaskBase, channel=["<shared>", "<left>"]):
    def build_task(self): ...

    def run_task(self) -> str:
        return "left"


@infer_task_type
class Right(TaskBase, channel="<shared>"):
    def build_task(self): ...

    def run_task(self) -> str:
        return "right"


@infer_task_type
class Joined(TaskBase, compress_level=-1):
    a: Requires[str] = Req()
    b: Requires[str] = Req()

    def build_task(self):
        self.a = Left()
        self.b = Right()

    def run_task(self) -> str:
        return self.a + "+" + self.b


@infer_task_type
class WriteNote(TaskBase):
    def build_task(self, text: str):
        self.text = text

    def run_task(self) -> str:
        path = self.task_directory / "note.txt"
        path.write_text(self.text)
        return str(path)


@infer_task_type
class ReadNote(TaskBase):
    path: Requires[str] = Req()

    def build_task(self, who: str):
        self.path = WriteNote("note for " + who)

    def run_task(self) -> str:
        with open(self.path) as handle:
            return handle.read()


@infer_task_type
class Size(TaskBase):
    def build_task(self, x: list | dict):
        self.x = x

    def run_task(self) -> int:
        return len(self.x)


@infer_task_type
class Sizes(TaskBase):
    sizes: RequiresDict[str, int]

    def build_task(self, **params: Any):
        self.params = params
        self.containers = [k for k in params if isinstance(params[k], (list, dict))]
        self.sizes = {k: Size(params[k]) for k in self.containers}

    def run_task(self) -> dict[str, int | None]:
        out: dict[str, int | None] = dict(self.sizes)
        out.update({k: None for k in self.params if k not in self.containers})
        return out


@infer_task_type
class Pair(TaskBase):
    def build_task(self) -> None:
        pass

    def run_task(self) -> dict[str, str]:
        return {"key": "value"}


@infer_task_type
class Picked(TaskBase):
    picked: Requires[str]

    def build_task(self) -> None:
        self.picked = Pair()["key"]

    def run_task(self) -> str:
        return self.picked


@infer_task_type
class Broken(TaskBase):
    def build_task(self): ...

    def run_task(self):
        raise ValueError(42)
"""


@pytest.fixture
def original(modules: TaskModules) -> ModuleType:
    return modules.load("original_style", ORIGINAL_STYLE)


def test_channels_and_compression_read_as_in_taskproc(original: ModuleType) -> None:
    assert original.Joined().run_graph(rate_limits={"<shared>": 1}) == "left+right"
    assert original.Right._task_config.channels == (original.Right._task_config.name, "<shared>")
    assert original.Joined._task_config.db.compress_level == -1


def test_task_directories_follow_clearing_as_in_taskproc(original: ModuleType) -> None:
    world = original.WriteNote("note for world")._task_worker._directory_uninit
    me = original.WriteNote("note for me")._task_worker._directory_uninit
    assert not world.exists() and not me.exists()
    assert original.ReadNote("world").run_graph() == "note for world"
    assert original.ReadNote("me").run_graph() == "note for me"
    assert world.exists() and me.exists()

    original.ReadNote.clear_all_tasks()  # downstream cleared: directories stay
    assert original.ReadNote("world").run_graph() == "note for world"
    original.WriteNote("note for world").clear_task()
    assert not world.exists() and me.exists()
    assert original.ReadNote("world").run_graph() == "note for world"
    original.WriteNote.clear_all_tasks()
    assert not world.exists() and not me.exists()
    assert original.ReadNote("world").run_graph() == "note for world"


def test_keyword_parameters_items_and_errors_as_in_taskproc(original: ModuleType) -> None:
    result = original.Sizes(x=[1, 2], y={0: "a", 1: "b", 2: "c"}, z=42).run_graph()
    assert result == {"x": 2, "y": 3, "z": None}
    assert original.Picked().run_graph() == "value"
    with pytest.raises(ValueError):
        original.Broken().run_graph()


def test_job_prefix_output_reaches_the_caller_as_in_taskproc(
    modules: TaskModules, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrapper = tmp_path / "run_with_hello.bash"
    wrapper.write_text('echo hello\nexec "$@"\n')
    module = modules.load(
        "prefixed_style",
        f"""
@infer_task_type
class Prefixed(TaskBase, job_prefix=["bash", {str(wrapper)!r}]):
    def run_task(self) -> None:
        print("world")
""",
    )
    task = module.Prefixed()
    task.run_graph(executor=ThreadPoolExecutor(max_workers=1))
    captured = capsys.readouterr()
    assert captured.out == "hello\n"
    assert captured.err == ""
    assert task.task_stdout.read_text() == "world\n"
