"""Scores of every workflow structure of the grammar under each simulator profile, and the oracles.

`python -m spogw.harness.executors.sim_oracle` prints the tables in docs/simulator.md: per domain and
profile, the best structure with its score, the median structure's score and the gap between them;
then, per domain, the headroom a question-conditional generator has: the best single workflow, the
class oracle (the best structure for each kind of question a generator can see) and the per-item
oracle, each chosen on held-out data so that selection on noise does not inflate it. All numbers
are SIMULATED. The fairness tests (tests/test_sim_fairness.py) use the same functions.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.benchmarks.base import Benchmark, Item
from spogw.harness.evaluate import evaluate_workflow
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.scores import item_scores
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.harness.workflows.grammar import Structure, all_structures, render

DOMAIN_BENCHMARK = {"math": "gsm_synth", "code": "humaneval", "qa": "qa_synth"}


@dataclass(frozen=True)
class StructureScore:
    structure: Structure
    mean: float
    per_item: dict[str, float]
    """Item id -> mean score over the repeats."""
    tokens_per_run: float
    per_repeat: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Item id -> the score of each repeat, in repeat order (the per-item oracle selects on some
    repeats and is scored on the others)."""


@dataclass(frozen=True)
class Headroom:
    """What choosing the workflow per question can gain over one workflow for all, on held-out data.

    ``best_single`` and ``class_oracle`` are two-fold cross-fitted over items: each structure is
    chosen on one half of the items (stratified by kind) and scored on the other, so neither is
    inflated by picking the luckiest structure. ``per_item_oracle`` chooses each item's structure on
    one repeat and scores it on the others (leave-one-repeat-out), which needs at least 2 repeats.
    Scores are mean item scores in [0, 1]; SIMULATED.
    """

    best_single: float
    class_oracle: float
    per_item_oracle: float
    single_choice: str
    """Signature of the structure chosen on all items (for display; the score above is held-out)."""
    class_choice: dict[str, str]
    """Kind -> signature of its structure chosen on all items of the kind."""
    kind_sizes: dict[str, int]

    @property
    def gap(self) -> float:
        """Class oracle minus best single workflow, both held-out: the headroom a trained generator
        that reads the question's kind can recover (in score units; x100 for points)."""
        return self.class_oracle - self.best_single


def kinds_of(items: Sequence[Item]) -> dict[str, list[str]]:
    """Kind -> the ids of ``items`` of that kind, sorted."""
    kinds: dict[str, list[str]] = {}
    for item in sorted(items, key=lambda i: i.id):
        kinds.setdefault(item.sim.kind if item.sim is not None else "", []).append(item.id)
    return kinds


def choose(scores: Sequence[StructureScore], ids: Sequence[str]) -> StructureScore:
    """The structure with the highest mean on ``ids``; ties go to the cheaper, then the shorter name."""
    return max(
        scores,
        key=lambda s: (
            statistics.fmean(s.per_item[i] for i in ids),
            -s.tokens_per_run,
            -len(s.structure.signature()),
        ),
    )


def held_out_scores(scores: Sequence[StructureScore], items: Sequence[Item]) -> dict[str, tuple[float, float]]:
    """Item id -> (best single workflow's score, class oracle's score), each from a structure chosen
    on the other half of the items (two folds, stratified by kind; a kind's structure is chosen on
    that kind's items). Raises ValueError when some kind has fewer than 2 items."""
    kinds = kinds_of(items)
    if min(len(ids) for ids in kinds.values()) < 2:
        raise ValueError(
            f"every kind needs at least 2 items for held-out selection: { ({k: len(v) for k, v in kinds.items()}) }"
        )
    folds = [[i for ids in kinds.values() for i in ids[f::2]] for f in (0, 1)]
    out: dict[str, tuple[float, float]] = {}
    for held_out, chosen_on in ((folds[0], folds[1]), (folds[1], folds[0])):
        best = choose(scores, chosen_on)
        for ids in kinds.values():
            chosen = choose(scores, [i for i in ids if i in chosen_on])
            out |= {i: (best.per_item[i], chosen.per_item[i]) for i in ids if i in held_out}
    return out


def headroom(scores: Sequence[StructureScore], items: Sequence[Item]) -> Headroom:
    """The held-out best single workflow, class oracle and per-item oracle of ``scores`` (one
    `StructureScore` per structure, all on ``items``). Raises ValueError with fewer than 2 items of
    some kind or fewer than 2 repeats."""
    held_out = held_out_scores(scores, items)
    kinds = kinds_of(items)
    repeats = min(len(r) for s in scores for r in s.per_repeat.values()) if scores[0].per_repeat else 0
    if repeats < 2:
        raise ValueError("the per-item oracle needs at least 2 repeats per item")
    per_item: list[float] = []
    for ids in kinds.values():
        for item in ids:
            # ties on one repeat are common (scores are 0 or 1): break them by the structure's
            # mean on the kind's other items, a prior that uses no run of this item
            others = [i for i in ids if i != item]
            prior = {id(s): statistics.fmean(s.per_item[i] for i in others) for s in scores}
            for r in range(repeats):
                chosen = max(scores, key=lambda s: (s.per_repeat[item][r], prior[id(s)], -s.tokens_per_run))
                per_item.append(statistics.fmean(v for k, v in enumerate(chosen.per_repeat[item]) if k != r))
    return Headroom(
        best_single=statistics.fmean(single for single, _ in held_out.values()),
        class_oracle=statistics.fmean(conditional for _, conditional in held_out.values()),
        per_item_oracle=statistics.fmean(per_item),
        single_choice=choose(scores, [i for ids in kinds.values() for i in ids]).structure.signature(),
        class_choice={kind: choose(scores, ids).structure.signature() for kind, ids in kinds.items()},
        kind_sizes={kind: len(ids) for kind, ids in kinds.items()},
    )


