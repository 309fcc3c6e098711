"""The search loop of a search method (methods/aflow.py) on one benchmark: proposals from an
optimizer (harness/optimizers.py), children validated, deduplicated and evaluated on the search
split, every proposal stored as a `SearchRow`.

The search's state is its stored rows and nothing else: which rounds are scored, what was tried
from which parent, what each edit gained. Every random choice (the parent, the SIMULATED
optimizer's edit) is drawn from a generator seeded by (seed, benchmark, round, attempt). So a search
killed at any moment and run again reads its rows, continues with the proposal it had not stored,
and makes the same choices: the same rounds and the same chosen workflow as an uninterrupted
search (tests/test_search.py kills one; the chaos drill kills them in `spogw run`). A proposal
killed before its row is committed is made again (an LLM optimizer's reply comes from the response
cache; the executor's from its own).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spogw.harness.errors import InputError
from spogw.harness.optimizers import NoEditLeft, Optimizer, ProposalRequest, Tried
from spogw.harness.store import SearchRow
from spogw.methods.aflow import (
    AFlowConfig,
    best_round,
    choose_parent,
    code_key,
    modification_key,
    stagnated,
)

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Benchmark, Item
    from spogw.harness.config import ExperimentConfig
    from spogw.harness.plan import BenchmarkSplit
    from spogw.harness.store import EvalRow, SQLiteStore
    from spogw.harness.workflows.engine import WorkflowEngine


INFRA_RETRIES = 2
"""Times the runs of a child that ended infra_error are run again before the proposal is stored as
infra_error (never scored: the executor failed, not the workflow)."""
FAILED = frozenset({"invalid", "runtime_error", "timeout"})
"""Run statuses that say the workflow itself failed: a child with no other run is invalid (AFlow
dry-runs a child and rejects it when it raises), never a score of 0."""


@dataclass(frozen=True)
class SearchKey:
    experiment: str
    method: str
    seed: int


@dataclass(frozen=True)
class SearchResult:
    best: int
    """The chosen round: the highest search score, the earlier on ties."""
    code: str
    score: float
    rows: list[SearchRow]
    stopped: str
    """Why the search ended: 'budget' (every round done), 'stagnation' (patience ran out) or
    'exhausted' (no scored workflow had a modification left)."""


def check_searches(config: ExperimentConfig, splits: Sequence[BenchmarkSplit]) -> None:
    """Refuse, before any work, a search method whose search split is empty or is the split the
    report scores (evaluation.split), or whose seed workflow the SIMULATED optimizer cannot edit.
    Raises ConfigError naming the method and the field."""
    from spogw.harness.config import ConfigError, method_config
    from spogw.methods.config import method_kind

    for index, method_spec in enumerate(config.methods):
        method = method_config(method_spec)
        if method_kind(method) != "search":
            continue
        where = f"methods.{index} ({method_spec.display_label})"
        if method.split == config.evaluation.split:
            raise ConfigError(
                f"{where}: the search scores workflows on the {method.split} split, which evaluation.split also "
                "reports: its chosen workflow would be scored on the items it was chosen on (biased upward); "
                f"set methods.{index}.overrides.split or evaluation.split to another split"
            )
        if config.optimizer.name == "sim":
            _check_simulated_seed(method.seed_workflow, splits, where)
        empty = [f"benchmarks.{i} {s.benchmark.name}" for i, s in enumerate(splits) if not s.search_items(method)]
        if empty:
            remedy = "set split.validation_fraction > 0" if method.split == "validation" else "give it training items"
            raise ConfigError(
                f"methods.{index} ({method_spec.display_label}): the search scores workflows on the {method.split} "
                f"split, which is empty for {', '.join(empty)}: {remedy}, or set methods.{index}.overrides.split"
            )


def _check_simulated_seed(seed_workflow: str, splits: Sequence[BenchmarkSplit], where: str) -> None:
    """The SIMULATED optimizer edits grammar structures: a seed workflow outside the grammar of a
    benchmark's domain is refused before round 0 is paid for."""
    from spogw.harness.config import ConfigError
    from spogw.harness.workflows.grammar_parse import parse_structure
    from spogw.methods.static import workflow_source

    source = workflow_source(seed_workflow)[1]
    for split in splits:
        if parse_structure(source, split.benchmark.domain) is None:
            raise ConfigError(
                f"{where}: seed_workflow {seed_workflow!r} is not a structure of the {split.benchmark.domain} "
                "workflow grammar, which the SIMULATED optimizer (optimizer.name: sim) edits; use io, cot, cot_sc "
                "(or pot on math), or an LLM optimizer"
            )


