"""The simulated executor: determinism, and the properties that make it a fair testbed
(DESIGN.md, 'What makes the simulator a fair testbed'). Each property is one test."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

import pytest

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.benchmarks.base import Benchmark, Item
from spogw.harness.evaluate import evaluate_workflow
from spogw.harness.executors.base import CallInfo
from spogw.harness.executors.sim import SimExecutor, classify, render, traits_of
from spogw.harness.executors.sim_profiles import PROFILES
from spogw.harness.scores import item_scores
from spogw.harness.store import EvalRow
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.harness.workflows.grammar import Structure
from spogw.harness.workflows.grammar import render as render_workflow
from tests.conftest import run

GSM = load_benchmark("gsm_synth", size=120)
MATH_ITEMS = list(GSM.items[:60])


def evaluate(
    source: str,
    items: Sequence[Item],
    profile: str = "medium",
    repeats: int = 3,
    seed: int = 0,
    benchmark: Benchmark = GSM,
) -> list[EvalRow]:
    async def go() -> list[EvalRow]:
        engine = WorkflowEngine(SimExecutor(profile, seed=seed), concurrency=4, timeout_s=60)
        try:
            return await evaluate_workflow(source, benchmark, items, engine, repeats, progress=False)
        finally:
            await engine.close()

    return run(go())


def mean_score(runs: Sequence[EvalRow]) -> float:
    return statistics.fmean(item_scores(runs).values())


def cot(samples: int = 1, **flags: bool) -> str:
    return render_workflow(Structure("math", "Custom", samples, "cot", ensemble=samples > 1, **flags))


def test_same_seed_same_answers_other_seed_differs() -> None:
    source = cot(3)
    first, again = evaluate(source, MATH_ITEMS[:20]), evaluate(source, MATH_ITEMS[:20])
    assert [(r.answer, r.score, r.completion_tokens) for r in first] == [
        (r.answer, r.score, r.completion_tokens) for r in again
    ]
    other = evaluate(source, MATH_ITEMS[:20], seed=1)
    assert [r.answer for r in other] != [r.answer for r in first]


def test_reply_depends_on_structure_not_on_prompt_text() -> None:
    sim = SimExecutor("medium")
    item = MATH_ITEMS[0]
    info = CallInfo(operator="Custom", item=item, repeat=0, instruction="Think step by step.")
    assert run(sim.complete("prompt A", info)).text == run(sim.complete("a different prompt", info)).text


def test_every_reply_is_labelled_simulated() -> None:
    sim = SimExecutor("medium")
    assert "SIMULATED" in sim.describe()
    text = render("math", "Custom", "42")
    assert "[simulated executor]" in text and "\\boxed{42}" in text


def test_classify_identifies_known_answers() -> None:
    item = MATH_ITEMS[0]
    traits = traits_of(item)
    assert classify("math", traits, traits.correct).identity == 0
    assert classify("math", traits, traits.distractors[0]).identity == 1
    assert classify("math", traits, "123456789").identity == -1


def test_repeats_disagree_at_a_realistic_rate() -> None:
    runs = evaluate(cot(1), MATH_ITEMS)
    per_item = item_scores(runs)
    assert set(per_item.values()) <= {0.0, 1 / 3, 2 / 3, 1.0}
    mixed = sum(0.0 < score < 1.0 for score in per_item.values()) / len(per_item)
    print(f"items whose 3 repeats disagree: {mixed:.2f}")
    assert 0.15 <= mixed <= 0.6


def test_profiles_are_ordered_by_skill() -> None:
    scores = {profile: mean_score(evaluate(cot(1), MATH_ITEMS, profile)) for profile in ("weak", "medium", "strong")}
    print(scores)
    assert scores["weak"] + 0.1 < scores["medium"] < scores["strong"] - 0.1


def test_self_consistency_has_diminishing_returns_and_saturates() -> None:
    items = list(GSM.items)
    k1, k3, k15 = (mean_score(evaluate(cot(k), items)) for k in (1, 3, 15))
    print(f"CoT-SC k=1 {k1:.3f}, k=3 {k3:.3f}, k=15 {k15:.3f}")
    assert k1 < k3 < k15
    assert (k15 - k3) / 12 < (k3 - k1) / 2  # the gain per added call shrinks
    assert k15 < 0.95  # correlated wrong answers: more calls never guarantee success


def test_review_revise_hurts_on_easy_items() -> None:
    easy = [item for item in GSM.items if traits_of(item).difficulty < 0.0][:40]
    plain = mean_score(evaluate(cot(1), easy))
    revised = mean_score(evaluate(cot(1, review=True), easy, profile="coder"))
    print(f"easy items: CoT {plain:.3f}, CoT+Review+Revise (coder) {revised:.3f}")
    assert revised < plain


def test_programmer_helps_computational_items_only() -> None:
    program_only = (
        "class Workflow:\n    def __init__(self, llm, problem):\n        self.problem = problem\n"
        "        self.programmer = operator.Programmer(llm)\n\n    async def run_workflow(self):\n"
        "        result = await self.programmer(problem=self.problem, analysis='')\n"
        "        return result['output']\n"
    )
    computational = [i for i in GSM.items if traits_of(i).computational][:30]
    other = [i for i in GSM.items if not traits_of(i).computational][:30]
    gain_comp = mean_score(evaluate(program_only, computational)) - mean_score(evaluate(cot(1), computational))
    gain_other = mean_score(evaluate(program_only, other)) - mean_score(evaluate(cot(1), other))
    print(f"Programmer minus CoT: computational {gain_comp:+.3f}, other {gain_other:+.3f}")
    assert gain_comp > 0.1 and gain_other < 0.0


def test_a_program_that_crashes_on_every_attempt_is_graded_wrong_not_ungrounded() -> None:
    """Program-of-thought returns the Programmer's output; when every attempt crashed that output is
    the operator's error text, which the grader scores 0. It came from an operator, so the run is
    ``ok`` (a wrong answer), never ``ungrounded`` (an answer the workflow made up): the learning
    check once saw 0.4% of runs marked ungrounded this way."""
    from spogw.harness.workflows.operators import PROGRAMMER_ATTEMPTS

    program_only = render_workflow(Structure("math", "Custom", 1, "plain", programmer=True))
    runs = evaluate(program_only, MATH_ITEMS[:20], profile="verifier")  # its programs crash 70% of the time
    assert {r.status for r in runs} == {"ok"}
    assert any(r.score == 0.0 and r.calls == 1 + PROGRAMMER_ATTEMPTS for r in runs)


def test_test_operator_needs_tests_and_costs_nothing_without_them() -> None:
    source = render_workflow(Structure("math", "Custom", 1, "cot"))
    with_test = source.replace(
        "        return answer",
        "        checked = await self.test(problem=self.problem, solution=answer)\n        return checked['solution']",
    ).replace(
        "        self.custom = operator.Custom(llm)",
        "        self.custom = operator.Custom(llm)\n        self.test = operator.Test(llm)",
    )
    base, tested = evaluate(source, MATH_ITEMS[:20]), evaluate(with_test, MATH_ITEMS[:20])
    assert [r.score for r in base] == [r.score for r in tested]
    assert sum(r.calls for r in base) == sum(r.calls for r in tested)


def test_every_call_costs_tokens_and_more_calls_cost_more() -> None:
    single, ensemble = evaluate(cot(1), MATH_ITEMS[:20]), evaluate(cot(5), MATH_ITEMS[:20])
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in single)
    assert sum(r.completion_tokens for r in ensemble) > 4 * sum(r.completion_tokens for r in single)


def test_profiles_disagree_on_the_best_structure() -> None:
    candidates = {
        "cot_sc5": cot(5),
        "cot_sc3+programmer": cot(3, programmer=True),
        "cot+review": cot(1, review=True),
        "cot_sc3+review": cot(3, review=True),
    }
    best = {}
    for profile in ("coder", "verifier"):
        scores = {name: mean_score(evaluate(src, MATH_ITEMS, profile)) for name, src in candidates.items()}
        print(profile, {k: round(v, 3) for k, v in scores.items()})
        best[profile] = max(scores, key=scores.__getitem__)
    assert best["coder"] != best["verifier"]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_parameters_are_probabilities(profile: str) -> None:
    p = PROFILES[profile]
    for value in (
        p.ensemble_majority,
        p.review_detect,
        p.review_false_alarm,
        p.revise_break_easy,
        p.revise_break_hard,
        p.format_error,
        p.programmer_crash,
    ):
        assert 0.0 <= value <= 1.0
    assert 0.0 < p.distractor_decay < 1.0


def test_docs_profile_table_is_current(repo) -> None:  # type: ignore[no-untyped-def]
    from spogw.harness.executors.sim_oracle import profile_table

    assert profile_table() in (repo / "docs" / "simulator.md").read_text(), (
        "docs/simulator.md is stale: paste the output of spogw.harness.executors.sim_oracle.profile_table()"
    )


QA = load_benchmark("qa_synth", size=60)
HUMANEVAL = load_benchmark("humaneval")
CODE = "CustomCodeGenerate"
MATH_COT = Structure("math", "Custom", 1, "cot")


def _of_kind(benchmark: Benchmark, kind: str, count: int) -> list[Item]:
    return [item for item in benchmark.items if traits_of(item).kind == kind][:count]


CROSSOVERS = [
    # PAL (arXiv 2211.10435): a program does large-number arithmetic exactly; text reasoning slips
    (GSM, "large_numbers", "small_numbers", Structure("math", "Custom", 1, "plain", programmer=True), MATH_COT),
    # UnCert-CoT (arXiv 2503.15341): reasoning first pays on hard specifications, misleads on simple ones
    (HUMANEVAL, "long_spec", "short_spec", Structure("code", CODE, 1, "cot"), Structure("code", CODE, 1, "plain")),
    # self-ask (arXiv 2210.03350): sub-questions close the compositionality gap of bridge questions
    (QA, "bridge", "single_hop", Structure("qa", "Custom", 1, "decompose"), Structure("qa", "Custom", 1, "cot")),
]


@pytest.mark.parametrize(
    ("benchmark", "helped", "hurt", "better", "worse"),
    CROSSOVERS,
    ids=["math-program-of-thought", "code-reasoning-first", "qa-decomposition"],
)
def test_each_mechanism_helps_one_visible_kind_and_hurts_the_other(
    benchmark: Benchmark, helped: str, hurt: str, better: Structure, worse: Structure
) -> None:
    """The crossovers that give the testbed its question-conditional optimum (docs/simulator.md,
    'Headroom by design'): on its kind a technique gains >= 15 points, on the other kind it loses."""
    gains = {}
    for kind in (helped, hurt):
        items = _of_kind(benchmark, kind, 20)
        assert len(items) == 20
        gains[kind] = mean_score(evaluate(render_workflow(better), items, benchmark=benchmark)) - mean_score(
            evaluate(render_workflow(worse), items, benchmark=benchmark)
        )
    print(f"{better.signature()} minus {worse.signature()}: {gains}")
    assert gains[helped] >= 0.15
    assert gains[hurt] < 0.0


def test_each_kind_is_visible_in_the_question_text() -> None:
    """What the class oracle conditions on is something a generator can read, not a hidden trait."""
    for item in GSM.items:
        assert (traits_of(item).kind == "large_numbers") == bool(re.search(r"\d{3,}", item.question))
    for item in HUMANEVAL.items:
        assert (traits_of(item).kind == "short_spec") == (len(item.question) < 400)
    for item in QA.items:
        question = item.question.split("\n")[0]
        assert question.startswith("Question: ")  # the question comes before the passages
        bridge = re.search(r"the (director|author) of|the company founded by", question) is not None
        assert (traits_of(item).kind == "bridge") == bridge
    kinds = [traits_of(item).kind for item in QA.items]
    assert kinds.count("bridge") == kinds.count("single_hop") == 30


def test_the_oracle_runs_grammar_renderings_in_process_with_the_workers_results() -> None:
    """The in-process runner (the oracle's) gives every row the isolated workers give, on structures
    with sampling, a program, an ensemble and review; and it refuses code the grammar did not render,
    so generated code can never reach it."""
    from spogw.harness.workflows.inprocess import NotAGrammarRendering

    gsm = load_benchmark("gsm_synth")
    items = list(gsm.items[:6])
    structures = [
        Structure("math", "Custom", 1, "cot"),
        Structure("math", "Custom", 3, "cot", programmer=True, ensemble=True, review=True, format=True),
        Structure("math", "AnswerGenerate", 5, "cot", ensemble=True),
    ]

    async def rows(in_process: bool) -> list[EvalRow]:
        engine = WorkflowEngine(SimExecutor("medium"), concurrency=4, timeout_s=60, grammar_only_in_process=in_process)
        try:
            found: list[EvalRow] = []
            for structure in structures:
                found += await evaluate_workflow(render_workflow(structure), gsm, items, engine, 2, progress=False)
            return found
        finally:
            await engine.close()

    def comparable(found: list[EvalRow]) -> list[tuple[object, ...]]:
        return [(r.item_id, r.repeat, r.workflow_code, r.status, r.reason, r.score, r.calls, r.answer) for r in found]

    in_process, isolated = run(rows(True)), run(rows(False))
    assert comparable(in_process) == comparable(isolated)
    assert {r.status for r in isolated} == {"ok"} and {r.score for r in isolated} == {0.0, 1.0}

    async def generated() -> None:
        engine = WorkflowEngine(SimExecutor("medium"), grammar_only_in_process=True)
        try:
            await engine.run(render_workflow(structures[0]) + "\n# edited\n", items[0], 0)
        finally:
            await engine.close()

    with pytest.raises(NotAGrammarRendering, match="only those run in-process"):
        run(generated())

    async def handed_directly() -> None:  # the runner's own lock, behind the engine's
        from spogw.harness.workflows.inprocess import InProcessRunner
        from spogw.harness.workflows.validate import validate_workflow

        edited = render_workflow(structures[0]).replace("Think step by step", "Think hard")
        guarded = validate_workflow(edited).guarded_source

        async def handler(op: str, kwargs: dict[str, object]) -> dict[str, object]:
            raise AssertionError("no operator may run")

        await InProcessRunner().run(guarded, items[0].question, handler, 5.0)

    with pytest.raises(NotAGrammarRendering, match="only those run in-process"):
        run(handed_directly())
