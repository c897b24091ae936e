"""Write docs/reference.md, the API reference, from the package's docstrings.

    python docs/make_reference.py          # rewrite docs/reference.md
    python docs/make_reference.py --check  # exit 1 if docs/reference.md is out of date

It documents the public names of ``pytest_taskproc`` (``__all__``), every
exception of ``pytest_taskproc.errors``, the public functions of
``pytest_taskproc.provenance`` and ``pytest_taskproc.compare``, the plugin's
options and ini settings as ``pytest_addoption`` declares them, and the
options of ``python -m pytest_taskproc.app`` and of the cache tool
``taskproc-cache``. The output depends only on the source, never on the
Python version or the terminal, so that the check is
the same everywhere (``tests/test_docs.py`` runs it).
"""

from __future__ import annotations

import argparse
import enum
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "reference.md"

#: generic aliases carry no docstring of their own
ALIASES = {
    "Requires": "`Requires[T]`: a requirement slot holding one task, `task['key']`, "
    "`Const(value)` or input of result type `T` (`InputFile(path)` for a `Requires[Path]`); "
    "inside `run_task` the attribute is the upstream result (a `T`).",
    "RequiresList": "`RequiresList[T]`: a slot holding a list of those; inside `run_task`, "
    "a `list[T]` of the upstream results.",
    "RequiresDict": "`RequiresDict[K, T]`: a slot holding a dict of those; inside "
    "`run_task`, a `dict[K, T]` of the upstream results.",
    "Task": "`Task[T]`: the type of a task (or `task['key']`) whose result is a `T`, for "
    "annotations.",
}
#: the order of the package's names; names not listed come after them, sorted
ORDER = [
    "TaskBase",
    "Requires",
    "RequiresList",
    "RequiresDict",
    "Req",
    "Const",
    "InputFile",
    "Task",
    "TaskType",
    "infer_task_type",
    "Context",
]


def doc(obj: Any) -> str:
    text = inspect.getdoc(obj)
    return text.strip() if text else "(no docstring)"


