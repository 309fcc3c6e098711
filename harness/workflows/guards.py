"""Run-time guards and the builtins given to workflow code inside the worker process.

validate.py rewrites loops, function entries and the size-changing operators into calls of these
guards. They bound a workflow's steps and the size of values it builds, so that a runaway workflow
ends with a reason instead of starving the worker; the worker's rlimits are the hard backstop.
Stdlib only: the worker imports nothing else.
"""

from __future__ import annotations

import builtins
import operator as _op
from collections.abc import Iterable, Iterator
from typing import Any

MAX_SEQUENCE = 1_000_000
"""Largest string/list a single guarded operation may build."""
MAX_INT_BITS = 100_000
MAX_RANGE = 100_000


class BudgetExceeded(BaseException):
    """The workflow used more steps or built bigger values than a workflow run may.

    A BaseException so that the workflow's own ``except Exception`` cannot swallow it.
    """


class StepBudget:
    """Counts loop iterations and function entries of one workflow run."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self.steps = 0

    @property
    def exhausted(self) -> bool:
        return self.steps > self.max_steps

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise BudgetExceeded(f"step budget of {self.max_steps} loop iterations/calls exhausted")

    def bounded(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for value in iterable:
            self.tick()
            yield value


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple | bytes) else None


def guarded_binop(symbol: str, left: Any, right: Any) -> Any:
    """``left <symbol> right`` after checking that the result stays within bounds."""
    if symbol == "+":
        left_size, right_size = _size(left), _size(right)
        if left_size is not None and right_size is not None and left_size + right_size > MAX_SEQUENCE:
            raise BudgetExceeded(f"a value of {left_size + right_size} items is too large")
        return left + right
    if symbol == "*":
        for seq, count in ((left, right), (right, left)):
            seq_size = _size(seq)
            if seq_size is not None and isinstance(count, int) and seq_size * max(count, 0) > MAX_SEQUENCE:
                raise BudgetExceeded(f"a value of {seq_size * count} items is too large")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise BudgetExceeded("an integer too large")
        return left * right
    if symbol == "**":
        big = isinstance(left, int) and isinstance(right, int) and max(left.bit_length(), 1) * right > MAX_INT_BITS
        if big:
            raise BudgetExceeded("an integer power too large")
        return left**right
    if symbol == "<<":
        if isinstance(right, int) and right > MAX_INT_BITS:
            raise BudgetExceeded("a shift too large")
        return left << right
    if symbol == "%":
        if isinstance(left, str):
            raise BudgetExceeded("%-formatting of strings is not allowed; use an f-string")
        return _op.mod(left, right)
    raise ValueError(f"unguarded operator {symbol!r}")


def safe_range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise BudgetExceeded(f"range of {len(result)} items (limit {MAX_RANGE})")
    return result


def _no_print(*args: Any, **kwargs: Any) -> None:
    """Workflows may call print; the output goes nowhere (stdout carries the worker protocol)."""


_PLAIN = (
    "len", "min", "max", "sum", "sorted", "reversed", "enumerate", "zip", "any", "all", "abs",
    "round", "str", "int", "float", "bool", "list", "dict", "set", "tuple", "isinstance",
    "Exception", "ValueError", "KeyError", "IndexError", "TypeError", "RuntimeError",
)  # fmt: skip


def safe_builtins() -> dict[str, Any]:
    """The builtins namespace of workflow code (``__build_class__`` lets it define its class)."""
    table: dict[str, Any] = {name: getattr(builtins, name) for name in _PLAIN}
    table.update(range=safe_range, print=_no_print, __build_class__=builtins.__build_class__)
    return table
