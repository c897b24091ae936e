"""Freshness against research code that tries to fool it: edits between fresh processes.

Each scenario writes user modules into a project directory, runs a root task in a
fresh interpreter (as a user's script would), edits a module or an input, runs
again, and counts ``run_task`` calls through the run log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import MODULE_HEADER

RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pytest_taskproc import Context
Context.cache_dir = sys.argv[2]
import tasks
print(json.dumps(getattr(tasks, sys.argv[3])().run_graph(max_workers=1)))
"""


class Project:
    """User modules in a directory, a cache elsewhere, and the run log."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "project"
        self.dir.mkdir()
        self.cache = tmp_path / "cache"
        self.log = tmp_path / "run.log"

    def module(self, name: str, body: str, header: bool = False) -> None:
        text = textwrap.dedent(body)
        if header:
            text = MODULE_HEADER.format(log=str(self.log)) + text
        (self.dir / f"{name}.py").write_text(text, encoding="utf-8")

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.dir / f"{name}.py"
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    def run(self, root: str, **env: str) -> tuple[Any, list[str]]:
        """The root's value and the ``run_task`` calls, from a fresh interpreter."""
        return self.script(RUNNER, root, **env)

    def script(self, source: str, *args: str, **env: str) -> tuple[Any, list[str]]:
        """What ``source`` prints last (JSON) and the ``run_task`` calls, in a fresh
        interpreter given the project, the cache and ``args``."""
        self.log.write_text("")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
        done = subprocess.run(
            [sys.executable, "-c", source, str(self.dir), str(self.cache), *args],
            capture_output=True,
            text=True,
            env={**environ, **env},
            cwd=self.dir,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1]), self.log.read_text().split()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def test_a_const_dict_in_another_key_order_is_a_new_input(project: Project) -> None:
    # Iterating a config dict (layers, stages) gives a result that depends on its order:
    # equal content in another order must not serve the value made from the old order.
    project.module(
        "tasks",
        """
        class Layers(TaskBase):
            spec: Requires[dict]

            def build_task(self) -> None:
                self.spec = Const({k: 1 for k in os.environ["ORDER"]})

            def run_task(self) -> list:
                log("Layers")
                return list(self.spec)
        """,
        header=True,
    )
    assert project.run("Layers", ORDER="ab") == (["a", "b"], ["Layers"])
    assert project.run("Layers", ORDER="ab") == (["a", "b"], [])
    assert project.run("Layers", ORDER="ba") == (["b", "a"], ["Layers"])
    assert project.run("Layers", ORDER="ba") == (["b", "a"], [])


def test_a_user_module_used_as_a_value_counts_whole(project: Project) -> None:
    # ``getattr(helpers, name)`` (a registry of models by name) reaches any function of
    # the module: the attribute read cannot be seen, so all of the module counts.
    project.module("helpers", "def scale(x):\n    return x * 2\n")
    project.module(
        "tasks",
        """
        import helpers

        class Pick(TaskBase):
            def run_task(self) -> int:
                log("Pick")
                return getattr(helpers, "sc" + "ale")(4)
        """,
        header=True,
    )
    assert project.run("Pick") == (8, ["Pick"])
    assert project.run("Pick") == (8, [])
    project.edit("helpers", "x * 2", "x * 3")
    assert project.run("Pick") == (12, ["Pick"])
    assert project.run("Pick") == (12, [])


def test_a_user_module_read_only_by_attribute_counts_only_what_is_read(project: Project) -> None:
    project.module("helpers", "def scale(x):\n    return x * 2\n\ndef other():\n    return 1\n")
    project.module(
        "tasks",
        """
        import helpers

        class Scale(TaskBase):
            def run_task(self) -> int:
                log("Scale")
                return helpers.scale(4)
        """,
        header=True,
    )
    assert project.run("Scale") == (8, ["Scale"])
    project.edit("helpers", "return 1", "return 2")
    assert project.run("Scale") == (8, [])
    project.edit("helpers", "x * 2", "x * 3")
    assert project.run("Scale") == (12, ["Scale"])


CONFIG_AT_IMPORT = """
import json
from collections import defaultdict
from pathlib import Path

PARAMS = json.loads((Path(__file__).parent / "params.json").read_text())
LAYERS = PARAMS["layers"]
SEEN = defaultdict(list)  # a memo filled while the graph is built: not an input


class Scale(TaskBase):
    def build_task(self, i: int) -> None:
        SEEN[i].append(i)
        self.i = i

    def run_task(self) -> list:
        log("Scale")
        return [PARAMS["scale"] * self.i, *LAYERS]


class Main(TaskBase):
    parts: RequiresList[list]

    def build_task(self) -> None:
        self.parts = [Scale(i) for i in range(int(os.environ.get("N", "2")))]

    def run_task(self) -> list:
        log("Main")
        return self.parts
"""