def annotation(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return ""
    return value if isinstance(value, str) else inspect.formatannotation(value)


def signature(func: Callable[..., Any], skip_first: bool = False) -> str:
    """The signature as written, annotations as strings (the same on every Python)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return "(...)"
    parts: list[str] = []
    params = list(sig.parameters.values())[1 if skip_first else 0 :]
    star_done = False
    for i, param in enumerate(params):
        if param.kind is param.KEYWORD_ONLY and not star_done:
            if not any(p.kind is p.VAR_POSITIONAL for p in params[:i]):
                parts.append("*")
            star_done = True
        if param.kind is param.VAR_POSITIONAL:
            star_done = True
        prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(param.kind.name, "")
        text = prefix + param.name
        if param.annotation is not inspect.Parameter.empty:
            text += f": {annotation(param.annotation)}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {param.default!r}" if ":" in text else f"={param.default!r}"
        parts.append(text)
        if param.kind is param.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not param.POSITIONAL_ONLY
        ):
            parts.append("/")
    returns = annotation(sig.return_annotation)
    return f"({', '.join(parts)})" + (f" -> {returns}" if returns else "")


#: members already shown (under a subclass): a base class lists only what is new
_SHOWN: set[int] = set()


def members(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods and properties, the class's own first, then its bases' in the package."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("pytest_taskproc"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen or id(value) in _SHOWN:
                continue
            if isinstance(value, (property, classmethod, staticmethod)) or inspect.isfunction(
                value
            ):
                seen.add(name)
                _SHOWN.add(id(value))
                yield name, value


def describe_member(owner: str, name: str, value: Any) -> list[str]:
    if isinstance(value, property):
        head = f"`{owner}.{name}` (property)"
        body = doc(value.fget)
    else:
        func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        kind = " (class method)" if isinstance(value, classmethod) else ""
        head = f"`{owner}.{name}{signature(func, skip_first=not isinstance(value, staticmethod))}`"
        head += kind
        body = doc(func)
    return [f"- {head}: " + indent_rest(body), ""]


def indent_rest(text: str) -> str:
    first, *rest = text.split("\n")
    return "\n".join([first, *(f"  {line}" if line else "" for line in rest)])


def describe_class(name: str, cls: type, heading: str = "###") -> list[str]:
    bases = [b.__name__ for b in cls.__bases__ if b not in (object, Generic)]
    init = "" if issubclass(cls, BaseException) or not _own_init(cls) else signature(cls)
    init = init.removesuffix(" -> None")
    title = f"{heading} `{name}{init}`" + (f" ({', '.join(bases)})" if bases else "")
    out = [title, "", doc(cls), ""]
    if issubclass(cls, enum.Enum):
        out += [", ".join(f"`{m.name}` (`{m.value!r}`)" for m in cls), ""]
        return out
    if issubclass(cls, BaseException):
        return out
    for member, value in members(cls):
        out += describe_member(name, member, value)
    return out


def _own_init(cls: type) -> bool:
    """Whether the package defines the constructor (a task's is its ``build_task``)."""
    if any(k.__name__ == "TaskType" for k in cls.__mro__):
        return False
    return any(
        "__init__" in vars(k) for k in cls.__mro__ if k.__module__.startswith("pytest_taskproc")
    )


def describe_function(name: str, func: Callable[..., Any], heading: str = "###") -> list[str]:
    return [f"{heading} `{name}{signature(func)}`", "", doc(func), ""]


def describe(name: str, obj: Any) -> list[str]:
    if name in ALIASES:
        return [f"### `{name}`", "", ALIASES[name], ""]
    if inspect.isclass(obj):
        return describe_class(name, obj)
    if callable(obj):
        return describe_function(name, obj)
    return [f"### `{name}`", "", doc(obj), ""]


class _OptionRecorder:
    """Stands in for pytest's parser: records what ``pytest_addoption`` declares."""

    def __init__(self) -> None:
        self.groups: list[tuple[str, list[tuple[list[str], dict[str, Any]]]]] = []
        self.ini: list[tuple[str, str, dict[str, Any]]] = []

    def getgroup(self, name: str, description: str = "") -> _OptionRecorder._Group:
        options: list[tuple[list[str], dict[str, Any]]] = []
        self.groups.append((description or name, options))
        return self._Group(options)

    class _Group:
        def __init__(self, options: list[tuple[list[str], dict[str, Any]]]) -> None:
            self.options = options

        def addoption(self, *names: str, **attrs: Any) -> None:
            self.options.append((list(names), attrs))

    def addoption(self, *names: str, **attrs: Any) -> None:
        self.getgroup("general").addoption(*names, **attrs)

    def addini(self, name: str, help: str, type: str | None = None, default: Any = None) -> None:
        self.ini.append((name, help, {"type": type, "default": default}))


def cell(text: str) -> str:
    """Help text as one Markdown table cell (``<rootdir>`` is not an HTML tag)."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plugin_options() -> list[str]:
    plugin = importlib.import_module("pytest_taskproc.plugin")
    recorder = _OptionRecorder()
    plugin.pytest_addoption(recorder)
    out = [
        "## The pytest plugin's options",
        "",
        "As `pytest_addoption` declares them; `pytest --help` lists them under the group",
        "title shown. See [the plugin](plugin.md) for what they do together.",
        "",
    ]
    for title, options in recorder.groups:
        out += [f"`pytest --help` group: `{title}:`", "", "| option | meaning |", "| --- | --- |"]
        for names, attrs in options:
            metavar = attrs.get("metavar")
            shown = ", ".join(f"`{n}={metavar}`" if metavar else f"`{n}`" for n in names)
            out.append(f"| {shown} | {cell(attrs.get('help', ''))} |")
        out.append("")
    out += ["Ini settings (`pytest.ini`, `[tool.pytest.ini_options]`, ...):", ""]
    out += ["| ini setting | meaning | default |", "| --- | --- | --- |"]
    for name, text, attrs in recorder.ini:
        default = attrs["default"]
        default_text = " ".join(default) if isinstance(default, list) else default
        out.append(f"| `{name}` | {cell(text)} | {f'`{default_text}`' if default_text else ''} |")
    return [*out, ""]


def argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | meaning |", "| --- | --- |"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            metavar = action.metavar or (
                "{" + ",".join(action.choices) + "}"
                if action.choices
                else action.dest.upper()
                if action.nargs != 0
                else ""
            )
            names = ", ".join(action.option_strings)
            shown = f"`{names} {metavar}`" if metavar else f"`{names}`"
        else:
            shown = f"`{action.metavar or action.dest}`"
        shown = shown.replace("|", "\\|")  # a pipe would end the table cell
        rows.append(f"| {shown} | {cell(action.help or '')} |")
    return rows


def command_line(title: str, parser: argparse.ArgumentParser) -> list[str]:
    out = [f"## `{parser.prog}`", "", title, "", parser.description or "", ""]
    out += [*argument_rows(parser), ""]
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            out += [f"### `{parser.prog} {name}`", "", cell(helps.get(name, "")), ""]
            rows = argument_rows(sub)
            out += [*(rows if len(rows) > 2 else ["No arguments."]), ""]
    return out


def render() -> str:
    _SHOWN.clear()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    package = importlib.import_module("pytest_taskproc")
    names = [n for n in package.__all__ if n != "__version__"]
    errors = importlib.import_module("pytest_taskproc.errors")
    error_names = [
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and value.__module__ == errors.__name__ and name[0] != "_"
    ]
    public = [n for n in ORDER if n in names] + sorted(
        n for n in names if n not in ORDER and n not in error_names
    )
    out = [
        "# API reference",
        "",
        "<!-- generated by docs/make_reference.py from the docstrings; do not edit -->",
        "",
        "Generated from the docstrings by `python docs/make_reference.py`. The",
        "[library page](library.md) shows these names at work.",
        "",
        "## `pytest_taskproc`",
        "",
    ]
    for name in public:
        out += describe(name, getattr(package, name))
    out += ["## Errors and warnings", "", doc(errors), ""]
    for name in error_names:
        out += describe_class(name, getattr(errors, name))
    for module_name in ("pytest_taskproc.provenance", "pytest_taskproc.compare"):
        module = importlib.import_module(module_name)
        out += [f"## `{module_name}`", "", doc(module), ""]
        for name in module.__all__:
            out += describe(name, getattr(module, name))
    out += plugin_options()
    app = importlib.import_module("pytest_taskproc.app")
    out += command_line("The command line for a task file.", app.build_parser())
    tool = importlib.import_module("pytest_taskproc.cachetool")
    out += command_line(
        "The cache tool, also `python -m pytest_taskproc.cache` (see "
        "[living with a cache](cache.md#inspecting-it)).",
        tool.build_parser(),
    )
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/reference.md from the docstrings.")
    parser.add_argument("--check", action="store_true", help="only check that it is current")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python docs/make_reference.py")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
