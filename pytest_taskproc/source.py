"""Code digests: the user code a task's result depends on, normalised and hashed.

A task's code is its class's source plus everything of the user's own code
that the class can reach (``codewalk`` says what and how), digested as the
code this process runs (``sourcefiles``).  Sources are compared after parsing,
so comments, docstrings, formatting and pytest marks never count as changes.

A digest is computed once per class per process and kept while every name it
looked up still holds the same object, so ``importlib.reload`` of a helper
module, or a notebook cell defining a helper again, is digested anew.  What
cannot be digested at all makes the digest one that matches no other (the
task counts as changed) and is reported once by a ``CodeDigestWarning``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import sys
import threading
import uuid
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .codewalk import Walker
from .errors import CodeDigestWarning, SourceEditedWarning
from .sourcefiles import SourceFile, edited, is_user_module, module_file, note_modules
from .spec import is_task_class
from .valuedigest import sha

#: the start of a digest that must never match a recorded one
UNMATCHABLE = "changed-"


@dataclass(frozen=True)
class CodeDigest:
    """The digest of a task class's code and of each part it is made of."""

    digest: str | None
    #: "module.qualname" of each part (the class, helpers, constants) -> its digest
    parts: dict[str, str]

    def changed_parts(self, recorded: dict[str, str]) -> list[str]:
        """The parts that differ from a recorded code digest: edited, added or gone."""
        names = sorted(set(self.parts) | set(recorded))
        return [n for n in names if self.parts.get(n) != recorded.get(n)]

    @property
    def matchable(self) -> bool:
        """False when the digest is one no other process computes (the code counts as changed)."""
        return self.digest is not None and not self.digest.startswith(UNMATCHABLE)


@dataclass(eq=False)
class _Entry:
    code: CodeDigest
    lookups: list[tuple[Any, str, Any]]
    files: list[SourceFile]
    #: each function digested and the code object it had
    codes: list[tuple[Any, Any]] = field(default_factory=list)
    #: [value, digest]: values digested by what they hold, which can change in place
    contents: list[list[Any]] = field(default_factory=list)
    warned: set[str] = field(default_factory=set)

    def valid(self) -> bool:
        """Every name the walk looked up still holds the object it found, and every
        function still has its code (an autoreloader patches functions in place)."""
        missing = _MISSING
        return all(home.get(key, missing) is value for home, key, value in self.lookups) and all(
            func.__code__ is code for func, code in self.codes
        )


_MISSING = object()
_digests: weakref.WeakKeyDictionary[type, _Entry] = weakref.WeakKeyDictionary()
_digests_lock = threading.Lock()
_warned_files: set[str] = set()


def code_digest(cls: type, contents: bool = False) -> CodeDigest:
    """The code digest of a task class, computed once per class object and kept while valid.

    ``contents``: also look at what the values it digested by content hold now (a
    planner does, once per class and plan): a notebook's ``params["lr"] = 2``
    changes what a task computes and keeps every name on the same object.
    """
    entry = _digests.get(cls)
    if entry is None or not entry.valid() or (contents and _contents_changed(entry)):
        entry = _compute(cls)
        with _digests_lock:
            _digests[cls] = entry
    return entry.code


def _contents_changed(entry: _Entry) -> bool:
    if not entry.contents:
        return False
    walker = Walker()
    return any(walker.content_digest(value) != digest for value, digest in entry.contents)


def contents_settled(classes: Iterable[type]) -> None:
    """Take what the classes' digested values hold now as what their digests were made
    from: called when a run ends, so what its tasks put into them (a memo dict filling
    up) is not taken for an edit by the next plan, while an edit between runs is."""
    for cls in classes:
        entry = _digests.get(cls)
        if entry is None or not entry.contents:
            continue
        walker = Walker()
        for pair in entry.contents:
            pair[1] = walker.content_digest(pair[0])


#: a function or class a value names -> the digest of its code, kept while valid
_named: weakref.WeakKeyDictionary[Any, _Entry] = weakref.WeakKeyDictionary()


def named_code(objects: Iterable[Any]) -> dict[str, str] | None:
    """The code digest of each of the user's classes and functions among those a value names.

    A pickle names them by module and name only, so its bytes stay the same
    when their code is edited, while the value now behaves otherwise (a fitted
    model whose ``predict`` changed): their code is part of what the value is.
    Keyed ``module:qualname``; None when the value names none of the user's
    (numbers, arrays, installed packages' classes), so such a record is as it
    was.  What cloudpickle sends by value (made in ``__main__`` or in a
    function) is in the pickle's bytes already.
    """
    found = dict(named for named in map(_named_digest, objects) if named is not None)
    return dict(sorted(found.items())) or None