def test_a_config_loaded_at_import_counts_by_its_value(project: Project) -> None:
    # ``CONFIG = json.load(...)`` / ``yaml.safe_load(...)`` at module level: the statement
    # does not change when the file does, the value does.
    (project.dir / "params.json").write_text(json.dumps({"scale": 2, "layers": [1]}))
    project.module("tasks", CONFIG_AT_IMPORT, header=True)
    assert project.run("Main") == ([[0, 1], [2, 1]], ["Scale", "Scale", "Main"])
    # a memo filled differently (a bigger graph) changes nothing
    assert project.run("Main", N="3")[1] == ["Scale", "Main"]
    assert project.run("Main", N="1") == ([[0, 1]], ["Main"])
    assert project.run("Main") == ([[0, 1], [2, 1]], ["Main"])
    (project.dir / "params.json").write_text(json.dumps({"scale": 3, "layers": [1]}))
    assert project.run("Main") == ([[0, 1], [3, 1]], ["Scale", "Scale", "Main"])
    (project.dir / "params.json").write_text(json.dumps({"scale": 3, "layers": [1, 5]}))
    assert project.run("Main") == ([[0, 1, 5], [3, 1, 5]], ["Scale", "Scale", "Main"])
    assert project.run("Main")[1] == []


def test_a_class_attribute_set_after_the_class_body_counts(project: Project) -> None:
    project.module(
        "tasks",
        """
        class Factor(TaskBase):
            FACTOR = 1

            def run_task(self) -> int:
                log("Factor")
                return self.FACTOR


        Factor.FACTOR = int(os.environ.get("F", "1"))
        """,
        header=True,
    )
    assert project.run("Factor") == (1, ["Factor"])
    assert project.run("Factor", F="5") == (5, ["Factor"])
    assert project.run("Factor", F="5") == (5, [])


def test_weights_and_a_config_object_loaded_at_import_count_by_their_value(
    project: Project,
) -> None:
    np = pytest.importorskip("numpy")
    np.save(project.dir / "w.npy", np.arange(3))
    (project.dir / "params.json").write_text(json.dumps({"s": 2}))
    project.module(
        "tasks",
        """
        import json
        from pathlib import Path

        import numpy as np

        HERE = Path(__file__).parent


        class Config:
            def __init__(self, data: dict) -> None:
                self.s = data["s"]


        CONFIG = Config(json.loads((HERE / "params.json").read_text()))
        WEIGHTS = np.load(HERE / "w.npy")


        class Score(TaskBase):
            def run_task(self) -> int:
                log("Score")
                return CONFIG.s * int(WEIGHTS.sum())
        """,
        header=True,
    )
    assert project.run("Score") == (6, ["Score"])
    assert project.run("Score") == (6, [])
    (project.dir / "params.json").write_text(json.dumps({"s": 3}))
    assert project.run("Score") == (9, ["Score"])
    np.save(project.dir / "w.npy", np.arange(4))
    assert project.run("Score") == (18, ["Score"])
    assert project.run("Score") == (18, [])


def test_an_empty_folder_added_to_an_input_directory_is_new_content(project: Project) -> None:
    # a task listing a directory (one folder per run, per subject) sees an empty folder too
    (project.dir / "runs" / "a").mkdir(parents=True)
    (project.dir / "runs" / "a" / "x.txt").write_text("x")
    project.module(
        "tasks",
        """
        from pathlib import Path

        from pytest_taskproc import InputFile


        class Runs(TaskBase):
            runs: Requires[Path]

            def build_task(self) -> None:
                self.runs = InputFile("runs")

            def run_task(self) -> list:
                log("Runs")
                return sorted(p.name for p in self.runs.iterdir())
        """,
        header=True,
    )
    assert project.run("Runs") == (["a"], ["Runs"])
    (project.dir / "runs" / "b").mkdir()
    assert project.run("Runs") == (["a", "b"], ["Runs"])
    assert project.run("Runs") == (["a", "b"], [])


def test_a_linked_folder_inside_an_input_directory_counts_by_its_files(
    project: Project, tmp_path: Path
) -> None:
    # ``data/current -> /shared/runs/v1``: the task reads through the link
    for version in ("v1", "v2"):
        (tmp_path / "runs" / version).mkdir(parents=True)
        (tmp_path / "runs" / version / "f.txt").write_text(version)
    (project.dir / "data").mkdir()
    (project.dir / "data" / "current").symlink_to(tmp_path / "runs" / "v1")
    (project.dir / "data" / "loop").symlink_to(project.dir / "data")  # a cycle ends the walk
    project.module(
        "tasks",
        """
        from pathlib import Path

        from pytest_taskproc import InputFile


        class Current(TaskBase):
            data: Requires[Path]

            def build_task(self) -> None:
                self.data = InputFile("data")

            def run_task(self) -> str:
                log("Current")
                return (self.data / "current" / "f.txt").read_text()
        """,
        header=True,
    )
    assert project.run("Current") == ("v1", ["Current"])
    (tmp_path / "runs" / "v1" / "f.txt").write_text("v1 edited")
    assert project.run("Current") == ("v1 edited", ["Current"])
    (project.dir / "data" / "current").unlink()
    (project.dir / "data" / "current").symlink_to(tmp_path / "runs" / "v2")
    assert project.run("Current") == ("v2", ["Current"])
    assert project.run("Current") == ("v2", [])