async def score_structures(
    structures: Sequence[Structure],
    benchmark: Benchmark,
    items: Sequence[Item],
    profile: str,
    repeats: int = 3,
    seed: int = 0,
    concurrency: int = 8,
) -> list[StructureScore]:
    # the grammar's own renderings: in this process (harness.workflows.inprocess), same scores as workers
    engine = WorkflowEngine(
        SimExecutor(profile, seed=seed), concurrency=concurrency, timeout_s=120, grammar_only_in_process=True
    )
    results = []
    try:
        for structure in structures:
            runs = await evaluate_workflow(render(structure), benchmark, items, engine, repeats, progress=False)
            per_item = {item: score for (_, item), score in item_scores(runs).items()}
            tokens = sum(r.prompt_tokens + r.completion_tokens for r in runs) / max(len(runs), 1)
            per_repeat: dict[str, list[float]] = {}
            for row in sorted(runs, key=lambda r: r.repeat):
                # an infra_error is not the structure's fault; score it 0 here so every item keeps
                # its repeats aligned (the simulator raises none)
                per_repeat.setdefault(row.item_id, []).append(row.score or 0.0)
            results.append(
                StructureScore(
                    structure,
                    statistics.fmean(per_item.values()),
                    per_item,
                    tokens,
                    {item: tuple(values) for item, values in per_repeat.items()},
                )
            )
    finally:
        await engine.close()
    return results


ORACLE_ITEMS = {"math": 84, "code": 40, "qa": 60}
"""Items per domain of the oracle tables and the fairness tests (HumanEval's items cost sandbox runs)."""


def oracle_items(domain: str, count: int | None = None) -> tuple[Benchmark, list[Item]]:
    """The benchmark of ``domain`` and the first ``count`` (default ORACLE_ITEMS) items of its fixed
    training half."""
    benchmark = load_benchmark(DOMAIN_BENCHMARK[domain])
    return benchmark, list(benchmark.split("train", 0.5, seed=0))[: count or ORACLE_ITEMS[domain]]


def profile_table() -> str:
    """The markdown table of every profile's parameters (docs/simulator.md embeds it; a test checks it)."""
    from spogw.harness.executors.sim_profiles import PROFILES, SimProfile

    def fmt(value: float) -> str:
        return f"{value:g}".replace("-", "−")

    def style(key: str) -> Callable[[SimProfile], str]:
        return lambda p: fmt(p.style_bonus.get(key, 0.0))

    styles = dict.fromkeys(k for profile in PROFILES.values() for k in profile.style_bonus)
    rows: dict[str, Callable[[SimProfile], str]] = {
        "skill math / code / qa": lambda p: " / ".join(fmt(p.skill[d]) for d in ("math", "code", "qa")),
        "logit scale k": lambda p: fmt(p.logit_scale),
        **{f"style bonus `{key}`": style(key) for key in styles},
        "text arithmetic (large numbers)": lambda p: fmt(p.text_arithmetic),
        "programmer computational / other / crash": lambda p: " / ".join(
            fmt(v) for v in (p.programmer_computational, p.programmer_other, p.programmer_crash)
        ),
        "ensemble_majority": lambda p: fmt(p.ensemble_majority),
        "review detect / false alarm": lambda p: f"{fmt(p.review_detect)} / {fmt(p.review_false_alarm)}",
        "revise fix / break easy / break hard": lambda p: " / ".join(
            fmt(v) for v in (p.revise_fix, p.revise_break_easy, p.revise_break_hard)
        ),
        "test_fix": lambda p: fmt(p.test_fix),
        "format_error": lambda p: fmt(p.format_error),
        "distractor decay": lambda p: fmt(p.distractor_decay),
    }
    names = list(PROFILES)
    lines = ["| parameter | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, value in rows.items():
        lines.append(f"| {label} | " + " | ".join(value(PROFILES[n]) for n in names) + " |")
    return "\n".join(lines)


def headroom_row(domain: str, profile: str, room: Headroom) -> str:
    """One markdown row of the headroom table (docs/simulator.md)."""
    choices = "; ".join(f"{kind} ({room.kind_sizes[kind]}): `{sig}`" for kind, sig in sorted(room.class_choice.items()))
    return (
        f"| {domain} | {profile} | {room.best_single:.3f} (`{room.single_choice}`) | {room.class_oracle:.3f} | "
        f"{100 * room.gap:+.1f} | {room.per_item_oracle:.3f} | {choices} |"
    )


def main() -> None:
    from spogw.harness.executors.sim_profiles import PROFILES

    print("| domain | profile | best structure | best | median structure | gap (points) | best tokens/run |")
    print("|---|---|---|---|---|---|---|")
    rooms: list[str] = []
    for domain in DOMAIN_BENCHMARK:
        benchmark, items = oracle_items(domain)
        for profile in PROFILES:
            scores = asyncio.run(score_structures(all_structures(domain), benchmark, items, profile))
            rooms.append(headroom_row(domain, profile, headroom(scores, items)))
            scores.sort(key=lambda s: s.mean, reverse=True)
            median = statistics.median(s.mean for s in scores)
            best = scores[0]
            print(
                f"| {domain} | {profile} | `{best.structure.signature()}` | {best.mean:.3f} | {median:.3f} | "
                f"{100 * (best.mean - median):.1f} | {best.tokens_per_run:.0f} |",
                flush=True,
            )
    print()
    columns = ("best single (held-out)", "class oracle (held-out)", "headroom (points)", "per-item oracle")
    print(f"| domain | profile | {' | '.join(columns)} | class choices |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rooms))


if __name__ == "__main__":
    main()
