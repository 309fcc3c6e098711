from __future__ import annotations

import ast
import random

import pytest

from spogw.harness.catalog import registries
from spogw.harness.workflows.answers import code_answer, last_boxed, last_number, math_answer
from spogw.harness.workflows.extract import extract_workflow
from spogw.harness.workflows.grammar import all_structures, render, sample_structure
from spogw.harness.workflows.validate import WorkflowInvalid, validate_workflow


def test_every_static_workflow_validates() -> None:
    for entry in registries()["workflows"]:
        workflow = validate_workflow(entry.load().read_text())
        assert workflow.operators, entry.name


@pytest.mark.parametrize("domain", ["math", "code", "qa"])
def test_every_grammar_structure_validates(domain: str) -> None:
    for structure in all_structures(domain):
        validate_workflow(render(structure))


def test_guarded_source_has_budget_calls() -> None:
    workflow = validate_workflow(render(sample_structure("math", random.Random(3))))
    assert "_guard_tick()" in workflow.guarded_source
    ast.parse(workflow.guarded_source)


@pytest.mark.parametrize(
    ("snippet", "reason"),
    [
        ("x = self.llm.__dict__", "dunder"),
        ("x = [].copy.__self__", "dunder"),
        ("x = self._secret", "private"),
        ("x = vars(self)", "'vars' is not allowed"),
        ("x = (yield 1)", "Yield is not allowed"),
        ("del self.problem", "Delete is not allowed"),
        ("x = globals()", "'globals' is not allowed"),
        ("x = self.problem.encode()", "attribute 'encode' is not allowed"),
        ("x = f'{self.problem!r:{10**9}}'", "format specs"),
        ("x = self.problem.format_map({})", "attribute 'format_map' is not allowed"),
        ("x = self.problem.replace('a', 'b').__class__", "dunder"),
    ],
)
def test_forbidden_constructs_are_rejected_with_reason(snippet: str, reason: str) -> None:
    source = (
        f"class Workflow:\n    def __init__(self, llm, problem):\n        self.problem = problem\n\n"
        f"    async def run_workflow(self):\n        {snippet}\n        return 'x'\n"
    )
    with pytest.raises(WorkflowInvalid) as err:
        validate_workflow(source)
    assert reason in str(err.value)


def test_extract_from_graph_tags_and_fences() -> None:
    body = "class Workflow:\n    pass\n"
    assert extract_workflow(f"Here you go <graph>\n{body}</graph> done") == body.strip("\n")
    assert extract_workflow(f"```python\n{body}```") == body.strip("\n")
    assert extract_workflow(f"<graph>```python\n{body}```</graph>") == body.strip("\n")
    assert extract_workflow("no code here") is None


def test_answer_extraction() -> None:
    assert last_boxed(r"so \boxed{\frac{1}{2}} and \boxed{42}") == "42"
    assert last_boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_number("it costs 1,000 dollars, not 7.5") == 7.5
    assert last_number("total: 1,000") == 1000.0
    assert math_answer("The answer is 12.") == "12"
    assert code_answer("text\n```python\ndef f():\n    return 1\n```\nmore") == "def f():\n    return 1"


def test_structure_and_call_count_of_the_static_workflows() -> None:
    """Hand-counted: CoT-SC = 5 Custom calls in a loop + ScEnsemble; ScoreFlow math = 2 Custom +
    Programmer + ScEnsemble. Unparsable or empty code has no structure."""
    from spogw.harness.workflows.structure import calls_per_run, structure_of, structure_or_empty
    from spogw.methods.static import workflow_source

    cot_sc, math = workflow_source("cot_sc")[1], workflow_source("scoreflow_math")[1]
    assert structure_of(cot_sc) == "(Custom)x5>ScEnsemble"
    assert structure_of(math) == "(Custom)x2>Programmer>ScEnsemble"
    assert calls_per_run(cot_sc) == 6.0 and calls_per_run(math) == 4.0
    assert calls_per_run("x = 1") == 1.0  # at least one call is planned for
    assert structure_or_empty(cot_sc) == structure_of(cot_sc)
    assert structure_or_empty("class Workflow(:") == "" and structure_or_empty(None) == ""