def test_a_const_set_and_an_object_holding_one_have_one_digest_in_every_process(
    project: Project,
) -> None:
    project.module(
        "tasks",
        """
        class Vocabulary:
            def __init__(self, words: set) -> None:
                self.words = words


        class Count(TaskBase):
            words: Requires[set]
            vocabulary: Requires[Vocabulary]

            def build_task(self) -> None:
                self.words = Const({"alpha", "beta", "gamma", "delta", "epsilon"})
                self.vocabulary = Const(Vocabulary(set(os.environ["WORDS"].split())))

            def run_task(self) -> int:
                log("Count")
                return len(self.words) + len(self.vocabulary.words)
        """,
        header=True,
    )
    words = "a b c d e f g"
    assert project.run("Count", PYTHONHASHSEED="1", WORDS=words) == (12, ["Count"])
    assert project.run("Count", PYTHONHASHSEED="2", WORDS=words) == (12, [])
    assert project.run("Count", PYTHONHASHSEED="3", WORDS=words + " h") == (13, ["Count"])


def test_names_read_through_globals_count(project: Project) -> None:
    project.module(
        "tasks",
        """
        SCALE_fast = 2
        SCALE_slow = 3


        class Pick(TaskBase):
            def run_task(self) -> int:
                log("Pick")
                return globals()["SCALE_" + "fast"]
        """,
        header=True,
    )
    assert project.run("Pick") == (2, ["Pick"])
    project.edit("tasks", "SCALE_fast = 2", "SCALE_fast = 5")
    assert project.run("Pick") == (5, ["Pick"])
    assert project.run("Pick") == (5, [])


def test_a_written_file_damaged_in_the_cache_is_recomputed(project: Project) -> None:
    project.module(
        "tasks",
        """
        from pathlib import Path


        class Model(TaskBase):
            def run_task(self) -> str:
                log("Model")
                path = self.task_directory / "model.bin"
                path.write_text("weights")
                return str(path)


        class Use(TaskBase):
            model: Requires[str]

            def build_task(self) -> None:
                self.model = Model()

            def run_task(self) -> str:
                log("Use")
                return Path(self.model).read_text()
        """,
        header=True,
    )
    path, runs = project.run("Model")
    assert runs == ["Model"]
    Path(path).write_text("garbage!")  # another size: damage, not a touch
    assert project.run("Use") == ("weights", ["Model", "Use"])


def test_a_dict_argument_in_another_key_order_gives_what_its_own_run_would(
    project: Project,
) -> None:
    """Key order is part of a task's identity: each order is a task of its own."""
    project.module(
        "tasks",
        """
        import json


        class Stack(TaskBase):
            def build_task(self, layers: dict) -> None:
                self.names = list(layers)

            def run_task(self) -> list:
                log("Stack")
                return self.names


        class Main(TaskBase):
            part: Requires[list]

            def build_task(self) -> None:
                self.part = Stack(json.loads(os.environ["LAYERS"]))

            def run_task(self) -> list:
                return self.part
        """,
        header=True,
    )
    assert project.run("Main", LAYERS='{"a": 2, "b": 1}')[0] == ["a", "b"]
    assert project.run("Main", LAYERS='{"b": 1, "a": 2}')[0] == ["b", "a"]


def test_a_module_imported_by_a_constant_name_when_the_task_runs_is_followed(
    project: Project,
) -> None:
    # Plugin-style code: ``importlib.import_module("models.linear")`` inside run_task.
    (project.dir / "models").mkdir()
    (project.dir / "models" / "__init__.py").write_text("")
    (project.dir / "models" / "linear.py").write_text("def fit(x):\n    return x * 2\n")
    project.module(
        "tasks",
        """
        import importlib

        class Fit(TaskBase):
            def run_task(self) -> int:
                log("Fit")
                return importlib.import_module("models.linear").fit(21)
        """,
        header=True,
    )
    assert project.run("Fit") == (42, ["Fit"])
    assert project.run("Fit") == (42, [])
    (project.dir / "models" / "linear.py").write_text("def fit(x):\n    return x * 3\n")
    assert project.run("Fit") == (63, ["Fit"])


def test_a_module_imported_by_a_computed_name_is_named_in_a_warning(project: Project) -> None:
    """Its code cannot be known before the task runs: the user is told, once."""
    (project.dir / "model_linear.py").write_text("def fit(x):\n    return x * 2\n")
    project.module(
        "tasks",
        """
        import importlib

        KIND = "linear"

        class Fit(TaskBase):
            def run_task(self) -> int:
                log("Fit")
                return importlib.import_module(f"model_{KIND}").fit(21)
        """,
        header=True,
    )
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(project.dir), str(project.cache), "Fit"],
        capture_output=True,
        text=True,
        cwd=project.dir,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == 42
    assert done.stderr.count("CodeDigestWarning") == 1
    expected = "Fit (in tasks): tasks.Fit imports modules by a name computed when it runs"
    assert expected in done.stderr


