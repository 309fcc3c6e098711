"""Scores of every workflow structure of the grammar under each simulator profile.

`python -m spogw.harness.executors.sim_oracle` prints the table in docs/simulator.md: per domain and
profile, the best structure with its score, the median structure's score and the gap between them.
All numbers are SIMULATED. The fairness tests (tests/test_sim_fairness.py) use the same functions.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.benchmarks.base import Benchmark, Item
from spogw.harness.evaluate import evaluate_workflow
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.scores import item_scores
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.harness.workflows.grammar import Structure, all_structures, render

DOMAIN_BENCHMARK = {"math": "gsm_synth", "code": "humaneval"}


@dataclass(frozen=True)
class StructureScore:
    structure: Structure
    mean: float
    per_item: dict[str, float]
    tokens_per_run: float


async def score_structures(
    structures: Sequence[Structure],
    benchmark: Benchmark,
    items: Sequence[Item],
    profile: str,
    repeats: int = 3,
    seed: int = 0,
    concurrency: int = 8,
) -> list[StructureScore]:
    engine = WorkflowEngine(SimExecutor(profile, seed=seed), concurrency=concurrency, timeout_s=120)
    results = []
    try:
        for structure in structures:
            runs = await evaluate_workflow(render(structure), benchmark, items, engine, repeats, progress=False)
            per_item = {item: score for (_, item), score in item_scores(runs).items()}
            tokens = sum(r.prompt_tokens + r.completion_tokens for r in runs) / max(len(runs), 1)
            results.append(StructureScore(structure, statistics.fmean(per_item.values()), per_item, tokens))
    finally:
        await engine.close()
    return results


def oracle_items(domain: str, count: int) -> tuple[Benchmark, list[Item]]:
    benchmark = load_benchmark(DOMAIN_BENCHMARK[domain])
    return benchmark, list(benchmark.split("train", 0.5, seed=0))[:count]


def profile_table() -> str:
    """The markdown table of every profile's parameters (docs/simulator.md embeds it; a test checks it)."""
    from spogw.harness.executors.sim_profiles import PROFILES

    def fmt(value: float) -> str:
        return f"{value:g}".replace("-", "−")

    rows = {
        "skill math / code / qa": lambda p: " / ".join(fmt(p.skill[d]) for d in ("math", "code", "qa")),
        "logit scale k": lambda p: fmt(p.logit_scale),
        "cot_bonus": lambda p: fmt(p.cot_bonus),
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


def main() -> None:
    from spogw.harness.executors.sim_profiles import PROFILES

    print("| domain | profile | best structure | best | median structure | gap (points) | best tokens/run |")
    print("|---|---|---|---|---|---|---|")
    for domain in DOMAIN_BENCHMARK:
        benchmark, items = oracle_items(domain, 60)
        for profile in PROFILES:
            scores = asyncio.run(score_structures(all_structures(domain), benchmark, items, profile))
            scores.sort(key=lambda s: s.mean, reverse=True)
            median = statistics.median(s.mean for s in scores)
            best = scores[0]
            print(
                f"| {domain} | {profile} | `{best.structure.signature()}` | {best.mean:.3f} | {median:.3f} | "
                f"{100 * (best.mean - median):.1f} | {best.tokens_per_run:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