def round_scores(rows: Sequence[SearchRow]) -> dict[int, float]:
    """Round -> search score of the rounds whose child was evaluated."""
    return {r.round: float(r.score) for r in rows if r.status == "evaluated" and r.score is not None}


def candidate_scores(rows: Sequence[SearchRow]) -> dict[int, float]:
    """`round_scores` less the workflows the optimizer has no modification left for (an
    'exhausted' row names the parent): what a parent is drawn from."""
    exhausted = {r.parent for r in rows if r.status == "exhausted"}
    return {k: s for k, s in round_scores(rows).items() if k not in exhausted}


def score_history(rows: Sequence[SearchRow], last_round: int) -> list[list[float]]:
    """history[r]: every search score of rounds 0..r (what `stagnated` reads)."""
    scores = round_scores(rows)
    return [[s for k, s in scores.items() if k <= r] for r in range(last_round + 1)]


def _rng(key: SearchKey, benchmark: str, round_: int, attempt: int) -> random.Random:
    return random.Random(f"aflow-parent:{key.seed}:{benchmark}:{round_}:{attempt}")


def _failures(rows: Sequence[EvalRow], items: Sequence[Item], limit: int) -> list[dict[str, str]]:
    """The first ``limit`` search items (in the split's order) the workflow did not solve in every
    repeat, as the optimizer is shown them."""
    by_item: dict[str, list[EvalRow]] = {}
    for row in rows:
        by_item.setdefault(row.item_id, []).append(row)
    failed = []
    for item in items:
        runs = by_item.get(item.id, [])
        if runs and min(float(r.score or 0.0) for r in runs) < 1.0:
            answer = next((r.answer for r in runs if (r.score or 0.0) < 1.0), None)
            failed.append(
                {
                    "item": item.id,
                    "question": item.question[:600],
                    "answer": (answer or "(no answer)")[:400],
                    "expected": item.answer[:400],
                }
            )
        if len(failed) == limit:
            break
    return failed


async def evaluate_child(
    code: str,
    benchmark: Benchmark,
    items: Sequence[Item],
    engine: WorkflowEngine,
    repeats: int,
    key: SearchKey,
) -> tuple[dict[str, float], list[EvalRow]]:
    """Item id -> mean score over ``repeats`` runs of ``code``, and the runs. Runs that ended
    infra_error are run again up to INFRA_RETRIES times; the scores are empty when some still did
    (the caller stores the proposal as infra_error, unscored)."""
    from spogw.harness.evaluate import EvalKey, evaluate_workflow
    from spogw.harness.scores import item_scores

    eval_key = EvalKey(key.experiment, key.method, key.seed)
    rows = await evaluate_workflow(code, benchmark, items, engine, repeats, key=eval_key, progress=False)
    for _ in range(INFRA_RETRIES):
        broken = {(r.item_id, r.repeat) for r in rows if r.status == "infra_error"}
        if not broken:
            break
        again = [i for i in items if any(i.id == item for item, _ in broken)]  # their items, in one batch
        fixed = {
            (r.item_id, r.repeat): r
            for r in await evaluate_workflow(code, benchmark, again, engine, repeats, key=eval_key, progress=False)
            if (r.item_id, r.repeat) in broken
        }
        rows = [fixed.get((r.item_id, r.repeat), r) for r in rows]
    if any(r.status == "infra_error" for r in rows):
        return {}, rows
    return {item: score for (_, item), score in item_scores(rows).items()}, rows


