"""Reading workflow code back as a structure of the grammar (harness/workflows/grammar.py): what
the SIMULATED optimizer of a search edits (harness/optimizers.py).

Kept apart from grammar.py because that file's bytes are part of the tiny generator's recipe hash
(harness/policy/tiny.py): an edit there rebuilds the CPU default generator.
"""

from __future__ import annotations

import functools

from spogw.harness.executors.sim import instruction_style
from spogw.harness.workflows.grammar import GENERATORS_BY_DOMAIN, Structure, all_structures
from spogw.harness.workflows.structure import operator_fields


@functools.cache
def structure_set(domain: str) -> frozenset[Structure]:
    """`all_structures` of ``domain`` as a set, computed once (membership tests)."""
    return frozenset(all_structures(domain))


def parse_structure(source: str, domain: str) -> Structure | None:
    """The grammar structure ``source`` implements (what `render` writes, and the shipped static
    workflows io, cot, cot_sc, pot), or None when it is not one: more than one generating operator,
    a loop count that is not a literal, or a combination `all_structures` does not have."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    operators = operator_fields(tree)
    used = set(operators.values())
    generators = [g for g in GENERATORS_BY_DOMAIN[domain] if g in used]
    if len(generators) != 1:
        return None
    generator = generators[0]
    samples, style = 1, "cot" if generator == "AnswerGenerate" else "plain"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.For)
            and isinstance(node.iter, ast.Call)
            and getattr(node.iter.func, "id", "") == "range"
        ):
            arguments = node.iter.args
            if len(arguments) != 1 or not isinstance(arguments[0], ast.Constant) or type(arguments[0].value) is not int:
                return None
            samples = arguments[0].value
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and operators.get(node.func.attr) == generator
        ):
            for keyword in node.keywords:
                if keyword.arg == "instruction" and isinstance(keyword.value, ast.Constant):
                    style = instruction_style(str(keyword.value.value))  # the style the simulator plays
    structure = Structure(
        domain,
        generator,
        samples,
        style,
        programmer="Programmer" in used,
        ensemble="ScEnsemble" in used,
        review="Review" in used and "Revise" in used,
        test="Test" in used,
        format="Format" in used,
    )
    return structure if structure in structure_set(domain) else None
