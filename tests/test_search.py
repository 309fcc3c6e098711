"""The search baseline (methods/aflow.py, harness/search.py, harness/optimizers.py): AFlow's parent
choice and stopping rule by hand values, the SIMULATED optimizer's edits, and searches on the sim
testbed (SIMULATED numbers, not LLM results): better than the static baselines on validation,
duplicates never evaluated twice, invalid children recorded and never scored, and a search killed
with SIGKILL that resumes to the same rounds and the same chosen workflow."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import random
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from spogw.harness import failpoints
from spogw.harness.benchmarks import load_benchmark
from spogw.harness.benchmarks.base import Benchmark, Item
from spogw.harness.executors.base import CallInfo, Completion
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.optimizers import (
    OPERATOR_DESCRIPTIONS,
    LLMOptimizer,
    Proposal,
    ProposalRequest,
    SimulatedOptimizer,
    Tried,
    optimizer_prompt,
    parse_reply,
    structure_edits,
)
from spogw.harness.search import SearchKey, SearchResult, evaluate_child, rejection, run_search
from spogw.harness.store import SearchRow, SQLiteStore
from spogw.harness.workflows import grammar, grammar_parse
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.methods.aflow import (
    AFlowConfig,
    best_round,
    choose_parent,
    code_key,
    modification_key,
    parent_candidates,
    selection_probabilities,
    stagnated,
    top_k_mean,
)
from spogw.methods.static import workflow_source

KEY = SearchKey("search-test", "aflow", 0)


# -- the method's pure functions, by hand ---------------------------------------------------------


def test_selection_probabilities_match_aflows_formula_by_hand() -> None:
    # lambda 0.3, alpha 0.2 on scores in points: softmax weights 1 and exp(0.2 * -10) = e^-2
    soft = [1 / (1 + math.exp(-2)), math.exp(-2) / (1 + math.exp(-2))]
    expected = [0.15 + 0.7 * soft[0], 0.15 + 0.7 * soft[1]]
    assert selection_probabilities([0.5, 0.4], 0.3, 0.2) == pytest.approx(expected, abs=1e-12)
    assert selection_probabilities([0.5, 0.4], 0.3, 0.2) == pytest.approx([0.76656, 0.23344], abs=1e-5)
    assert selection_probabilities([0.2, 0.2, 0.2], 0.3, 0.2) == pytest.approx([1 / 3] * 3)
    assert selection_probabilities([0.9, 0.1], 1.0, 0.2) == pytest.approx([0.5, 0.5])  # lambda 1: uniform
    with pytest.raises(ValueError, match="no candidate"):
        selection_probabilities([], 0.3, 0.2)


def test_parents_are_the_top_k_and_drawn_with_the_mixed_probabilities() -> None:
    scores = {0: 0.2, 1: 0.5, 2: 0.5, 3: 0.4, 4: 0.1}
    assert parent_candidates(scores, 3) == [1, 2, 3]  # ties: the earlier round first
    assert parent_candidates(scores, 10) == [1, 2, 3, 0, 4]
    rng = random.Random(0)
    draws = [choose_parent(scores, 3, 0.3, 0.2, rng) for _ in range(20_000)]
    probabilities = selection_probabilities([0.5, 0.5, 0.4], 0.3, 0.2)
    for round_, p in zip([1, 2, 3], probabilities, strict=True):
        assert draws.count(round_) / len(draws) == pytest.approx(p, abs=0.015)
    assert not {0, 4} & set(draws)


def test_stagnation_is_the_top_k_mean_not_rising_for_patience_rounds() -> None:
    assert top_k_mean([0.1, 0.5, 0.3, 0.4], 2) == pytest.approx(0.45)
    flat = [[0.3], [0.3, 0.2], [0.3, 0.2, 0.1], [0.3, 0.2, 0.1, 0.3]]
    assert stagnated(flat, top_k=1, patience=3, min_improvement=0.0)
    assert not stagnated(flat, top_k=1, patience=0, min_improvement=0.0)  # 0: never
    assert not stagnated(flat[:3], top_k=1, patience=3, min_improvement=0.0)  # too few rounds yet
    rising = [*flat[:3], [0.3, 0.2, 0.1, 0.35]]
    assert not stagnated(rising, top_k=1, patience=3, min_improvement=0.0)
    assert stagnated(rising, top_k=1, patience=3, min_improvement=0.1)  # +0.05 is not a rise of 0.1


def test_modification_and_code_identity_ignore_what_does_not_change_them() -> None:
    assert modification_key("Add a Programmer!") == modification_key("  add a   programmer ") == "add a programmer"
    source = workflow_source("cot_sc")[1]
    reformatted = "# a comment\n" + source.replace('"""CoT-SC(5)', '"""Another docstring, CoT-SC(5)')
    assert code_key(reformatted) == code_key(source)
    assert code_key(source.replace("range(5)", "range(3)")) != code_key(source)
    assert best_round({0: 0.2, 3: 0.6, 5: 0.6}) == 3
    with pytest.raises(ValueError, match="scored no workflow"):
        best_round({})


# -- the SIMULATED optimizer ----------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["math", "code", "qa"])
def test_every_grammar_structure_and_the_shipped_statics_parse_back(domain: str) -> None:
    for structure in grammar.all_structures(domain):
        assert grammar_parse.parse_structure(grammar.render(structure), domain) == structure
    signatures = {w: grammar_parse.parse_structure(workflow_source(w)[1], domain) for w in ("io", "cot", "cot_sc")}
    assert {w: s.signature() if s else None for w, s in signatures.items()} == {
        "io": "Custom[plain]x1",
        "cot": "Custom[cot]x1",
        "cot_sc": "Custom[cot]x5>ScEnsemble",
    }
    assert grammar_parse.parse_structure("class Workflow: pass", domain) is None


@pytest.mark.parametrize("domain", ["math", "code", "qa"])
def test_each_edit_is_one_change_to_another_structure_of_the_grammar(domain: str) -> None:
    valid = set(grammar.all_structures(domain))
    for parent in grammar.all_structures(domain):
        edits = structure_edits(parent)
        assert edits, parent
        assert len({text for _, text, _ in edits}) == len(edits)
        for kind, _, child in edits:
            assert child in valid and child != parent
            changed = [f.name for f in dataclasses.fields(child) if getattr(child, f.name) != getattr(parent, f.name)]
            allowed = {"samples", "ensemble"} if kind.startswith("samples") else {"generator", "style"}
            assert len(changed) == 1 or set(changed) <= allowed, (kind, changed)


def _request(parent: str, tried: Sequence[Tried] = (), gains: Sequence[tuple[str, float]] = (), attempt: int = 0):  # type: ignore[no-untyped-def]
    return ProposalRequest("gsm_synth", "math", 1, attempt, 0, 0, parent, 0.3, tuple(tried), tuple(gains), ())


def test_the_simulated_optimizer_is_deterministic_skips_tried_edits_and_prefers_what_helped() -> None:
    io = workflow_source("io")[1]
    optimizer = SimulatedOptimizer(seed=0)
    first = asyncio.run(optimizer.propose(_request(io)))
    assert asyncio.run(optimizer.propose(_request(io))) == first
    assert grammar_parse.parse_structure(first.code, "math") is not None and first.calls == 0
    edits = structure_edits(grammar_parse.parse_structure(io, "math"))  # type: ignore[arg-type]
    tried = [Tried(text, "score 0.1 (parent 0.3)") for _, text, _ in edits[:-1]]
    assert asyncio.run(optimizer.propose(_request(io, tried))).modification == edits[-1][1]
    # weights: exp(bias x mean gain of the kind); a kind never tried weighs 1
    style = next(e for e in edits if e[0] == "style:cot")
    weights = optimizer.weights(edits, {"style:cot": [0.1, 0.3]})
    assert weights[edits.index(style)] == pytest.approx(math.exp(10 * 0.2))
    assert all(w == 1.0 for e, w in zip(edits, weights, strict=True) if e is not style)
    helped = [(style[1], 0.3)]
    picks = [asyncio.run(optimizer.propose(_request(io, gains=helped, attempt=a))).modification for a in range(200)]
    share = picks.count(style[1]) / len(picks)
    expected = math.exp(3.0) / (math.exp(3.0) + len(edits) - 1)
    assert share == pytest.approx(expected, abs=0.08)


# -- the LLM optimizer's prompt and reply ---------------------------------------------------------


class ScriptedExecutor:
    """An executor backend that replies with the given texts in turn, recording the prompts."""

    name, simulated = "scripted", False

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies, self.prompts = list(replies), []

    def describe(self) -> str:
        return "scripted"

    async def complete(self, prompt: str, info: CallInfo) -> Completion:
        self.prompts.append(prompt)
        return Completion(self.replies.pop(0), len(prompt) // 4, 50)

    async def close(self) -> None:
        return None


def test_the_optimizer_prompt_shows_parent_operators_tried_modifications_and_failures() -> None:
    io = workflow_source("io")[1]
    failures = ({"item": "q1", "question": "What is 2+2?", "answer": "5", "expected": "4"},)
    tried = (Tried("Add a Programmer.", "score 0.250 (parent 0.300)"), Tried("Use Format.", "invalid: no class"))
    request = dataclasses.replace(_request(io, tried), failures=failures)
    prompt = optimizer_prompt(request, "v1")
    assert io.strip() in prompt and "0.300" in prompt and "What is 2+2?" in prompt and "Expected: 4" in prompt
    assert "- Add a Programmer. -> score 0.250 (parent 0.300)" in prompt and "invalid: no class" in prompt
    shown = {name for name, line in OPERATOR_DESCRIPTIONS.items() if line in prompt}
    assert shown == {"Custom", "AnswerGenerate", "Programmer", "ScEnsemble", "Review", "Revise", "Format"}  # math's
    assert "on the validation questions" in prompt
    assert "{" + "graph}" not in prompt
    with pytest.raises(FileNotFoundError, match=r"optimize\.v9"):
        optimizer_prompt(request, "v9")


def test_an_optimizer_reply_is_read_with_or_without_a_code_fence() -> None:
    code = "class Workflow:\n    pass"
    assert parse_reply(f"<modification> Add X. </modification>\n<graph>\n{code}\n</graph>") == ("Add X.", code)
    assert parse_reply(f"<modification>m</modification><graph>```python\n{code}\n```</graph>") == ("m", code)
    assert parse_reply("no tags at all") == ("", "")


# -- searches on the sim testbed ------------------------------------------------------------------


def _search_items(name: str, count: int) -> tuple[Benchmark, list[Item]]:
    benchmark = load_benchmark(name)
    return benchmark, benchmark.split("validation", 0.5, 0, 0.25)[:count]


async def _search(
    store: SQLiteStore,
    benchmark: Benchmark,
    items: Sequence[Item],
    config: AFlowConfig,
    optimizer=None,  # type: ignore[no-untyped-def]
) -> SearchResult:
    engine = WorkflowEngine(SimExecutor("medium", seed=0), concurrency=4, timeout_s=60)
    try:
        optimizer = optimizer or SimulatedOptimizer(seed=0)
        return await run_search(workflow_source("io")[1], benchmark, items, engine, optimizer, store, KEY, config)
    finally:
        await engine.close()


async def _baselines(benchmark: Benchmark, items: Sequence[Item], repeats: int) -> dict[str, float]:
    engine = WorkflowEngine(SimExecutor("medium", seed=0), concurrency=4, timeout_s=60)
    try:
        scores = {}
        for name in ("io", "cot", "cot_sc"):
            item_scores, _ = await evaluate_child(workflow_source(name)[1], benchmark, items, engine, repeats, KEY)
            scores[name] = sum(item_scores.values()) / len(item_scores)
        return scores
    finally:
        await engine.close()


@pytest.mark.parametrize(("name", "count"), [("gsm_synth", 40), ("humaneval", 24)])
def test_the_search_finds_a_workflow_at_least_as_good_as_io_cot_and_cot_sc_on_validation(
    tmp_path: Path, name: str, count: int
) -> None:
    benchmark, items = _search_items(name, count)
    config = AFlowConfig(rounds=10)
    with SQLiteStore(tmp_path / "search.sqlite") as store:
        result = asyncio.run(_search(store, benchmark, items, config))
    baselines = asyncio.run(_baselines(benchmark, items, config.validation_repeats))
    print(f"SIMULATED {name}: search {result.score:.3f} (round {result.best}) vs {baselines}")
    assert result.score >= max(baselines.values())
    evaluated = [r for r in result.rows if r.status == "evaluated"]
    assert result.score == max(r.score for r in evaluated if r.score is not None)
    assert len({code_key(r.code) for r in evaluated}) == len(evaluated), "a workflow evaluated twice"
    assert max(r.round for r in result.rows) == config.rounds and result.stopped == "budget"


class RepeatingOptimizer:
    """Proposes from a fixed list (modification, code), in order: duplicates and invalid code on purpose."""

    name, simulated = "repeating", False

    def __init__(self, proposals: Sequence[tuple[str, str]]) -> None:
        self.proposals = list(proposals)
        self.requests: list[ProposalRequest] = []

    def describe(self) -> str:
        return "repeating"

    async def propose(self, request: ProposalRequest) -> Proposal:
        self.requests.append(request)
        modification, code = self.proposals[min(len(self.requests) - 1, len(self.proposals) - 1)]
        return Proposal(modification, code, 1, 10, 5)

    async def close(self) -> None:
        return None


def test_duplicates_are_never_evaluated_and_invalid_children_are_recorded_and_never_scored(tmp_path: Path) -> None:
    benchmark, items = _search_items("gsm_synth", 6)
    cot = grammar.render(grammar.Structure("math", "Custom", 1, "cot"))
    cot_sc = grammar.render(grammar.Structure("math", "Custom", 3, "cot", ensemble=True))
    proposals = [
        ("Use CoT.", cot),  # round 1
        ("Add votes.", "import os\n" + cot_sc),  # round 2: invalid, an import
        ("Add votes.", cot_sc),  # the same modification of the same parent
        ("Think step by step.", "# same code, another comment\n" + cot),  # the same workflow as round 1
        ("Reply without code.", ""),  # invalid: no code
        ("Vote over three.", cot_sc),
    ]
    optimizer = RepeatingOptimizer(proposals)
    config = AFlowConfig(rounds=2, top_k=1, max_attempts=5, patience=0)  # top-1: every attempt of a round, one parent
    with SQLiteStore(tmp_path / "search.sqlite") as store:
        result = asyncio.run(_search(store, benchmark, items, config, optimizer))
    assert [(r.round, r.attempt, r.status) for r in result.rows] == [
        (0, 0, "evaluated"), (1, 0, "evaluated"), (2, 0, "invalid"), (2, 1, "duplicate"), (2, 2, "duplicate"),
        (2, 3, "invalid"), (2, 4, "evaluated"),
    ]  # fmt: skip
    imported, same_modification, same_code, empty = result.rows[2:6]
    parent = imported.parent
    assert "Import is not allowed" in imported.reason and "no workflow code" in empty.reason
    assert same_modification.reason == f"modification tried from round {parent} before (round 2)"
    assert same_code.reason == "the same workflow as round 1"
    for rejected in result.rows[2:6]:
        assert rejected.score is None and rejected.calls == 0 and rejected.item_scores == "{}"
        assert rejected.optimizer_calls == 1 and rejected.parent == parent
    assert result.score == max(r.score for r in result.rows if r.score is not None)
    assert len(optimizer.requests) == 6
    # the last proposal was asked for knowing every outcome from its parent, rejections included
    outcomes = [t.outcome.split(":")[0] for t in optimizer.requests[-1].tried if not t.outcome.startswith("score")]
    assert outcomes == ["invalid", "duplicate", "duplicate", "invalid"]


def _rows(path: Path) -> list[SearchRow]:
    with SQLiteStore(path) as store:
        return [dataclasses.replace(r, wall_s=0.0) for r in store.search_rows(KEY.method, KEY.seed, "gsm_synth")]


def test_a_search_killed_with_sigkill_resumes_to_the_same_rounds_and_choice(tmp_path: Path) -> None:
    benchmark, items = _search_items("gsm_synth", 12)
    config = AFlowConfig(rounds=6, validation_repeats=2)
    with SQLiteStore(tmp_path / "whole.sqlite") as store:
        whole = asyncio.run(_search(store, benchmark, items, config))
    killed = tmp_path / "killed.sqlite"
    for kill_at in (3, 2):  # two lives killed after their 3rd and 2nd stored proposal, then one that finishes
        child = os.fork()
        if child == 0:
            try:
                failpoints.configure(f"store.search_rounds={kill_at}")
                with SQLiteStore(killed) as store:
                    asyncio.run(_search(store, benchmark, items, config))
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert len(_rows(killed)) == 5
    with SQLiteStore(killed) as store:
        resumed = asyncio.run(_search(store, benchmark, items, config))
    assert _rows(killed) == _rows(tmp_path / "whole.sqlite")
    assert (resumed.best, resumed.code, resumed.score) == (whole.best, whole.code, whole.score)


def test_rejection_reads_only_the_stored_rows() -> None:
    cot = grammar.render(grammar.Structure("math", "Custom", 1, "cot"))
    row = SearchRow("aflow", 0, "gsm_synth", 1, 0, 0, "Use CoT.", cot, "Custom", "evaluated", "", 0.5,
                    json.dumps({"q": 0.5}), "[]", 3, 1, 1, 0.0, 0, 0, 0, 0.1)  # fmt: skip
    assert rejection("use cot", "x = 1", 0, [row]) == ("duplicate", "modification tried from round 0 before (round 1)")
    assert rejection("use cot", "x = 1", 1, [row]) == ("invalid", rejection("m", "x = 1", 1, [])[1])  # type: ignore[index]
    assert rejection("other", cot, 1, [row]) == ("duplicate", "the same workflow as round 1")
    plain = grammar.render(grammar.Structure("math", "Custom", 1, "plain"))
    assert rejection("other", plain, 1, [row]) is None


def test_an_llm_optimizer_proposes_through_its_executor(tmp_path: Path) -> None:
    benchmark, items = _search_items("gsm_synth", 4)
    cot = grammar.render(grammar.Structure("math", "Custom", 1, "cot"))
    executor = ScriptedExecutor([f"<modification>Think first.</modification><graph>{cot}</graph>"])
    config = AFlowConfig(rounds=1, validation_repeats=1)
    with SQLiteStore(tmp_path / "search.sqlite") as store:
        result = asyncio.run(_search(store, benchmark, items, config, LLMOptimizer(executor)))  # type: ignore[arg-type]
    child = result.rows[1]
    assert (child.modification, child.code, child.status) == ("Think first.", cot.strip(), "evaluated")
    assert child.optimizer_calls == 1 and child.optimizer_completion_tokens == 50
    assert workflow_source("io")[1].strip() in executor.prompts[0]


# -- configuration --------------------------------------------------------------------------------


def test_a_search_without_its_split_and_an_unknown_optimizer_are_named_with_their_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spogw.harness.cli import main

    experiment = tmp_path / "search.yaml"
    experiment.write_text(
        "version: 1\nname: s\nbenchmarks: [{name: gsm_synth, size: 30}]\n"
        "methods: [{name: static, label: io, overrides: {workflow: io}}, {name: aflow}]\nseeds: [0]\niterations: 0\n"
    )
    assert main(["run", str(experiment), "--run-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "methods.1 (aflow)" in error and "validation split, which is empty for benchmarks.0 gsm_synth" in error
    assert "methods.1.overrides.split" in error
    experiment.write_text(experiment.read_text() + "optimizer: {name: gpt4}\n")
    assert main(["check", str(experiment)]) == 2
    assert "optimizer.name" in capsys.readouterr().err


def test_a_simulated_optimizer_marks_its_search_simulated_even_with_a_real_executor() -> None:
    from spogw.harness.config import ExperimentConfig

    fields = {
        "version": 1,
        "name": "s",
        "benchmarks": [{"name": "gsm_synth"}],
        "executor": {"name": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
        "methods": [{"name": "aflow"}, {"name": "static", "label": "io", "overrides": {"workflow": "io"}}],
    }
    simulation = ExperimentConfig.model_validate(fields).simulation()
    assert simulation.methods == {"aflow": True, "io": False}
    real = ExperimentConfig.model_validate({**fields, "optimizer": {"name": "openai", "model": "o"}}).simulation()
    assert real.methods == {"aflow": False, "io": False}


class FlakyExecutor(SimExecutor):
    """The simulator, except that every call whose instruction says BROKEN fails in the executor."""

    async def complete(self, prompt: str, info: CallInfo) -> Completion:
        if "BROKEN" in info.instruction:
            from spogw.harness.executors.base import InfraError

            raise InfraError("the endpoint failed")
        return await super().complete(prompt, info)


class ExhaustedOptimizer(RepeatingOptimizer):
    """Proposes its list, then has no modification left for any parent."""

    async def propose(self, request: ProposalRequest) -> Proposal:
        from spogw.harness.optimizers import NoEditLeft

        if len(self.requests) >= len(self.proposals):
            self.requests.append(request)
            raise NoEditLeft("nothing left")
        return await super().propose(request)


def test_unscorable_children_are_stored_unscored_and_an_exhausted_search_stops(tmp_path: Path) -> None:
    benchmark, items = _search_items("gsm_synth", 4)
    cot = grammar.render(grammar.Structure("math", "Custom", 1, "cot"))
    broken = cot.replace("Think step by step", "BROKEN. Think step by step")
    crashing = cot.replace("result['response']", "result['no_such_field']")
    optimizer = ExhaustedOptimizer([("Break the executor.", broken), ("Read a missing field.", crashing)])
    config = AFlowConfig(rounds=5, top_k=1, max_attempts=3, patience=0, validation_repeats=1)

    async def search(store: SQLiteStore) -> SearchResult:
        engine = WorkflowEngine(FlakyExecutor("medium", seed=0), concurrency=2, timeout_s=60)
        try:
            return await run_search(
                workflow_source("io")[1],
                benchmark,
                items,
                engine,
                optimizer,
                store,
                KEY,
                config,  # type: ignore[arg-type]
            )
        finally:
            await engine.close()

    with SQLiteStore(tmp_path / "search.sqlite") as store:
        result = asyncio.run(search(store))
    statuses = [(r.round, r.status) for r in result.rows]
    assert statuses == [(0, "evaluated"), (1, "infra_error"), (1, "invalid"), (1, "exhausted")]
    infra, invalid, exhausted = result.rows[1:]
    assert "4 of 4 runs failed in the executor" in infra.reason and infra.score is None
    assert invalid.reason.startswith("every run failed (runtime_error") and invalid.score is None and invalid.calls > 0
    assert exhausted.parent == 0 and result.stopped == "exhausted" and result.best == 0


def test_an_llm_optimizer_outage_stops_the_run_resumably_and_seeds_draw_apart() -> None:
    from spogw.harness.errors import ServiceUnavailable
    from spogw.harness.executors.base import InfraError
    from spogw.harness.optimizers import proposal_draw

    class Down(ScriptedExecutor):
        async def complete(self, prompt: str, info: CallInfo) -> Completion:
            raise InfraError("HTTP 503")

    optimizer = LLMOptimizer(Down([]))  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable, match=r"HTTP 503.*resumes at this proposal"):
        asyncio.run(optimizer.propose(_request(workflow_source("io")[1])))
    draws = {proposal_draw(dataclasses.replace(_request("x", attempt=a), seed=s)) for s in range(3) for a in range(3)}
    assert len(draws) == 9


def test_a_search_on_the_reported_split_and_stray_optimizer_fields_are_refused(tmp_path: Path) -> None:
    from spogw.harness.config import ConfigError, ExperimentConfig, OptimizerConfig
    from spogw.harness.plan import load_splits

    base = {
        "version": 1,
        "name": "s",
        "benchmarks": [{"name": "gsm_synth", "size": 40, "split": {"test_fraction": 0.5, "validation_fraction": 0.2}}],
        "methods": [{"name": "aflow"}],
        "iterations": 0,
    }
    with pytest.raises(ConfigError, match=r"methods.0 \(aflow\).*biased upward"):
        load_splits(ExperimentConfig.model_validate({**base, "evaluation": {"split": "validation"}}))
    outside = {**base, "methods": [{"name": "aflow", "overrides": {"seed_workflow": "scoreflow_math"}}]}
    with pytest.raises(ConfigError, match="not a structure of the math workflow grammar"):
        load_splits(ExperimentConfig.model_validate(outside))
    assert load_splits(ExperimentConfig.model_validate(base))[0].search_items(AFlowConfig())
    with pytest.raises(ValueError, match="configure an LLM optimizer"):
        OptimizerConfig(name="sim", model="gpt-4o")
    llm = OptimizerConfig(name="openai", model="o", base_url="http://127.0.0.1:9/v1")
    for written in (OptimizerConfig(bias=3.0), llm):  # config.resolved.yaml writes every field: it reads back
        assert OptimizerConfig.model_validate(written.model_dump(mode="json")) == written
    with pytest.raises(ValueError, match="bias weighs the SIMULATED"):
        OptimizerConfig(name="openai", model="o", base_url="http://127.0.0.1:9/v1", bias=3.0)


def test_patience_stops_a_stagnant_search_and_failure_logs_and_search_limit_bound_what_is_used(tmp_path: Path) -> None:
    from spogw.harness.plan import BenchmarkSplit

    benchmark, items = _search_items("gsm_synth", 12)
    config = AFlowConfig(rounds=12, patience=1, failure_logs=2, validation_repeats=1)
    with SQLiteStore(tmp_path / "search.sqlite") as store:
        result = asyncio.run(_search(store, benchmark, items, config))
    last = max(r.round for r in result.rows)
    assert result.stopped == "stagnation" and last < config.rounds
    history = [[r.score for r in result.rows if r.score is not None and r.round <= k] for k in range(last + 1)]
    assert stagnated(history, config.top_k, 1, 0.0)  # what stopped it, read back from the stored rows
    assert not stagnated(history[:-1], config.top_k, 1, 0.0), "it stopped at the first stagnant round"
    assert all(len(json.loads(r.failures)) <= 2 for r in result.rows) and any(
        json.loads(r.failures) for r in result.rows
    )
    split = BenchmarkSplit(benchmark, [], [], items)
    assert list(split.search_items(AFlowConfig(search_limit=5))) == items[:5]
    assert list(split.search_items(AFlowConfig(split="train"))) == []