def unscored(runs: Sequence[EvalRow], scores: dict[str, float]) -> tuple[str, str] | None:
    """Why an evaluated child gets no score: ('infra_error', reason) when the executor failed runs
    after the retries, ('invalid', reason) when every run failed by the workflow's own fault
    (FAILED statuses); None for a child to score."""
    if not scores:
        broken = [r for r in runs if r.status == "infra_error"]
        return "infra_error", f"{len(broken)} of {len(runs)} runs failed in the executor: {broken[0].reason}"
    if runs and all(r.status in FAILED for r in runs):
        return "invalid", f"every run failed ({runs[0].status}: {runs[0].reason})"
    return None


def _row(
    key: SearchKey,
    benchmark: str,
    at: tuple[int, int, int],
    proposal: tuple[str, str],
    status: str,
    reason: str,
    optimizer_usage: tuple[int, int, int],
    wall_s: float,
    runs: Sequence[EvalRow] = (),
    item_scores: dict[str, float] | None = None,
    failures: Sequence[dict[str, str]] = (),
) -> SearchRow:
    """A proposal as stored: ``at`` = (round, attempt, parent), ``proposal`` = (modification, code);
    scored when ``item_scores`` is given, else unscored with what its ``runs`` (if any) spent."""
    from spogw.harness.workflows.structure import structure_or_empty

    modification, code = proposal
    score = sum(item_scores.values()) / len(item_scores) if item_scores else None
    return SearchRow(
        key.method, key.seed, benchmark, *at, modification, code, structure_or_empty(code), status, reason, score,
        json.dumps(item_scores or {}, sort_keys=True), json.dumps(list(failures)), sum(r.calls for r in runs),
        sum(r.prompt_tokens for r in runs), sum(r.completion_tokens for r in runs),
        float(sum(r.cost_usd or 0.0 for r in runs)), *optimizer_usage, wall_s,
    )  # fmt: skip


def rejection(modification: str, code: str, parent: int, rows: Sequence[SearchRow]) -> tuple[str, str] | None:
    """Why a proposal is not evaluated: ('duplicate', reason) for a modification already tried from
    ``parent`` or code evaluated before, ('invalid', reason) for code that fails validation; None
    for a child to evaluate."""
    from spogw.harness.workflows.validate import WorkflowInvalid, validate_workflow

    if not code.strip():
        return "invalid", "the optimizer's reply has no workflow code (<graph>...</graph>)"
    wanted = modification_key(modification)
    for row in rows:
        if row.parent == parent and modification_key(row.modification) == wanted and wanted:
            return "duplicate", f"modification tried from round {parent} before (round {row.round})"
    same = code_key(code)
    for row in rows:
        if row.status == "evaluated" and code_key(row.code) == same:
            return "duplicate", f"the same workflow as round {row.round}"
    try:
        validate_workflow(code)
    except WorkflowInvalid as err:
        return "invalid", str(err)
    return None


