"""A sweep's search space and the constraints between its parameters.

Constraints are linear inequalities over the parameters, written as in the paper:
``2 * sharpen_t <= group_size <= num_samples``. They are enforced while suggesting, never checked
after the fact: parameters are suggested in the order they are declared, and each constraint
bounds the last-declared parameter it mentions, given the values already drawn. A strict inequality
stays strict: ``t < 0.5 * n`` with n = 3 allows the ints t <= 1, and ``eps_low < eps_high`` between
floats gives an open bound (the largest float below). An int parameter's
range shrinks to the feasible values; a float's is clamped; a categorical parameter keeps its
choices (Optuna requires one fixed distribution per name) and a drawn choice that violates a
constraint makes the trial infeasible. An infeasible trial is never run (the study records it as
pruned, with the reason).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, model_validator


class Infeasible(Exception):
    """No value of a parameter satisfies the constraints given the ones already drawn."""


class ParamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    type: Literal["int", "float", "categorical"]
    """int and float take low/high (and log, step); categorical takes choices."""
    low: float | None = None
    """Smallest value (inclusive)."""
    high: float | None = None
    """Largest value (inclusive)."""
    log: bool = False
    """Sample on a log scale (low > 0)."""
    step: float | None = None
    """Grid step (int: default 1; float: default continuous)."""
    choices: list[Any] | None = None
    """The values of a categorical parameter."""

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes a non-empty choices list and no low/high")
            return self
        if self.choices is not None or self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter takes low and high, not choices")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log scale and step cannot be combined (Optuna)")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int parameter needs integer low and high")
        return self


TOLERANCE = 1e-9
"""Slack for float rounding in coefficients (``0.1 * n``): never a real difference of parameters."""


@dataclass(frozen=True)
class LinearConstraint:
    """``sum(coefficients[p] * p) + constant <= 0`` (``< 0`` when ``strict``); ``text`` is how it was written."""

    coefficients: Mapping[str, float]
    constant: float
    text: str
    strict: bool = False

    def satisfied(self, values: Mapping[str, float]) -> bool:
        total = sum(c * values[p] for p, c in self.coefficients.items()) + self.constant
        return total < -TOLERANCE if self.strict else total <= TOLERANCE


def _linear(node: ast.expr, names: set[str], text: str) -> dict[str, float]:
    """A linear expression as {parameter: coefficient, '': constant}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return {"": float(node.value)}
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ValueError(f"constraint {text!r}: {node.id!r} is not a parameter of the space ({sorted(names)})")
        return {node.id: 1.0}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _linear(node.operand, names, text)
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        return {k: sign * v for k, v in inner.items()}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        left, right = _linear(node.left, names, text), _linear(node.right, names, text)
        sign = 1.0 if isinstance(node.op, ast.Add) else -1.0
        return {k: left.get(k, 0.0) + sign * right.get(k, 0.0) for k in left.keys() | right.keys()}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _linear(node.left, names, text), _linear(node.right, names, text)
        for constant, other in ((left, right), (right, left)):
            if set(constant) == {""}:
                return {k: constant[""] * v for k, v in other.items()}
    raise ValueError(f"constraint {text!r}: only linear expressions (+, -, number * parameter) are allowed")


