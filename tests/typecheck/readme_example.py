"""The README's example, checked by mypy --strict (see tests/test_typing.py)."""

from __future__ import annotations

from typing_extensions import assert_type

from pytest_taskproc import Const, Requires, RequiresDict, RequiresList, TaskBase, infer_task_type


@infer_task_type
class Choose(TaskBase):
    prev1: Requires[int]
    prev2: Requires[int]

    def build_task(self, n: int, k: int) -> None:
        if 0 < k < n:
            self.prev1 = Choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)
        elif k == 0 or k == n:
            self.prev1 = Const(0)
            self.prev2 = Const(1)
        else:
            raise ValueError((n, k))

    def run_task(self) -> int:
        assert_type(self.prev1, int)
        return self.prev1 + self.prev2


@infer_task_type
class Gather(TaskBase):
    values: RequiresList[int]
    named: RequiresDict[str, int]

    def build_task(self, n: int) -> None:
        self.values = [Choose(n, k) for k in range(n + 1)]
        self.named = {"middle": Choose(n, n // 2)}

    def run_task(self) -> dict[str, int]:
        assert_type(self.values, list[int])
        assert_type(self.named, dict[str, int])
        return {"total": sum(self.values), **self.named}


def main() -> None:
    answer = Choose(6, 3).run_graph()
    assert_type(answer, int)
    result, stats = Choose(6, 3).run_graph_with_stats()
    assert_type(result, int)
    assert_type(Gather(4).get_task_result(), dict[str, int])
    print(answer, stats["stats"])