@pytest.mark.parametrize(
    ("namespace", "old", "new", "expected"),
    [
        # sympy's lambdify and other code generators exec source in a dict of their own:
        # the function's __module__ is then None, or a name no loaded module has
        ("{'K': 1}", "x + K", "x + 2 * K", 3),
        ("{'__name__': 'made_by_a_generator', 'K': 1}", "x + K", "x + 2 * K", 3),
        # a value of that namespace the generated code reads
        ("{'K': 1}", "'K': 1", "'K': 4", 5),
    ],
)
def test_a_function_made_by_exec_in_a_namespace_of_its_own_counts_by_its_code(
    project: Project, namespace: str, old: str, new: str, expected: int
) -> None:
    project.module(
        "generated",
        f"""
        namespace = {namespace}
        exec("def shift(x):\\n    return x + K", namespace)
        shift = namespace["shift"]
        """,
    )
    project.module(
        "tasks",
        """
        from generated import shift

        class Shifted(TaskBase):
            def run_task(self) -> int:
                log("Shifted")
                return shift(1)
        """,
        header=True,
    )
    assert project.run("Shifted") == (2, ["Shifted"])
    assert project.run("Shifted") == (2, [])
    project.edit("generated", old, new)
    assert project.run("Shifted") == (expected, ["Shifted"])
    assert project.run("Shifted") == (expected, [])


def test_generated_functions_of_one_name_count_each(project: Project) -> None:
    # sympy's lambdify names every function it makes ``_lambdifygenerated``
    project.module(
        "generated",
        """
        def make(body):
            namespace = {}
            exec(f"def made(x):\\n    return {body}", namespace)
            return namespace["made"]

        first = make("x + 1")
        second = make("x * 10")
        """,
    )
    project.module(
        "tasks",
        """
        from generated import first, second

        class Both(TaskBase):
            def run_task(self) -> int:
                log("Both")
                return first(1) + second(1)
        """,
        header=True,
    )
    assert project.run("Both") == (12, ["Both"])
    project.edit("generated", '"x + 1"', '"x + 2"')
    assert project.run("Both") == (13, ["Both"])
    assert project.run("Both") == (13, [])


# -- registries: what decorators put in a container, anywhere in the project ----------------

REGISTRIES = {
    "a dict in another module": (
        "REG = {}\n\ndef register(fn):\n    REG[fn.__name__] = fn\n    return fn\n",
        "from registry import register\n\n@register\ndef linear():\n    return 1\n",
        "import models\nfrom registry import REG\n",
        "REG['linear']()",
    ),
    "a class attribute filled by a classmethod": (
        "class Models:\n    table = {}\n\n    @classmethod\n    def add(cls, fn):\n"
        "        cls.table[fn.__name__] = fn\n        return fn\n",
        "from registry import Models\n\n@Models.add\ndef linear():\n    return 1\n",
        "import models\nfrom registry import Models\n",
        "Models.table['linear']()",
    ),
    "subclasses kept by __init_subclass__": (
        "class Model:\n    kinds = {}\n\n    def __init_subclass__(cls):\n"
        "        Model.kinds[cls.__name__] = cls\n",
        "from registry import Model\n\nclass Linear(Model):\n    def fit(self):\n"
        "        return 1\n",
        "import models\nfrom registry import Model\n",
        "Model.kinds['Linear']().fit()",
    ),
    "a list appended to": (
        "MODELS = []\n",
        "from registry import MODELS\n\ndef linear():\n    return 1\n\nMODELS.append(linear)\n",
        "import models\nfrom registry import MODELS\n",
        "MODELS[0]()",
    ),
    "functools.singledispatch": (
        "import functools\n\n@functools.singledispatch\ndef fit(x):\n    return 0\n",
        "from registry import fit\n\n@fit.register(int)\ndef _(x):\n    return 1\n",
        "import models\nfrom registry import fit\n",
        "fit(5)",
    ),
}


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_what_a_registry_holds_counts_by_its_code(project: Project, kind: str) -> None:
    # ``@register_model`` in a models module fills a dict another module made empty:
    # no statement that mentions the dict says what it holds when the task runs.
    registry, models, imports, call = REGISTRIES[kind]
    project.module("registry", registry)
    project.module("models", models)
    project.module(
        "tasks",
        imports
        + textwrap.dedent(
            f"""
            class Fit(TaskBase):
                def run_task(self) -> int:
                    log("Fit")
                    return {call}
            """
        ),
        header=True,
    )
    assert project.run("Fit") == (1, ["Fit"])
    assert project.run("Fit") == (1, [])
    project.edit("models", "return 1", "return 2")
    assert project.run("Fit") == (2, ["Fit"])
    assert project.run("Fit") == (2, [])