def parse_constraint(text: str, names: set[str]) -> list[LinearConstraint]:
    """``a <= b``, ``a >= b``, ``a < b``, chains ``a <= b <= c`` -> one LinearConstraint per comparison
    (``<`` and ``>`` strict). Raises ValueError naming the constraint when it is not linear, names
    something that is not a parameter, or mentions no parameter."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ValueError(f"constraint {text!r}: not an expression") from None
    if not isinstance(tree, ast.Compare):
        raise ValueError(f"constraint {text!r}: expected a comparison such as '2 * sharpen_t <= group_size'")
    out = []
    sides = [tree.left, *tree.comparators]
    for op, left, right in zip(tree.ops, sides, sides[1:], strict=False):
        a, b = _linear(left, names, text), _linear(right, names, text)
        if isinstance(op, ast.LtE | ast.Lt):
            difference = {k: a.get(k, 0.0) - b.get(k, 0.0) for k in a.keys() | b.keys()}  # a - b <= 0
        elif isinstance(op, ast.GtE | ast.Gt):
            difference = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in a.keys() | b.keys()}
        else:
            raise ValueError(f"constraint {text!r}: use <=, <, >= or > (not {type(op).__name__})")
        constant = difference.pop("", 0.0)
        coefficients = {k: v for k, v in difference.items() if v != 0.0}
        if not coefficients:
            raise ValueError(f"constraint {text!r}: mentions no parameter")
        out.append(LinearConstraint(coefficients, constant, text, strict=isinstance(op, ast.Lt | ast.Gt)))
    return out


class Suggester(Protocol):
    """The part of optuna.Trial a space needs (so the space is testable without a study)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Interval:
    """The values a parameter may take: between low and high, each end open or closed."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def int_range(self, low: int, high: int) -> tuple[int, int]:
        """The ints of [low, high] inside this interval, as (first, last) (first > last: none)."""
        if self.low > -math.inf:
            low = max(low, math.floor(self.low + TOLERANCE) + 1 if self.low_open else math.ceil(self.low - TOLERANCE))
        if self.high < math.inf:
            high = min(
                high, math.ceil(self.high - TOLERANCE) - 1 if self.high_open else math.floor(self.high + TOLERANCE)
            )
        return low, high

    def float_range(self, low: float, high: float) -> tuple[float, float]:
        """[low, high] cut to this interval; an open end becomes the nearest float inside it."""
        first = math.nextafter(self.low, math.inf) if self.low_open else self.low
        last = math.nextafter(self.high, -math.inf) if self.high_open else self.high
        return max(low, first), min(high, last)


def bounds(name: str, constraints: Sequence[LinearConstraint], values: Mapping[str, float]) -> Interval:
    """The interval the constraints allow for ``name`` given ``values`` of every other parameter
    they mention (constraints that mention a parameter not yet drawn are skipped)."""
    interval = Interval()
    for constraint in constraints:
        coefficient = constraint.coefficients.get(name, 0.0)
        others = [p for p in constraint.coefficients if p != name]
        if coefficient == 0.0 or any(p not in values for p in others):
            continue
        rest = constraint.constant + sum(constraint.coefficients[p] * values[p] for p in others)
        limit = -rest / coefficient
        if coefficient > 0 and (limit < interval.high or (limit == interval.high and constraint.strict)):
            interval = Interval(interval.low, limit, interval.low_open, constraint.strict)
        elif coefficient < 0 and (limit > interval.low or (limit == interval.low and constraint.strict)):
            interval = Interval(limit, interval.high, constraint.strict, interval.high_open)
    return interval


def last_parameter(constraint: LinearConstraint, order: Sequence[str]) -> str:
    return max(constraint.coefficients, key=order.index)


def suggest(
    trial: Suggester, space: Mapping[str, ParamSpec], constraints: Sequence[LinearConstraint]
) -> dict[str, Any]:
    """Draw every parameter in declaration order, each within the bounds the constraints give it
    (a constraint binds its last-declared parameter). Raises Infeasible when none fits."""
    order = list(space)
    values: dict[str, Any] = {}
    for name, spec in space.items():
        binding = [c for c in constraints if last_parameter(c, order) == name]
        texts = ", ".join(sorted({c.text for c in binding}))
        interval = bounds(name, binding, values)
        if spec.type == "categorical":
            value = trial.suggest_categorical(name, spec.choices or [])
            if not all(c.satisfied({**values, name: value}) for c in binding):
                raise Infeasible(f"{name}={value!r} violates {texts}")
        elif spec.type == "int":
            step = int(spec.step or 1)
            base = int(spec.low)  # type: ignore[arg-type]
            lo, hi = interval.int_range(base, int(spec.high))  # type: ignore[arg-type]
            lo = base + math.ceil((lo - base) / step) * step  # stay on the grid
            hi = lo + (hi - lo) // step * step if hi >= lo else hi
            if lo > hi:
                raise Infeasible(f"no {name} in [{spec.low:g}, {spec.high:g}] satisfies {texts} given {values}")
            value = trial.suggest_int(name, lo, hi, step=step, log=spec.log)
        else:
            low, high = float(spec.low), float(spec.high)  # type: ignore[arg-type]
            lo_f, hi_f = interval.float_range(low, high)
            if lo_f > hi_f:
                raise Infeasible(f"no {name} in [{spec.low:g}, {spec.high:g}] satisfies {texts} given {values}")
            value = trial.suggest_float(name, lo_f, hi_f, step=spec.step, log=spec.log)
        values[name] = value
    return values
