"""Option values of a ``--taskproc`` run: parsed, validated, and kept as one frozen object.

Every other module of the plugin reads the run's settings from
:data:`OPTIONS` in ``config.stash``, never from ``config.option`` directly.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

GRAPH_SUFFIXES = (".md", ".mmd", ".dot")


@dataclass(frozen=True)
class Options:
    """What one pytest process of a ``--taskproc`` run was asked to do."""

    cache_root: Path
    rate_limits: dict[str, int] = field(default_factory=dict)
    #: ``process[:N]``, ``thread[:N]`` or ``dask[:ADDRESS]``; None computes in this process
    executor: str | None = None
    clear: bool = False
    detect_source_change: bool = True
    #: where to write the graph (``--taskproc-graph``), as given
    graph: str | None = None
    #: where the reporting process writes the run's manifest (``--taskproc-manifest``)
    manifest: Path | None = None
    #: recompute the selected cached tasks and compare (``--taskproc-verify``)
    verify: bool = False
    #: ``-s``: a task's prints also reach the terminal
    echo: bool = False
    #: warn about undeclared reads (not ``--taskproc-no-read-audit``)
    audit_reads: bool = True
    collect_only: bool = False
    #: the run this process belongs to: shared by the xdist controller and its workers
    run_id: str = ""
    started_ns: int = 0
    #: the xdist worker id (``gw0``), None outside xdist workers
    worker_id: str | None = None
    #: the xdist controller only distributes and reports; it collects and runs nothing
    controller: bool = False
    #: task statuses as JUnit XML properties (only ``xunit1`` allows them per testcase)
    junit_properties: bool = False

    @property
    def run_dir(self) -> Path:
        """Scratch files of this run, shared by its xdist workers; removed at the end."""
        return self.cache_root / "taskproc" / ".runs" / self.run_id

    @property
    def failure_dir(self) -> Path:
        """Where this run records failed tasks (see ``worker.failure_marker``)."""
        return self.run_dir / "failed"

    def run_info(self) -> dict[str, Any]:
        """What an xdist worker needs to join this run."""
        return {"run_id": self.run_id, "started_ns": self.started_ns}


OPTIONS = pytest.StashKey[Options]()


#: Command-line options that mean nothing without a run, so each implies ``--taskproc``
#: (their ini counterparts do not: an ini file must not turn the plugin on by itself).
IMPLYING_TASKPROC = (
    "taskproc_clear",
    "taskproc_verify",
    "taskproc_manifest",
    "taskproc_executor",
    "taskproc_graph",
    "taskproc_prune",
)


def is_enabled(config: pytest.Config) -> bool:
    """``--taskproc``, or an option that needs a run (a CI step must never pass doing nothing)."""
    if config.getoption("taskproc"):
        return True
    return any(config.getoption(name, None) not in (None, False) for name in IMPLYING_TASKPROC)


# -- parsing ---------------------------------------------------------------------------
def parse_rate_limits(text: str, source: str = "--taskproc-rate-limits") -> dict[str, int]:
    """A JSON object of channel -> positive int (``--taskproc-rate-limits``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise pytest.UsageError(f"{source}: not valid JSON ({exc}): {text!r}") from None
    return _check_rate_limits(value, source, text)


def _check_rate_limits(value: Any, source: str, shown: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 1 for k, v in value.items()
    ):
        raise pytest.UsageError(
            f"{source}: expected a JSON object mapping channel names to ints >= 1, "
            f"e.g. '{{\"<gpu>\": 1}}', not {shown!r}"
        )
    return value


def ini_rate_limits(config: pytest.Config) -> dict[str, int] | None:
    """The ini option ``taskproc_rate_limits``: JSON text, or a TOML table in pyproject.toml.

    A ``[tool.pytest.ini_options]`` table reaches plugins as the text of a
    Python dict (pytest turns every non-list TOML value into ``str(value)``);
    pytest's native ``[tool.pytest]`` table may hand over the dict itself.
    """
    raw: Any = config.getini("taskproc_rate_limits")
    source = "ini option taskproc_rate_limits"
    if isinstance(raw, dict):
        return _check_rate_limits(raw, source, raw)
    if not raw:
        return None
    text = str(raw).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        import ast

        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise pytest.UsageError(
                f'{source}: expected JSON such as {{"<gpu>": 1}} (or, in pyproject.toml, '
                f'a table such as {{"<gpu>" = 1}}), not {text!r}'
            ) from None
    return _check_rate_limits(value, source, text)


def parse_executor(text: str, source: str = "--taskproc-executor") -> str:
    from ..executors import check_spec

    try:
        return check_spec(text.strip())
    except ValueError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


def parse_graph_path(text: str) -> str:
    if Path(text).suffix not in GRAPH_SUFFIXES:
        raise pytest.UsageError(
            f"--taskproc-graph: {text!r} must end in .md or .mmd (Mermaid) or .dot (Graphviz)"
        )
    return text


def check_options(config: pytest.Config) -> None:
    """Validate the option values in place, raising one ``UsageError`` for a bad one.

    This is not done by argparse ``type=`` functions: on pytest 7.4 an error
    raised there passes through pytest's own old-style hook wrappers and
    pluggy adds a ``PluggyTeardownRaisedWarning`` to the one-line message.
    Parsing is idempotent, for xdist workers that receive parsed values.
    """
    option = config.option
    limits = getattr(option, "taskproc_rate_limits", None)
    if isinstance(limits, str):
        option.taskproc_rate_limits = parse_rate_limits(limits)
    elif limits is not None:
        _check_rate_limits(limits, "--taskproc-rate-limits", limits)
    if getattr(option, "taskproc_executor", None) is not None:
        option.taskproc_executor = parse_executor(str(option.taskproc_executor))
    if getattr(option, "taskproc_graph", None) is not None:
        option.taskproc_graph = parse_graph_path(str(option.taskproc_graph))


def resolve_cache_root(config: pytest.Config) -> Path:
    chosen = config.getoption("taskproc_cache_dir")
    base = Path(config.invocation_params.dir)
    if not chosen:
        chosen = config.getini("taskproc_cache_dir")
        # Relative to rootdir, like pytest's own cache_dir: running from a
        # subdirectory must find the same cache.
        base = config.rootpath
    if chosen:
        return (base / Path(chosen)).resolve()
    env = os.environ.get("CP_CACHE_DIR")
    if env:
        return Path(env).resolve()
    return Path(config.rootpath, ".cache")


def _check_cache_root(root: Path) -> None:
    """A cache that cannot be written is a usage error, unless it has results to read.

    A read-only cache of finished results serves a fully cached run (reading
    writes nothing); a task that must be computed there fails naming the path.
    """
    import os

    if (root / "taskproc").is_dir() and os.access(root / "taskproc", os.R_OK | os.X_OK):
        return
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise pytest.UsageError(f"--taskproc-cache-dir: cannot write to {probe} (for cache {root})")


def _manifest(config: pytest.Config) -> Path | None:
    """Where the manifest goes, made absolute.

    The option is relative to the invocation directory, as ``--junitxml``; the
    ini option to the rootdir, as ``taskproc_cache_dir``.
    """
    chosen = config.getoption("taskproc_manifest")
    if chosen:
        return Path(config.invocation_params.dir, chosen).resolve()
    text = str(config.getini("taskproc_manifest") or "").strip()
    return (config.rootpath / text).resolve() if text else None


def _executor(config: pytest.Config) -> str | None:
    chosen = config.getoption("taskproc_executor")
    if chosen is not None:
        return str(chosen)
    text = str(config.getini("taskproc_executor") or "").strip()
    return parse_executor(text, "ini option taskproc_executor") if text else None


def is_xdist_controller(config: pytest.Config) -> bool:
    """The xdist controller only distributes and reports; it collects and runs nothing."""
    if hasattr(config, "workerinput") or config.getoption("collectonly"):
        return False  # xdist stands aside for --collect-only: this process collects
    dist = getattr(config.option, "dist", "no")
    return dist != "no" and bool(getattr(config.option, "tx", None))


def read_options(config: pytest.Config) -> Options:
    """The run's options, checked; raises ``pytest.UsageError`` for a bad value."""
    limits = config.getoption("taskproc_rate_limits")
    if limits is None:
        limits = ini_rate_limits(config)
    root = resolve_cache_root(config)
    _check_cache_root(root)
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    info = workerinput.get("taskproc_run")
    return Options(
        cache_root=root,
        rate_limits=dict(limits or {}),
        executor=_executor(config),
        clear=bool(config.getoption("taskproc_clear")),
        detect_source_change=not config.getoption("taskproc_no_source_check"),
        graph=config.getoption("taskproc_graph"),
        manifest=_manifest(config),
        verify=bool(config.getoption("taskproc_verify")),
        echo=config.getoption("capture") == "no",
        audit_reads=not config.getoption("taskproc_no_read_audit"),
        collect_only=bool(config.getoption("collectonly")),
        run_id=info["run_id"] if info else uuid.uuid4().hex,
        started_ns=info["started_ns"] if info else time.time_ns(),
        worker_id=workerinput.get("workerid"),
        controller=is_xdist_controller(config),
        junit_properties=str(config.getini("junit_family")) in ("xunit1", "legacy"),
    )


def default_junit_output(config: pytest.Config) -> None:
    """Put each task's captured output into JUnit XML unless the user chose otherwise.

    pytest leaves report sections out of the XML by default
    (``junit_logging = no``); for task items the output is the point, so a
    ``--taskproc`` run defaults to ``system-out``.  pytest offers no public way
    to change an ini default, hence the guarded use of its ini cache.
    """
    overrides = config.getoption("override_ini", None) or []
    if any(o.split("=", 1)[0].strip() == "junit_logging" for o in overrides):
        return
    configured = getattr(config, "_inicfg", None)
    if configured is None:
        configured = getattr(config, "inicfg", {})
    if "junit_logging" in configured:
        return
    cache = getattr(config, "_inicache", None)
    if isinstance(cache, dict):
        cache["junit_logging"] = "system-out"