def _named_digest(obj: Any) -> tuple[str, str] | None:
    """``module:qualname`` and the code digest of a user class or function that a pickle
    names by that name; None for anything else."""
    module = getattr(obj, "__module__", None) or ""
    if module == "__main__" or not is_user_module(module) or is_task_class(obj):
        return None
    name = f"{module}:{obj.__qualname__}"
    if named_object(name) is not obj:
        return None  # not importable by its name: pickled by value
    try:
        entry = _named.get(obj)
    except TypeError:  # not weakly referable: digested each time
        entry = None
    if entry is None or not entry.valid():
        walker = Walker()
        walker.follow(obj)
        digest = _parts_digest(walker.parts)
        if walker.undigestable or walker.stale_files:
            digest = UNMATCHABLE + uuid.uuid4().hex  # not known: counts as changed
        entry = _entry(walker, digest)
        with _digests_lock, contextlib.suppress(TypeError):
            _named[obj] = entry
    return name, entry.code.digest or ""


def named_object(name: str) -> Any:
    """The class or function a ``module:qualname`` names here, importing the module; None when
    there is none (renamed, removed, or its module fails to import)."""
    module_name, _, qualname = name.partition(":")
    found: Any = sys.modules.get(module_name)
    if found is None:
        try:
            found = importlib.import_module(module_name)
        except Exception:  # a module that no longer imports names nothing
            return None
    for attr in qualname.split("."):
        found = getattr(found, attr, None)
    return found


def changed_names(recorded: dict[str, str]) -> list[str]:
    """The names whose code is not the recorded one here (edited, renamed or removed)."""
    changed = []
    for name, digest in recorded.items():
        obj = named_object(name)
        now = None if obj is None else _named_digest(obj)
        if now != (name, digest) or digest.startswith(UNMATCHABLE):
            changed.append(name)
    return changed


def _parts_digest(parts: dict[str, str]) -> str:
    return sha("".join(f"{name}={value}\n" for name, value in sorted(parts.items())))


def _entry(walker: Walker, digest: str, parts: dict[str, str] | None = None) -> _Entry:
    """What a walk found, kept: valid while its names, code and values stay as they were."""
    lookups = {(id(home), key): (home, key, value) for home, key, value in walker.lookups}
    return _Entry(
        CodeDigest(digest, parts or {}),
        list(lookups.values()),
        list(walker.files.values()),
        walker.codes,
        walker.contents,
    )


def pickled_by_value(cls: type) -> bool:
    """Whether a class cannot be imported by its name here (cloudpickle sends it by value)."""
    found: Any = sys.modules.get(cls.__module__)
    for attr in cls.__qualname__.split("."):
        found = getattr(found, attr, None)
    return found is not cls


def note_class_defined(cls: type) -> None:
    """Keep the text of the user modules imported so far, as they are when a task class is made.

    The class's own module is being executed right now, so its text is the
    code that runs; helper modules imported before it are as fresh as can be
    known.  A file edited after this is noticed (``warn_if_edited``).
    """
    if is_user_module(cls.__module__):
        module_file(sys.modules.get(cls.__module__))  # also when imported again under its name
    note_modules(is_user_module)


def warn_if_edited(cls: type) -> None:
    """Warn once per file when a file of the class's code changed after it was imported."""
    entry = _digests.get(cls)
    if entry is None:
        return
    for kept in entry.files:
        if kept.filename not in _warned_files and edited(kept):
            _warned_files.add(kept.filename)
            _warn_edited(kept.filename)


def _warn_edited(filename: str) -> None:
    # a shared library cannot be loaded again into the same process
    compiled = filename.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    reload = "" if compiled else ", or importlib.reload the module,"
    warnings.warn(
        SourceEditedWarning(
            f"{filename} was edited after it was imported, and this process does not run "
            "what the file says now (it runs the code it imported, or functions an "
            "autoreloader patched one by one): what it computes is recorded as made by "
            "unknown code, so a new process will recompute it. Restart the process (the "
            f"notebook's kernel){reload} to run the file's code."
        ),
        stacklevel=3,
    )


def _warn_about(cls: type, problem: str) -> None:
    """A ``CodeDigestWarning`` naming the task class, from the code that defines the task."""
    # stacklevel: this helper, _compute, its caller
    warnings.warn(
        CodeDigestWarning(f"{cls.__qualname__} (in {cls.__module__}): {problem}"), stacklevel=4
    )


def _compute(cls: type) -> _Entry:
    walker = Walker(cls)
    walker.walk()
    parts = dict(sorted(walker.parts.items()))
    digest = _parts_digest(parts)
    if walker.undigestable:
        _warn_about(
            cls,
            f"cannot digest {'; '.join(walker.undigestable[:3])}, neither by content nor "
            "pickled, so the task counts as changed and is recomputed by every new process. "
            "Make the value a plain one (numbers, strings, containers) or pass it as an "
            "argument.",
        )
        digest = UNMATCHABLE + uuid.uuid4().hex
    if walker.dynamic_imports:
        _warn_about(
            cls,
            f"{', '.join(walker.dynamic_imports[:3])} imports modules by a name computed when "
            "it runs (importlib.import_module, __import__), so their code is not part of the "
            "task's code digest and editing them does not make the task stale. Import them "
            "with import statements (or a constant name), or clear the task after editing them.",
        )
    for filename in sorted(set(walker.stale_files)):
        # The kept text is not what runs (read after an edit): nothing is known of that code.
        if filename not in _warned_files:
            _warned_files.add(filename)
            _warn_edited(filename)
        digest = UNMATCHABLE + uuid.uuid4().hex
    return _entry(walker, digest, parts)