def test_a_class_made_by_exec_counts_by_its_methods_code_in_every_process(
    project: Project,
) -> None:
    # no __name__ in the namespace: the class says it is of ``builtins``
    project.module(
        "generated",
        """
        namespace = {}
        exec("class Made:\\n    def value(self):\\n        return 1", namespace)
        Made = namespace["Made"]
        made = Made()
        """,
    )
    project.module(
        "tasks",
        """
        from generated import Made, made

        class Use(TaskBase):
            def run_task(self) -> int:
                log("Use")
                return Made().value() + made.value()
        """,
        header=True,
    )
    assert project.run("Use") == (2, ["Use"])
    assert project.run("Use") == (2, [])  # the same digest in a new process
    project.edit("generated", "return 1", "return 3")
    assert project.run("Use") == (6, ["Use"])
    assert project.run("Use") == (6, [])


EXTENSION_SOURCE = """
#include <Python.h>
static PyObject *scale(PyObject *self, PyObject *args) {
    long x;
    if (!PyArg_ParseTuple(args, "l", &x)) return NULL;
    return PyLong_FromLong(x * FACTOR);
}
static PyMethodDef methods[] = {{"scale", scale, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fastmath", NULL, -1, methods};
PyMODINIT_FUNC PyInit_fastmath(void) { return PyModule_Create(&module); }
"""


def _scaled_tasks(project: Project, use: str) -> None:
    """The task module: ``Scaled`` calls the extension, imported by ``use``."""
    call = "fastmath.scale(3)" if use.startswith("import") else "scale(3)"
    project.module(
        "tasks",
        f"""
        {use}

        class Scaled(TaskBase):
            def run_task(self) -> int:
                log("Scaled")
                return {call}
        """,
        header=True,
    )


def _build_extension(folder: Path, factor: int) -> None:
    """``fastmath``, built in place as ``setup.py build_ext --inplace`` would."""
    subprocess.run(_build_command(folder, factor), check=True, capture_output=True)


def _build_command(folder: Path, factor: int) -> list[str]:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build an extension module with")
    source = folder / "fastmath.c"
    source.write_text(EXTENSION_SOURCE)
    target = folder / f"fastmath{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    flags = ["-shared", "-fPIC", f"-DFACTOR={factor}", f"-I{include}"]
    return [compiler, *flags, str(source), "-o", str(target)]


@pytest.mark.parametrize("use", ["import fastmath", "from fastmath import scale"])
def test_an_extension_module_of_the_project_rebuilt_counts_by_its_bytes(
    project: Project, use: str
) -> None:
    # C, Cython or Rust code of the project, built in place: no Python source to read
    _scaled_tasks(project, use)
    _build_extension(project.dir, 2)
    assert project.run("Scaled") == (6, ["Scaled"])
    assert project.run("Scaled") == (6, [])
    _build_extension(project.dir, 5)
    assert project.run("Scaled") == (15, ["Scaled"])
    assert project.run("Scaled") == (15, [])


REBUILT_WHILE_LOADED = """
import json, subprocess, sys, warnings
sys.path.insert(0, sys.argv[1])
from pytest_taskproc import Context
Context.cache_dir = sys.argv[2]
import tasks  # loads the extension as built first
subprocess.run(json.loads(sys.argv[3]), check=True)  # rebuilt while this process runs
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    value = tasks.Scaled().run_graph(max_workers=1)
print(json.dumps([value, [type(w.message).__name__ for w in caught]]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_an_extension_rebuilt_under_a_running_process_is_not_recorded_as_the_new_build(
    project: Project,
) -> None:
    # A notebook imported the extension, then it was rebuilt: the process runs the old
    # build, so its value must not be recorded under the digest of the new file.
    _scaled_tasks(project, "import fastmath")
    _build_extension(project.dir, 2)
    rebuild = json.dumps(_build_command(project.dir, 5))
    args = [str(project.dir), str(project.cache), rebuild]
    done = subprocess.run(
        [sys.executable, "-c", REBUILT_WHILE_LOADED, *args],
        capture_output=True,
        text=True,
        cwd=project.dir,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [6, ["SourceEditedWarning"]]
    assert project.run("Scaled") == (15, ["Scaled"])


LAYOUTS = """
class Leaf(TaskBase):
    def build_task(self, i: int) -> None:
        self.i = i

    def run_task(self) -> dict:
        return {"a": self.i, "b": -self.i}


class InOrder(TaskBase):
    parts: RequiresList[dict]

    def build_task(self) -> None:
        self.parts = [Leaf(int(c)) for c in os.environ["ORDER"]]

    def run_task(self) -> str:
        log("InOrder")
        return "".join(str(p["a"]) for p in self.parts)


class ByKey(TaskBase):
    parts: RequiresDict[str, dict]

    def build_task(self) -> None:
        self.parts = {c: Leaf(int(c)) for c in os.environ["ORDER"]}

    def run_task(self) -> str:
        log("ByKey")
        return "".join(self.parts)


