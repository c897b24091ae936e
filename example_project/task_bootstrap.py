"""Bootstrap study: how precisely do mean, median and 10% trimmed mean locate a heavy tail?

Samples of size n are drawn from a Student-t distribution with 2.5 degrees of freedom
(finite variance, but heavy tails) shifted to the true location ``TRUE_LOCATION``.  For
every sample we bootstrap each estimator, and record its bootstrap standard error, its
95% percentile interval and whether that interval covers the truth.  ``Report`` pools
the seeds and writes ``report.md``, ``results.csv`` and ``se_vs_n.png``.

Task graph (one pytest item per task)::

    MakeDataset(n, seed) ──> Resample(n, seed) ──["mean"|"median"|"trimmed"]──┐
            └──────────────────────────────────────────────────> Summarise(n, seed, est)
    Summarise(n, seed, *) ──> Compare(n, seed)   (parametrized roots: sizes x seeds)
    Compare(*, *) ──> Report                      (no-argument root)
"""

from __future__ import annotations

import csv
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from pytest_taskproc import Requires, RequiresDict, RequiresList, TaskBase

SIZES: list[int] = [20, 80, 320]
SEEDS: list[int] = [0, 1, 2]
TRUE_LOCATION = 3.0
DEGREES_OF_FREEDOM = 2.5
N_BOOTSTRAP = 4000
TRIM = 0.1


def trimmed_mean(x: np.ndarray, axis: int = -1, trim: float = TRIM) -> np.ndarray:
    """Mean of the central ``1 - 2 * trim`` share of ``x`` along ``axis``."""
    cut = int(trim * x.shape[axis])
    ordered = np.sort(x, axis=axis)
    kept = np.take(ordered, np.arange(cut, x.shape[axis] - cut), axis=axis)
    return np.asarray(kept.mean(axis=axis))


ESTIMATORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda x: np.asarray(x.mean(axis=-1)),
    "median": lambda x: np.asarray(np.median(x, axis=-1)),
    "trimmed": trimmed_mean,
}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


