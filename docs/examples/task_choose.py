"""Binomial coefficients as tasks; one of them is too large on purpose (docs/plugin.md)."""

import pytest

from pytest_taskproc import Const, Requires, TaskBase


class Choose(TaskBase):
    prev1: Requires[int]
    prev2: Requires[int]

    def build_task(self, n: int, k: int):
        if 0 < k < n:
            self.prev1 = Choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)
        else:
            self.prev1 = Const(0)
            self.prev2 = Const(1)

    def run_task(self) -> int:
        return self.prev1 + self.prev2


@pytest.mark.parametrize("n", [4, 5])
class Middle(TaskBase):
    value: Requires[int]

    def build_task(self, n: int):
        self.n = n
        self.value = Choose(n, n // 2)

    def run_task(self) -> int:
        print(f"C({self.n}, {self.n // 2}) = {self.value}")
        if self.value > 8:
            raise ValueError(f"{self.value} is too large for this demo")
        return self.value
