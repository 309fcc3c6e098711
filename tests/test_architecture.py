"""The layers: every import among harness/, methods/ and reports/ (function-local ones included;
``if TYPE_CHECKING:`` blocks left out, since they never run) forms no cycle, and the one-way rules
of docs/architecture.md hold. Module sizes stay readable."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("harness", "methods", "reports")
COMPOSITION_ROOTS = {"spogw.harness", "spogw.harness.cli"}
"""The public API (harness.run) and the CLI: the only harness modules that may import the reports."""
ORCHESTRATION = {
    "spogw.harness.runner",
    "spogw.harness.cluster",
    "spogw.harness.cell_work",
    "spogw.harness.launch",
    "spogw.harness.train",
    "spogw.harness.cli",
    "spogw.harness.sweeps.study",
}
"""What the reports must never import (they read run folders, never drive runs)."""
LONG_MODULE_LINES = 400


def _module_name(path: Path) -> str:
    """The import name: harness/x.py is spogw.harness.x (spogw/ links to the top-level folders)."""
    parts = ["spogw", *path.relative_to(REPO).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Project modules ``module`` imports at run time, wherever the import statement is."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found |= {r for alias in node.names if (r := resolve(alias.name))}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found |= {r for alias in node.names if (r := resolve(f"{base}.{alias.name}"))}
        stack.extend(ast.iter_child_nodes(node))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: _imported(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_function_local_imports_and_skips_type_checking_blocks() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import b\ndef f():\n    import c\n"
    assert _imported(ast.parse(source), "a", False, {"a", "b", "c"}) == {"c"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_import_cycle_among_harness_methods_reports() -> None:
    assert cycles(import_graph()) == []


def test_the_layers_are_one_way() -> None:
    graph = import_graph()
    harness_to_reports = sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if source.startswith("spogw.harness") and source not in COMPOSITION_ROOTS and target.startswith("spogw.reports")
    )
    assert harness_to_reports == [], "the harness writes data; only the CLI and harness.run call the reports"
    reports_to_orchestration = sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if source.startswith("spogw.reports") and target in ORCHESTRATION
    )
    assert reports_to_orchestration == [], "the reports read run folders; they never drive a run"
    assert "spogw.harness.config" in graph["spogw.harness.runner"], "the walker resolves the import names"
    methods_to_harness = {
        target for source, targets in graph.items() if source.startswith("spogw.methods") for target in targets
    } - {m for m in graph if m.startswith("spogw.methods")}
    assert methods_to_harness <= {
        "spogw.harness.registry",
        "spogw.harness.rollouts",
        "spogw.harness.catalog",
        "spogw.harness.errors",
        "spogw.harness.distributed",  # the steps' data-parallel primitives: torch only, no harness state
    }, methods_to_harness


def test_long_modules_say_why_at_the_top() -> None:
    long = {
        name: len(path.read_text().splitlines())
        for name, path in _modules().items()
        if len(path.read_text().splitlines()) > LONG_MODULE_LINES
    }
    unexplained = [
        name
        for name in long
        if "Longer than 400 lines because" not in (ast.get_docstring(ast.parse(_modules()[name].read_text())) or "")
    ]
    assert unexplained == [], {name: long[name] for name in unexplained}