class Item(TaskBase):
    x: Requires[int]

    def build_task(self) -> None:
        self.x = Leaf(1)[os.environ["ITEM"]]

    def run_task(self) -> int:
        log("Item")
        return self.x


class Swapped(TaskBase):
    first: Requires[dict]
    second: Requires[dict]

    def build_task(self) -> None:
        one, two = Leaf(1), Leaf(2)
        self.first, self.second = (one, two) if os.environ["ORDER"] == "12" else (two, one)

    def run_task(self) -> str:
        log("Swapped")
        return f"{self.first['a']}{self.second['a']}"
"""


@pytest.mark.parametrize(
    ("root", "before", "after"),
    [
        ("InOrder", ("12", "12"), ("21", "21")),
        ("ByKey", ("12", "12"), ("21", "21")),
        ("Item", ("a", 1), ("b", -1)),
        ("Swapped", ("12", "12"), ("21", "21")),
    ],
)
def test_the_same_upstream_tasks_in_other_places_make_a_task_stale(
    project: Project, root: str, before: tuple[str, Any], after: tuple[str, Any]
) -> None:
    # build_task reads an order or a key from outside the code (a config file, the
    # environment): the set of upstream tasks stays the same, what run_task gets does not
    project.module("tasks", LAYOUTS, header=True)
    env = "ITEM" if root == "Item" else "ORDER"
    assert project.run(root, **{env: before[0]})[0] == before[1]
    assert project.run(root, **{env: before[0]}) == (before[1], [])
    assert project.run(root, **{env: after[0]}) == (after[1], [root])
    assert project.run(root, **{env: after[0]}) == (after[1], [])


MODELS = """
class Model:
    def __init__(self, w):
        self.w = w

    def predict(self, x):
        return self.w * x


def double(x):
    return 2 * x


def unrelated():
    return 1
