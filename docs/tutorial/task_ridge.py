import numpy as np
import pytest
from matplotlib.figure import Figure

from pytest_taskproc import Requires, RequiresList, TaskBase


class MakeData(TaskBase):
    def run_task(self) -> dict:
        rng = np.random.default_rng(0)
        x = rng.uniform(-3, 3, 60)
        y = np.sin(x) + rng.normal(0, 0.3, 60)
        print(f"drew {len(x)} points")
        return {"train": (x[:30], y[:30]), "valid": (x[30:], y[30:])}


ALPHAS = [1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0]


def features(x: np.ndarray, degree: int = 15) -> np.ndarray:
    return np.vander(x / 3, degree + 1)


@pytest.mark.parametrize("alpha", ALPHAS)
class Fit(TaskBase):
    train: Requires[tuple]
    valid: Requires[tuple]

    def build_task(self, alpha: float):
        self.alpha = alpha
        self.train = MakeData()["train"]
        self.valid = MakeData()["valid"]

    def run_task(self) -> float:
        x, y = self.train
        X = features(x)
        w = np.linalg.solve(X.T @ X + self.alpha * np.eye(X.shape[1]), X.T @ y)
        x, y = self.valid
        error = float(np.mean((features(x) @ w - y) ** 2))
        print(f"alpha={self.alpha}: validation error {error:.3f}")
        return error


class Plot(TaskBase):
    errors: RequiresList[float]

    def build_task(self):
        self.errors = [Fit(alpha) for alpha in ALPHAS]

    def run_task(self) -> str:
        fig = Figure()
        ax = fig.subplots()
        ax.loglog(ALPHAS, self.errors, marker="o", label="validation error")
        ax.set_xlabel("ridge penalty alpha")
        ax.set_ylabel("mean squared error")
        ax.legend()
        path = self.task_directory / "error_vs_alpha.png"
        fig.savefig(path, bbox_inches="tight")
        print(f"plot: {path}")
        return str(path)