async def run_search(
    seed_code: str,
    benchmark: Benchmark,
    items: Sequence[Item],
    engine: WorkflowEngine,
    optimizer: Optimizer,
    store: SQLiteStore,
    key: SearchKey,
    config: AFlowConfig,
    on_round: Callable[[SearchRow], None] | None = None,
) -> SearchResult:
    """Search for the best workflow of ``benchmark`` on ``items`` (module docstring), resuming from
    the rows ``store`` holds for (key.method, key.seed, benchmark). ``on_round`` gets each row
    stored by this call. Raises ExecutorUnavailable / OptimizerUnavailable (a backend down: exit 3,
    resumable), InputError (a seed workflow that cannot be scored; a SIMULATED optimizer given a
    workflow outside the grammar)."""
    rows = store.search_rows(key.method, key.seed, benchmark.name)

    def keep(row: SearchRow) -> None:
        store.put_search(row)
        rows.append(row)
        if on_round is not None:
            on_round(row)

    if not any(r.round == 0 for r in rows):
        start = time.perf_counter()
        seed_scores, runs = await evaluate_child(seed_code, benchmark, items, engine, config.validation_repeats, key)
        problem = unscored(runs, seed_scores)
        if problem is not None:
            raise InputError(
                f"the seed workflow {config.seed_workflow!r} cannot start the search on {benchmark.name}: "
                f"{problem[0]}: {problem[1]}"
            )
        failures = _failures(runs, items, config.failure_logs)
        keep(_row(key, benchmark.name, (0, 0, -1), ("", seed_code), "evaluated", "", (0, 0, 0),
                  time.perf_counter() - start, runs, seed_scores, failures))  # fmt: skip
    stopped = "budget"
    for round_ in range(1, config.rounds + 1):
        if stagnated(score_history(rows, round_ - 1), config.top_k, config.patience, config.min_improvement):
            stopped = "stagnation"
            break
        if not candidate_scores(rows):
            stopped = "exhausted"  # every scored workflow's edits were tried (a finite space)
            break
        done = [r for r in rows if r.round == round_]
        if any(r.status == "evaluated" for r in done) or len(done) >= config.max_attempts:
            continue
        for attempt in range(len(done), config.max_attempts):
            if not candidate_scores(rows):
                break
            if await _attempt(round_, attempt, rows, keep, benchmark, items, engine, optimizer, key, config):
                break
    scores = round_scores(rows)
    best = best_round(scores)
    code = next(r.code for r in rows if r.round == best and r.status == "evaluated")
    return SearchResult(best, code, scores[best], rows, stopped)


async def _attempt(
    round_: int,
    attempt: int,
    rows: list[SearchRow],
    keep: Callable[[SearchRow], None],
    benchmark: Benchmark,
    items: Sequence[Item],
    engine: WorkflowEngine,
    optimizer: Optimizer,
    key: SearchKey,
    config: AFlowConfig,
) -> bool:
    """One proposal of ``round_``: stored as evaluated (True) or rejected (False)."""
    start = time.perf_counter()
    scores = round_scores(rows)
    parent = choose_parent(candidate_scores(rows), config.top_k, config.uniform_mix, config.softmax_alpha,
                           _rng(key, benchmark.name, round_, attempt))  # fmt: skip
    parent_row = next(r for r in rows if r.round == parent and r.status == "evaluated")
    tried = tuple(
        Tried(r.modification, f"score {r.score:.3f} (parent {scores[parent]:.3f})" if r.score is not None
              else f"{r.status}: {r.reason}")
        for r in rows if r.parent == parent
    )  # fmt: skip
    gains = tuple(
        (r.modification, float(r.score) - scores[r.parent])
        for r in rows
        if r.status == "evaluated" and r.score is not None and r.parent in scores
    )
    request = ProposalRequest(
        benchmark.name, benchmark.domain, round_, attempt, key.seed, parent, parent_row.code, scores[parent],
        tried, gains, tuple(json.loads(parent_row.failures)), config.split,
    )  # fmt: skip
    try:
        proposal = await optimizer.propose(request)
    except NoEditLeft as err:
        keep(_row(key, benchmark.name, (round_, attempt, parent), ("", ""), "exhausted", str(err), (0, 0, 0),
                  time.perf_counter() - start))  # fmt: skip
        return False
    usage = (proposal.calls, proposal.prompt_tokens, proposal.completion_tokens)
    at, proposed = (round_, attempt, parent), (proposal.modification, proposal.code)
    rejected = rejection(proposal.modification, proposal.code, parent, rows)
    if rejected is not None:
        keep(_row(key, benchmark.name, at, proposed, *rejected, usage, time.perf_counter() - start))
        return False
    child_scores, runs = await evaluate_child(proposal.code, benchmark, items, engine, config.validation_repeats, key)
    problem = unscored(runs, child_scores)
    if problem is not None:
        keep(_row(key, benchmark.name, at, proposed, *problem, usage, time.perf_counter() - start, runs))
        return False
    failures = _failures(runs, items, config.failure_logs)
    keep(_row(key, benchmark.name, at, proposed, "evaluated", "", usage, time.perf_counter() - start, runs,
              child_scores, failures))  # fmt: skip
    return True