"""

#: how the producing task reaches what its value names
PRODUCERS = {
    # by an import: the producer's own code digest covers the class
    "instance": "from models import Model\nreturn Model(2)",
    "function": "from models import double\nreturn double",
    # by a name in a config (as hydra's ``instantiate`` does): the producer's code
    # digest cannot see the class, only the value's record can
    "instance by config name": (
        "import importlib\n"
        "module, name = 'models:Model'.split(':')\n"
        "return getattr(importlib.import_module(module), name)(2)"
    ),
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kind", PRODUCERS)
def test_a_value_naming_user_code_is_new_when_that_code_changes(
    project: Project, kind: str
) -> None:
    # A fitted model of the project's own class: the pickle names the class, so its
    # bytes stay the same when ``predict`` is edited, and early cutoff kept serving
    # the prediction the old code made.
    project.module("models", MODELS)
    use = "self.fit(10)" if kind == "function" else "self.fit.predict(10)"
    produce = PRODUCERS[kind].replace("\n", "\n" + " " * 16)
    project.module(
        "tasks",
        f"""
        class Fit(TaskBase):
            def run_task(self) -> object:
                log("Fit")
                {produce}

        class Score(TaskBase):
            fit: Requires[object]

            def build_task(self) -> None:
                self.fit = Fit()

            def run_task(self) -> int:
                log("Score")
                return {use}
        """,
        header=True,
    )
    assert project.run("Score") == (20, ["Fit", "Score"])
    assert project.run("Score") == (20, [])
    project.edit("models", "def unrelated():\n    return 1", "def unrelated():\n    return 2")
    assert project.run("Score") == (20, [])  # code the value does not reach
    project.edit("models", "self.w * x", "self.w * x + 1")
    project.edit("models", "2 * x", "2 * x + 1")
    assert project.run("Score") == (21, ["Fit", "Score"])
    assert project.run("Score") == (21, [])
    fit = project.cache / "taskproc" / "tasks.Fit"
    record = json.loads(next(fit.rglob("record.json")).read_text())
    named = "models:double" if kind == "function" else "models:Model"
    assert list(record["value"]["code"]) == [named]


AUTORELOADED = """
import json, pathlib, sys, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("ignore")
from pytest_taskproc import Context
Context.cache_dir = sys.argv[2]
import helpers, tasks
{reloader}
values = [tasks.Main().run_graph(max_workers=1)]
path = pathlib.Path(sys.argv[1], sys.argv[3])
path.write_text(path.read_text().replace(sys.argv[4], sys.argv[5]))
{reload}
values += [tasks.Main().run_graph(max_workers=1), tasks.Main().run_graph(max_workers=1)]
print(json.dumps(values))
"""

RELOADERS = {
    # IPython's classic %autoreload: the module runs again, old functions get the new code
    "superreload": (
        "IPython.extensions.autoreload",
        "from IPython.extensions.autoreload import superreload",
        "superreload(sys.modules[path.stem], old_objects={})",
    ),
    # IPython 9's: each edited function is compiled alone and patched in place
    "deduperreload": (
        "IPython.extensions.deduperreload.deduperreload",
        "from IPython.extensions.deduperreload.deduperreload import DeduperReloader\n"
        "reloader = DeduperReloader()\n"
        "reloader.maybe_reload_module(helpers)\n"
        "reloader.maybe_reload_module(tasks)",
        "assert reloader.maybe_reload_module(sys.modules[path.stem])",
    ),
}


@pytest.mark.parametrize("edited", ["helpers", "tasks"])
@pytest.mark.parametrize("reloader", RELOADERS)
def test_code_an_autoreloader_patched_in_place_is_not_served_from_the_old_results(
    project: Project, reloader: str, edited: str
) -> None:
    # %autoreload swaps the code of the function objects the process holds: the code
    # digest kept for the class saw the same objects and served what the old code made
    module, setup, reload = RELOADERS[reloader]
    pytest.importorskip(module)
    project.module("helpers", "def scale(x):\n    return x * 2\n")
    project.module(
        "tasks",
        """
        import helpers
        from helpers import scale

        class Main(TaskBase):
            def run_task(self) -> int:
                log("Main")
                return scale(10) + helpers.scale(1)
        """,
        header=True,
    )
    old, new = ("x * 2", "x * 3") if edited == "helpers" else ("scale(10)", "scale(100)")
    script = AUTORELOADED.format(reloader=setup, reload=reload)
    (first, *after), runs = project.script(script, f"{edited}.py", old, new)
    expected = 33 if edited == "helpers" else 202
    assert (first, after, runs) == (22, [expected, expected], ["Main", "Main"])
    # a module run again is digested by its text, as a new process does; a method
    # compiled alone matches no text, so its results are recorded as made by unknown code
    patched_alone = reloader == "deduperreload" and edited == "tasks"
    # a new process agrees: the same digest, or none known (patched code) and computed once
    assert project.run("Main") == (expected, ["Main"] if patched_alone else [])
    assert project.run("Main") == (expected, [])


OVERRIDES = {
    "item": ("config.SETTINGS['lr'] = 2", "config.SETTINGS['lr']", "= 2", "= 3"),
    "attribute": ("config.LR = 2", "config.LR", "= 2", "= 3"),
    "call": ("config.SETTINGS.update(lr=2)", "config.SETTINGS['lr']", "lr=2", "lr=3"),
}


@pytest.mark.parametrize("kind", OVERRIDES)
def test_a_module_changed_by_the_statements_of_the_task_module_counts_them(
    project: Project, kind: str
) -> None:
    # An experiment file overriding a shared config module below ``import config``:
    # what ``config.SETTINGS`` holds is set by a statement ``config`` does not have
    override, read, old, new = OVERRIDES[kind]
    project.module("config", "SETTINGS = {'lr': 1}\nLR = 1\n")
    project.module(
        "tasks",
        f"""
        import config
        {override}
        unrelated = config.LR * 10  # reads it, changes nothing

        class Score(TaskBase):
            def run_task(self) -> int:
                log("Score")
                return {read}
        """,
        header=True,
    )
    assert project.run("Score") == (2, ["Score"])
    assert project.run("Score") == (2, [])
    project.edit("tasks", "config.LR * 10", "config.LR * 20")
    assert project.run("Score") == (2, [])
    project.edit("tasks", old, new)
    assert project.run("Score") == (3, ["Score"])
    assert project.run("Score") == (3, [])


DATACLASSES = """
import dataclasses


@dataclasses.dataclass(frozen=True)
class Result:
    score: float
    params: tuple = ()

    def best(self) -> float:
        return self.score * 2
"""


def test_a_dataclass_of_the_project_is_digested_by_its_text_and_cached(
    project: Project,
) -> None:
    # A dataclass's generated __init__/__eq__ are compiled from strings and its __repr__
    # wrapper comes from the standard library: none of them is in the class's file, which
    # made its code count as unknown (recomputed by every process, with a false warning)
    project.module("results", DATACLASSES)
    project.module(
        "tasks",
        """
        from results import Result

        class Fit(TaskBase):
            def run_task(self) -> Result:
                log("Fit")
                return Result(1.5)

        class Report(TaskBase):
            fit: Requires[Result]

            def build_task(self) -> None:
                self.fit = Fit()

            def run_task(self) -> float:
                log("Report")
                return self.fit.best()
        """,
        header=True,
    )
    assert project.run("Report", PYTHONWARNINGS="error") == (3.0, ["Fit", "Report"])
    assert project.run("Report", PYTHONWARNINGS="error") == (3.0, [])
    project.edit("results", "self.score * 2", "self.score * 4")
    assert project.run("Report", PYTHONWARNINGS="error") == (6.0, ["Fit", "Report"])
    assert project.run("Report", PYTHONWARNINGS="error") == (6.0, [])


CODEC = """
import codecs


def _encode(text, errors="strict"):
    return (text.upper(), len(text))


def _search(name):
    if name == "shout":
        return codecs.CodecInfo(_encode, lambda b, errors="strict": (b, len(b)), name="shout")