class MakeDataset(TaskBase):
    """One heavy-tailed sample; shared by the resampling and by every estimator's summary."""

    def build_task(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed

    def run_task(self) -> np.ndarray:
        x = TRUE_LOCATION + _rng(self.seed, 0).standard_t(DEGREES_OF_FREEDOM, self.size)
        print(f"sample n={self.size} seed={self.seed}: min={x.min():.2f} max={x.max():.2f}")
        return x


class Resample(TaskBase, channel="<memory>"):
    """The B x n bootstrap matrix, reduced by every estimator (the memory-heavy step)."""

    data: Requires[np.ndarray]

    def build_task(self, size: int, seed: int) -> None:
        self.data = MakeDataset(size, seed)
        self.seed = seed

    def run_task(self) -> dict[str, np.ndarray]:
        n = len(self.data)
        index = _rng(self.seed, n, 1).integers(0, n, size=(N_BOOTSTRAP, n))
        matrix = self.data[index]
        print(f"bootstrap matrix {matrix.shape}: {matrix.nbytes / 2**20:.1f} MiB")
        return {name: estimator(matrix) for name, estimator in ESTIMATORS.items()}


class Summarise(TaskBase):
    """Point estimate, bootstrap SE and 95% percentile interval of one estimator."""

    data: Requires[np.ndarray]
    replicates: Requires[np.ndarray]

    def build_task(self, size: int, seed: int, estimator: str) -> None:
        self.data = MakeDataset(size, seed)
        self.replicates = Resample(size, seed)[estimator]
        self.estimator = estimator

    def run_task(self) -> dict[str, float]:
        estimate = float(ESTIMATORS[self.estimator](self.data))
        low, high = np.quantile(self.replicates, [0.025, 0.975])
        se = float(self.replicates.std(ddof=1))
        covers = bool(low <= TRUE_LOCATION <= high)
        print(
            f"{self.estimator:>8}: estimate={estimate:.3f} se={se:.3f} "
            f"95% CI=[{low:.3f}, {high:.3f}] covers={covers}"
        )
        return {
            "estimate": estimate,
            "se": se,
            "ci_low": float(low),
            "ci_high": float(high),
            "covers": float(covers),
        }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("size", SIZES)
class Compare(TaskBase):
    """All estimators on one sample; writes ``estimators.csv`` into its task directory."""

    summaries: RequiresDict[str, dict[str, float]]

    def build_task(self, size: int, seed: int) -> None:
        self.summaries = {name: Summarise(size, seed, name) for name in ESTIMATORS}
        self.size = size
        self.seed = seed

    def run_task(self) -> list[dict[str, float | int | str]]:
        rows: list[dict[str, float | int | str]] = [
            {"size": self.size, "seed": self.seed, "estimator": name, **summary}
            for name, summary in self.summaries.items()
        ]
        _write_csv(self.task_directory / "estimators.csv", rows)
        best = min(rows, key=lambda row: float(row["se"]))
        print(f"n={self.size} seed={self.seed}: smallest bootstrap SE is {best['estimator']}")
        return rows


class Report(TaskBase):
    """Pools every (size, seed) comparison into report.md, results.csv and se_vs_n.png."""

    comparisons: RequiresList[list[dict[str, float | int | str]]]

    def build_task(self) -> None:
        self.comparisons = [Compare(size, seed) for size in SIZES for seed in SEEDS]

    def run_task(self) -> str:
        rows = [row for comparison in self.comparisons for row in comparison]
        out = self.task_directory
        _write_csv(out / "results.csv", rows)
        lines = [
            f"# Bootstrap study: location of a t({DEGREES_OF_FREEDOM}) sample",
            "",
            f"True location {TRUE_LOCATION}; {N_BOOTSTRAP} bootstrap replicates; "
            f"seeds {SEEDS} pooled.",
            "",
            "| n | estimator | mean SE | mean abs. error | CI coverage |",
            "|---:|:---|---:|---:|---:|",
        ]
        curves: dict[str, list[float]] = {}
        for size in SIZES:
            for name in ESTIMATORS:
                chosen = [r for r in rows if r["size"] == size and r["estimator"] == name]
                se = float(np.mean([float(r["se"]) for r in chosen]))
                error = np.mean([abs(float(r["estimate"]) - TRUE_LOCATION) for r in chosen])
                coverage = np.mean([float(r["covers"]) for r in chosen])
                curves.setdefault(name, []).append(se)
                lines.append(f"| {size} | {name} | {se:.3f} | {error:.3f} | {coverage:.0%} |")
        colours = {"mean": (214, 39, 40), "median": (31, 119, 180), "trimmed": (44, 160, 44)}
        legend = {"mean": "mean", "median": "median", "trimmed": f"{TRIM:.0%} trimmed mean"}
        _write_line_chart(
            out / "se_vs_n.png",
            [np.array(SIZES, dtype=float)] * len(curves),
            list(curves.values()),
            [colours[name] for name in curves],
            labels=[legend[name] for name in curves],
            x_label="sample size n (log scale)",
            y_label="bootstrap SE (log scale)",
        )
        lines += [
            "",
            "![bootstrap SE against n, log-log](se_vs_n.png)",
            "",
            "Bootstrap SE against n on log-log axes: red = mean, blue = median, "
            "green = 10% trimmed mean.",
        ]
        ratio = curves["mean"][-1] / curves["trimmed"][-1]
        lines.append(f"\nAt n={SIZES[-1]} the mean's SE is {ratio:.2f}x the trimmed mean's.")
        text = "\n".join(lines) + "\n"
        (out / "report.md").write_text(text, encoding="utf-8")
        print(text)
        print(f"report written to {out / 'report.md'}")
        return text


def _write_csv(path: Path, rows: Sequence[dict[str, float | int | str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


#: a 3x5 pixel font (upper case; text is drawn upper case): rows top to bottom, "#" is ink
_FONT = {
    ch: rows.split("/")
    for ch, rows in {
        "A": ".#./#.#/###/#.#/#.#",
        "B": "##./#.#/##./#.#/##.",
        "C": ".##/#../#../#../.##",
        "D": "##./#.#/#.#/#.#/##.",
        "E": "###/#../##./#../###",
        "F": "###/#../##./#../#..",
        "G": ".##/#../#.#/#.#/.##",
        "H": "#.#/#.#/###/#.#/#.#",
        "I": "###/.#./.#./.#./###",
        "J": "..#/..#/..#/#.#/.#.",
        "K": "#.#/#.#/##./#.#/#.#",
        "L": "#../#../#../#../###",
        "M": "#.#/###/###/#.#/#.#",
        "N": "##./#.#/#.#/#.#/#.#",
        "O": ".#./#.#/#.#/#.#/.#.",
        "P": "##./#.#/##./#../#..",
        "Q": ".#./#.#/#.#/##./.##",
        "R": "##./#.#/##./#.#/#.#",
        "S": ".##/#../.#./..#/##.",
        "T": "###/.#./.#./.#./.#.",
        "U": "#.#/#.#/#.#/#.#/###",
        "V": "#.#/#.#/#.#/#.#/.#.",
        "W": "#.#/#.#/###/###/#.#",
        "X": "#.#/#.#/.#./#.#/#.#",
        "Y": "#.#/#.#/.#./.#./.#.",
        "Z": "###/..#/.#./#../###",
        "0": "###/#.#/#.#/#.#/###",
        "1": ".#./##./.#./.#./###",
        "2": "##./..#/.#./#../###",
        "3": "##./..#/.#./..#/##.",
        "4": "#.#/#.#/###/..#/..#",
        "5": "###/#../##./..#/##.",
        "6": ".##/#../###/#.#/###",
        "7": "###/..#/.#./.#./.#.",
        "8": "###/#.#/###/#.#/###",
        "9": "###/#.#/###/..#/##.",
        " ": ".../.../.../.../...",
        "(": ".#./#../#../#../.#.",
        ")": ".#./..#/..#/..#/.#.",
        ".": ".../.../.../.../.#.",
        "%": "#.#/..#/.#./#../#.#",
        "-": ".../.../###/.../...",
    }.items()
}


def _text(text: str, scale: int = 2) -> np.ndarray:
    """``text`` as a boolean ink mask, 5 * scale pixels high."""
    glyphs = [np.array([[c == "#" for c in row] for row in _FONT[ch]]) for ch in text.upper()]
    gap = np.zeros((5, 1), dtype=bool)
    mask = np.hstack([part for glyph in glyphs for part in (glyph, gap)][:-1])
    return np.kron(mask, np.ones((scale, scale), dtype=bool))


def _write_line_chart(
    path: Path,
    xs: Sequence[np.ndarray],
    ys: Sequence[Sequence[float]],
    colours: Sequence[tuple[int, int, int]],
    labels: Sequence[str],
    x_label: str,
    y_label: str,
    width: int = 560,
    height: int = 380,
) -> None:
    """A dependency-free PNG on log-log axes: a polyline with markers per curve, tick
    labels, axis labels and a legend."""
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    left, right, top, bottom = 78, 20, 20, 56

    def draw(
        mask: np.ndarray, row: int, col: int, colour: tuple[int, int, int] = (0, 0, 0)
    ) -> None:
        image[row : row + mask.shape[0], col : col + mask.shape[1]][mask] = colour

    log_x = [np.log(np.asarray(x, dtype=float)) for x in xs]
    log_y = [np.log(np.asarray(y, dtype=float)) for y in ys]
    all_x, all_y = np.concatenate(log_x), np.concatenate(log_y)
    pad_x = 0.06 * (all_x.max() - all_x.min() or 1.0)
    pad_y = 0.08 * (all_y.max() - all_y.min() or 1.0)
    x0, x1 = all_x.min() - pad_x, all_x.max() + pad_x
    y0, y1 = all_y.min() - pad_y, all_y.max() + pad_y

    def to_pixel(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        col = left + (x - x0) / (x1 - x0 or 1.0) * (width - left - right)
        row = height - bottom - (y - y0) / (y1 - y0 or 1.0) * (height - top - bottom)
        return np.rint(col).astype(int), np.rint(row).astype(int)

    image[height - bottom, left : width - right] = 0  # x axis
    image[top : height - bottom + 1, left] = 0  # y axis
    for value in np.unique(np.exp(all_x)):  # x ticks at the sample sizes
        (col,), _ = to_pixel(np.array([np.log(value)]), np.array([y0]))
        image[height - bottom : height - bottom + 5, col] = 0
        label = _text(f"{value:g}")
        draw(label, height - bottom + 8, col - label.shape[1] // 2)
    for value in (np.exp(all_y.min()), np.exp(all_y.max())):  # y ticks at the extremes
        _, (row,) = to_pixel(np.array([x0]), np.array([np.log(value)]))
        image[row, left - 5 : left] = 0
        label = _text(f"{value:.3f}")
        draw(label, row - label.shape[0] // 2, left - 8 - label.shape[1])
    x_text = _text(x_label)
    draw(x_text, height - 22, left + (width - left - right - x_text.shape[1]) // 2)
    y_text = np.rot90(_text(y_label))  # read bottom to top
    draw(y_text, top + (height - top - bottom - y_text.shape[0]) // 2, 6)

    for x, y, colour in zip(log_x, log_y, colours, strict=True):
        t = np.linspace(0.0, 1.0, 4 * width)
        dense_x = np.interp(t * (len(x) - 1), np.arange(len(x)), x)
        dense_y = np.interp(t * (len(y) - 1), np.arange(len(y)), y)
        cols, rows = to_pixel(dense_x, dense_y)
        for dr in (-1, 0, 1):
            image[rows + dr, cols] = colour
        for col, row in zip(*to_pixel(x, y), strict=True):
            image[row - 3 : row + 4, col - 3 : col + 4] = colour
    # The legend, top right: a line sample and the curve's name per curve.
    texts = [_text(label) for label in labels]
    box_width = 36 + max(t.shape[1] for t in texts)
    box_left, box_top = width - right - box_width - 6, top + 6
    for i, (text, colour) in enumerate(zip(texts, colours, strict=True)):
        row = box_top + 6 + 16 * i
        image[row + 4 : row + 7, box_left + 6 : box_left + 26] = colour
        draw(text, row, box_left + 32)
    raw = b"".join(b"\x00" + image[r].tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
    path.write_bytes(png + chunk(b"IEND", b""))
