"""Slow: the simulator's structure-level properties over the whole workflow grammar
(DESIGN.md, 'What makes the simulator a fair testbed'). docs/simulator.md tables the same numbers."""

from __future__ import annotations

import statistics

import pytest

from spogw.harness.executors.sim_oracle import StructureScore, oracle_items, score_structures
from spogw.harness.workflows.grammar import all_structures
from tests.conftest import run

pytestmark = pytest.mark.slow


def scores(domain: str, count: int) -> tuple[list[StructureScore], list[str], list[str]]:
    benchmark, items = oracle_items(domain, count)
    results = run(score_structures(all_structures(domain), benchmark, items, "medium"))
    easy = [item.id for item in items if item.sim is not None and item.sim.difficulty < 0.5]
    hard = [item.id for item in items if item.sim is not None and item.sim.difficulty >= 0.5]
    return results, easy, hard


@pytest.fixture(scope="module")
def math_scores() -> tuple[list[StructureScore], list[str], list[str]]:
    return scores("math", 60)


@pytest.fixture(scope="module")
def code_scores() -> tuple[list[StructureScore], list[str], list[str]]:
    return scores("code", 40)


def gap(results: list[StructureScore]) -> tuple[float, StructureScore]:
    best = max(results, key=lambda s: s.mean)
    return best.mean - statistics.median(s.mean for s in results), best


@pytest.mark.parametrize("domain", ["math", "code"])
def test_structure_matters_by_at_least_20_points(domain: str, request: pytest.FixtureRequest) -> None:
    results, _, _ = request.getfixturevalue(f"{domain}_scores")
    difference, best = gap(results)
    print(f"{domain}: best {best.structure.signature()} {best.mean:.3f}, gap to median {100 * difference:.1f} points")
    assert difference >= 0.20


def test_best_structure_differs_between_domains(math_scores, code_scores) -> None:  # type: ignore[no-untyped-def]
    best_math = max(math_scores[0], key=lambda s: s.mean).structure
    best_code = max(code_scores[0], key=lambda s: s.mean).structure
    assert (best_math.generator, best_math.programmer, best_math.test) != (
        best_code.generator,
        best_code.programmer,
        best_code.test,
    )


def test_best_structure_differs_between_easy_and_hard_items(math_scores) -> None:  # type: ignore[no-untyped-def]
    results, easy, hard = math_scores

    def best_on(ids: list[str]) -> str:
        return max(
            results, key=lambda s: (statistics.fmean(s.per_item[i] for i in ids), -s.tokens_per_run)
        ).structure.signature()

    print(f"easy: {best_on(easy)}; hard: {best_on(hard)}")
    assert best_on(easy) != best_on(hard)
