"""Workflows as instruct models write them (tests/real_model_workflows/): each is extracted, run
with the simulated executor and ends with its expected status; executor-free answers are
``ungrounded``, never rewarded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spogw.harness.benchmarks.base import Item, SimTraits
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.workflows.engine import RunOutcome, RunStatus, WorkflowEngine
from spogw.harness.workflows.extract import extract_workflow
from spogw.harness.workflows.grounding import question_specific, ungrounded_reason
from tests.conftest import run

CORPUS = sorted((Path(__file__).parent / "real_model_workflows").glob("*.txt"))
# Written out rather than drawn from gsm_synth, so that a change to the generator's templates cannot
# move the numbers these cases quote.
ITEM = Item(
    id="hand/emma",
    domain="math",
    question=(
        "Emma reads 19 pages a day for 5 days, then 5 pages a day for 3 days. How many pages does she read in total?"
    ),
    answer="110",
    sim=SimTraits(
        difficulty=0.6, computational=False, correct="110", distractors=("95", "15", "120"), kind="small_numbers"
    ),
)


def _case(path: Path) -> tuple[str, str, str]:
    first, _, body = path.read_text().partition("\n")
    match = re.fullmatch(r"# expect: (\w+)(?: \| (.+))?", first)
    assert match, f"{path.name}: first line must be '# expect: STATUS[ | REASON]'"
    number = re.search(r"\b\d{2,}\b", ITEM.question)
    assert number is not None
    return match.group(1), match.group(2) or "", body.replace("{N}", number.group(0))


def _outcome(completion: str, grounding: str = "contained") -> RunOutcome:
    source = extract_workflow(completion)
    assert source is not None, "no workflow found"

    async def go() -> RunOutcome:
        engine = WorkflowEngine(SimExecutor("medium", seed=0), concurrency=1, timeout_s=30, grounding=grounding)  # type: ignore[arg-type]
        try:
            return await engine.run(source, ITEM, 0)
        finally:
            await engine.close()

    return run(go())


def test_the_corpus_covers_the_shapes() -> None:
    assert len(CORPUS) >= 12


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_each_real_model_workflow_gets_its_status(path: Path) -> None:
    status, reason, completion = _case(path)
    outcome = _outcome(completion)
    assert outcome.status.value == status, f"{path.name}: {outcome.status.value} ({outcome.reason})"
    assert reason in outcome.reason


def test_the_executor_free_workflow_would_have_scored_without_the_check() -> None:
    """09 computes an answer in Python; what it returns is what the grader would have read."""
    _, _, completion = _case(next(p for p in CORPUS if p.name.startswith("09_")))
    outcome = _outcome(completion)
    assert outcome.status is RunStatus.UNGROUNDED and outcome.calls == 0 and outcome.answer is not None


def test_verbatim_grounding_is_stricter_than_contained() -> None:
    """A workflow that wraps the executor's answer in its own words passes `contained` (the graded
    number is in a reply) and fails `verbatim` (the returned text is in none)."""
    completion = (
        "<graph>\nclass Workflow:\n    def __init__(self, llm, problem):\n        self.problem = problem\n"
        "        self.custom = operator.Custom(llm)\n\n    async def run_workflow(self):\n"
        '        result = await self.custom(input=self.problem, instruction="Solve step by step.")\n'
        '        return "Final: " + result["response"]\n</graph>'
    )
    assert _outcome(completion, "contained").status is RunStatus.OK
    assert _outcome(completion, "verbatim").status is RunStatus.UNGROUNDED


def test_grounding_hand_cases() -> None:
    replies = ["Step 1: 19 * 5 = 95. Step 2: 5 * 3 = 15. So \\boxed{110}.", "110.0"]
    assert ungrounded_reason("math", "The total is 110", replies, calls=2) is None
    assert ungrounded_reason("math", "110", [], calls=0) is not None
    assert "no executor reply" in (ungrounded_reason("math", "111", replies, calls=2) or "")
    assert ungrounded_reason("math", "2000", ["so the total is 2,000."], calls=1) is None  # the same number
    assert ungrounded_reason("math", "-0.5", ["x = -.50"], calls=1) is None
    assert ungrounded_reason("qa", "<answer>Chief of Protocol</answer>", ["answer: chief of  protocol"], 1) is None
    code = "def add(a, b):\n    return a + b"
    assert ungrounded_reason("code", f"```python\n{code}\n```", [f"Sure:\n```python\n{code}\n```"], 1, "add") is None
    assert question_specific("x = 1\ny = 'step by step'", ITEM.question) is None
    assert "19" in (question_specific("x = 19", ITEM.question) or "")
    copied = "Emma reads 19 pages a day for 5 days"
    assert "copies" in (question_specific(f"x = {copied.replace('19', 'many')!r}", ITEM.question) or "")
