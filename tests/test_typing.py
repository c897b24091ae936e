"""The public API types the README example precisely under ``mypy --strict``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent / "typecheck" / "readme_example.py"


def test_readme_example_type_checks_with_inferred_result_types(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is part of the test extras")
    shutil.copy(EXAMPLE, tmp_path / "readme_example.py")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "readme_example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        # Editable installs hide the package from mypy behind an import hook.
        env={**os.environ, "MYPYPATH": str(Path(__file__).parents[1])},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout


def test_each_public_name_loads_lazily_from_the_one_table() -> None:
    """``__all__`` comes from the stub's imports; every name in it loads (PEP 562)."""
    import pytest_taskproc

    # Not in the stub: declaring __all__ there would hide the names from star imports.
    names: list[str] = getattr(pytest_taskproc, "__all__")  # noqa: B009
    assert {"TaskBase", "Requires", "Const", "TaskprocError", "__version__"} <= set(names)
    for name in names:
        assert getattr(pytest_taskproc, name) is not None
    assert set(names) <= set(dir(pytest_taskproc))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = pytest_taskproc.Nope  # type: ignore[attr-defined]
