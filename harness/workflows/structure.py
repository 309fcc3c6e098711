"""The operator structure of a workflow: which operators run_workflow awaits, in order.

Two workflows that differ only in instruction text or variable names have the same structure.
A `for _ in range(k)` loop with a literal k folds its body's calls into 'Op x k'. Used for the
diversity figures of the generator (distinct structures per question) and open question 3.
"""

from __future__ import annotations

import ast

from spogw.harness.workflows.validate import OPERATOR_NAMES


def operator_fields(tree: ast.Module) -> dict[str, str]:
    """self.<field> -> operator class, from assignments like self.x = operator.Custom(llm)."""
    fields: dict[str, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and isinstance(node.value.func.value, ast.Name)
            and node.value.func.value.id == "operator"
            and node.value.func.attr in OPERATOR_NAMES
        ):
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    fields[target.attr] = node.value.func.attr
    return fields


def _calls(statements: list[ast.stmt], fields: dict[str, str]) -> list[str]:
    found: list[str] = []
    for statement in statements:
        if isinstance(statement, ast.For):
            inner = _calls(statement.body, fields)
            count = _literal_range(statement.iter)
            if inner:
                found.append(f"({'>'.join(inner)})x{count if count is not None else 'n'}")
            continue
        if isinstance(statement, ast.If | ast.While | ast.Try):
            branches = [statement.body, getattr(statement, "orelse", [])]
            for branch in branches:
                inner = _calls(branch, fields)
                if inner:
                    found.append(f"[{'>'.join(inner)}]")
            continue
        for node in ast.walk(statement):
            member = _awaited_member(node)
            if member is not None:
                found.append(fields.get(member, member))
    return found


def _awaited_member(node: ast.AST) -> str | None:
    """``x`` for a node ``await self.x(...)`` (an operator call), else None."""
    if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
        func = node.value.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
            return func.attr
    return None


def _literal_range(node: ast.expr) -> int | None:
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, int)
    ):
        return node.args[0].value
    return None


def structure_of(source: str) -> str:
    """A canonical string of the operator calls of ``source``'s run_workflow (empty if none)."""
    tree = ast.parse(source)
    fields = operator_fields(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "run_workflow":
            return ">".join(_calls(node.body, fields))
    return ""


def structure_or_empty(source: str | None) -> str:
    """`structure_of`, or '' for no code or code that does not parse (an invalid workflow)."""
    if not source:
        return ""
    try:
        return structure_of(source)
    except SyntaxError:
        return ""


def calls_per_run(source: str) -> float:
    """Executor calls one run of ``source`` makes, counted from its code: every ``await self.op(...)``
    times the literal ``range(k)`` of the loops around it (both branches of an if counted; at least 1).
    An estimate for planning, not a measurement."""

    def count(node: ast.AST, multiplier: int) -> int:
        total = 0
        for child in ast.iter_child_nodes(node):
            factor = multiplier
            if isinstance(child, ast.For | ast.AsyncFor):
                factor *= _literal_range(child.iter) or 1
            if _awaited_member(child) is not None:
                total += multiplier
            total += count(child, factor)
        return total

    return float(max(count(ast.parse(source), 1), 1))
