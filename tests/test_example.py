"""Smoke test: the bundled example project runs cold, then entirely from the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"


@pytest.mark.slow
def test_example_project_runs_then_is_cached(pytester: pytest.Pytester) -> None:
    for name in ("pytest.ini", "task_bootstrap.py"):
        shutil.copy(EXAMPLE / name, pytester.path / name)
    cache = pytester.path / "cache"
    args = ("--taskproc", "-n", "2", "--taskproc-cache-dir", str(cache))

    cold = pytester.runpytest_subprocess(*args)
    assert cold.ret == 0, cold.stdout.str()
    cold_outcomes = cold.parseoutcomes()
    assert cold_outcomes.get("passed", 0) > 0
    assert "cached" not in cold_outcomes

    warm = pytester.runpytest_subprocess(*args)
    assert warm.ret == 0, warm.stdout.str()
    warm_outcomes = warm.parseoutcomes()
    assert "passed" not in warm_outcomes
    assert warm_outcomes["cached"] == cold_outcomes["passed"]

    reports = list(cache.rglob("report.md"))
    assert len(reports) == 1
    text = reports[0].read_text(encoding="utf-8")
    assert "| n | estimator |" in text
    assert "|---:|:---|" in text
    assert "(se_vs_n.png)" in text
    assert (reports[0].parent / "se_vs_n.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (reports[0].parent / "results.csv").is_file()
