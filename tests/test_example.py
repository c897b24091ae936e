"""The bundled example project runs cold, then entirely from the cache; its plot is labelled."""

from __future__ import annotations

import importlib
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
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


def _pixels(png: bytes) -> np.ndarray:
    """The RGB pixels of a PNG written by the example (one IDAT chunk, filter 0 per row)."""
    width, height = struct.unpack(">II", png[16:24])
    (length,) = struct.unpack(">I", png[33:37])
    assert png[37:41] == b"IDAT"
    raw = zlib.decompress(png[41 : 41 + length])
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, 3)


def test_the_example_plot_has_axis_labels_and_a_legend(tmp_path: Path) -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        example = importlib.import_module("task_bootstrap")
    finally:
        sys.path.remove(str(EXAMPLE))
    colours = [(214, 39, 40), (31, 119, 180), (44, 160, 44)]
    out = tmp_path / "chart.png"
    example._write_line_chart(
        out,
        [np.array([20.0, 80.0, 320.0])] * 3,
        [[0.3, 0.15, 0.07], [0.25, 0.12, 0.06], [0.22, 0.11, 0.055]],
        colours,
        labels=["mean", "median", "trimmed mean"],
        x_label="sample size n",
        y_label="bootstrap SE",
    )
    image = _pixels(out.read_bytes())
    ink = (image == 0).all(axis=2)
    height, width = ink.shape
    # Black text left of the y axis (its label, read bottom to top) and below the x axis.
    assert ink[height // 3 : 2 * height // 3, :20].sum() > 50
    assert ink[height - 25 :, width // 3 : 2 * width // 3].sum() > 50
    # The legend: each curve's colour sampled beside black text, in the top right corner.
    corner = image[:80, width // 2 :]
    for colour in colours:
        assert (corner == colour).all(axis=2).sum() >= 20
    assert (corner == 0).all(axis=2).sum() > 100