codecs.register(_search)
"""

SIDE_EFFECT_IMPORTS = {
    "import": "import mycodec  # noqa: F401 - registers the codec",
    "from import": "from mycodec import _search  # noqa: F401 - registers the codec",
    "guarded": "try:\n    import mycodec  # noqa: F401\nexcept ImportError:\n    pass",
}


@pytest.mark.parametrize("kind", SIDE_EFFECT_IMPORTS)
def test_a_module_imported_for_what_importing_it_does_counts_whole(
    project: Project, kind: str
) -> None:
    # A registry of an installed package (or the standard library's codecs) filled by a
    # module of the project that the task's module imports and never names again: no
    # name the code reads leads to the function the registry calls.
    project.module("mycodec", CODEC)
    project.module("unrelated", "def other():\n    return 1\n")
    project.module(
        "tasks",
        "import codecs\n\nimport unrelated\n"
        + SIDE_EFFECT_IMPORTS[kind]
        + """

class Shout(TaskBase):
    def run_task(self) -> str:
        log("Shout")
        return codecs.encode("abc", "shout")


def not_the_task() -> int:
    return unrelated.other()
""",
        header=True,
    )
    assert project.run("Shout") == ("ABC", ["Shout"])
    assert project.run("Shout") == ("ABC", [])
    project.edit("unrelated", "return 1", "return 2")  # imported and used: not by the task
    assert project.run("Shout") == ("ABC", [])
    project.edit("mycodec", "text.upper()", "text.upper() + '!'")
    assert project.run("Shout") == ("ABC!", ["Shout"])
    assert project.run("Shout") == ("ABC!", [])


INTERACTIVE = """
import json, sys
from pytest_taskproc import Context, TaskBase
Context.cache_dir = sys.argv[2]
LOG = sys.argv[1] + "/../run.log"

params = {"lr": 1}
seen = {}  # a memo the task itself fills


def helper(x):
    seen[x] = len(seen)
    return params["lr"] * x


class Main(TaskBase):
    def run_task(self) -> int:
        with open(LOG, "a") as log:
            log.write("Main\\n")
        return helper(10)


values = [Main().run_graph(executor=None)]
values.append(Main().run_graph(executor=None))  # the memo the run filled is no edit
params["lr"] = 2  # a notebook cell changing a dict in place
values.append(Main().run_graph(executor=None))
values.append(Main().run_graph(executor=None))
params["lr"] = 1
values.append(Main().run_graph(executor=None))
print(json.dumps(values))
"""


def test_a_notebook_value_changed_in_place_between_runs_is_an_edit(project: Project) -> None:
    # Code without a source file (a notebook, ``python -c``) counts by the values its
    # globals hold; ``params["lr"] = 2`` keeps the object, so the digest kept for the class
    # stayed valid and served what lr=1 made
    values, runs = project.script(INTERACTIVE)
    assert (values, runs) == ([10, 10, 20, 20, 10], ["Main", "Main", "Main"])


CHANGED_FROM_OUTSIDE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pytest_taskproc import Context
Context.cache_dir = sys.argv[2]
import config, tasks

values = []
if sys.argv[3] == "before":
    config.PARAMS["lr"] = 5  # changed before the first run of the process
    values.append(tasks.Train().run_graph(executor=None))
else:
    values.append(tasks.Train().run_graph(executor=None))
    config.PARAMS["lr"] = 2  # a notebook cell, changing the dict in place
    values.append(tasks.Train().run_graph(executor=None))
    values.append(tasks.Train().run_graph(executor=None))
    config.PARAMS = {"lr": 3}  # or assigning another one
    values.append(tasks.Train().run_graph(executor=None))
    config.PARAMS["lr"] = 1  # back to what the file says
    values.append(tasks.Train().run_graph(executor=None))
print(json.dumps(values))
"""


def test_a_module_config_changed_from_outside_while_the_process_runs_is_an_edit(
    project: Project,
) -> None:
    # ``PARAMS = {"lr": 1}`` counts by its statement; a notebook cell changing it in place
    # (or assigning another dict) changed what the task computes and no statement
    project.module("config", "PARAMS = {'lr': 1}\nLR = PARAMS['lr']\nMEMO = {}\n")
    project.module(
        "tasks",
        """
        import config

        class Train(TaskBase):
            def run_task(self) -> int:
                log("Train")
                config.MEMO[len(config.MEMO)] = 1  # a memo it fills: no edit
                return config.PARAMS["lr"] * 10
        """,
        header=True,
    )
    values, runs = project.script(CHANGED_FROM_OUTSIDE, "after")
    assert (values, runs) == ([10, 20, 20, 30, 10], ["Train"] * 4)
    assert project.run("Train") == (10, [])  # a new process makes it as the file says
    assert project.script(CHANGED_FROM_OUTSIDE, "before") == ([50], ["Train"])
    assert project.run("Train") == (10, ["Train"])
    assert project.run("Train") == (10, [])
