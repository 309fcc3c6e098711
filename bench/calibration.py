"""Null and power calibration of the report's paired test, end to end on the SIMULATED executor.

A pool of real executions first: each workflow runs on the same gsm_synth items under several
executor seeds with several repeats each (harness.evaluate through the workflow engine and the
sandbox, graded by the benchmark's scorer). Each replication then draws items and, for each arm,
its own executions of each item from the pool (arms never share one), builds the item-score frame
a run folder would hold, and calls the report's paired test (reports.comparison.paired_table):

- A/A: the same workflow under two labels. The test must reject at alpha = 0.05 in 3-7% of
  replications.
- planted effect: two workflows whose true difference the pool knows (the mean over all its
  draws). The power predicted *before* the replications by reports/power.py from the pool's
  population variances must match the detection rate within its Monte Carlo error.

All numbers are SIMULATED. Replications share one pool, so they are draws from a finite
population of items and executions; the prediction uses the finite-population factors for items and for draws.

    python bench/calibration.py [--replications 600] [--json out.json]

Last line: `calibration_planted_vs_predicted: ratio=<detection rate / predicted power> (aa_rate=...,
planted=..., predicted=...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.catalog import registries
from spogw.harness.evaluate import evaluate_workflow
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.methods.static import workflow_source
from spogw.reports.comparison import paired_table
from spogw.reports.power import VarianceComponents, power, standard_error

ALPHA = 0.05


@dataclass(frozen=True)
class Setting:
    items_pool: int = 80
    pool_seeds: int = 16
    pool_repeats: int = 4
    items: int = 30
    """Items per replication (drawn without replacement from the pool's)."""
    seeds: int = 3
    """Seeds per arm (disjoint between the arms)."""
    repeats: int = 4
    """Repeats per seed."""
    null_workflow: str = "cot"
    planted: tuple[str, str] = ("cot_sc", "cot")
    profile: str = "medium"


async def _pool_of(workflow: str, setting: Setting, first_seed: int) -> np.ndarray:
    """(seeds, items, repeats) scores of ``workflow`` under executor seeds ``first_seed``, ... (NaN: an
    infra error)."""
    benchmark = load_benchmark("gsm_synth")
    items = list(benchmark.split("test", 0.5, seed=0))[: setting.items_pool]
    _, source = workflow_source(workflow)
    index = {item.id: k for k, item in enumerate(items)}
    scores = np.full((setting.pool_seeds, len(items), setting.pool_repeats), np.nan)
    for seed in range(setting.pool_seeds):
        engine = WorkflowEngine(SimExecutor(setting.profile, seed=first_seed + seed), concurrency=8, timeout_s=120)
        try:
            rows = await evaluate_workflow(source, benchmark, items, engine, setting.pool_repeats, progress=False)
        finally:
            await engine.close()
        for row in rows:
            if row.score is not None:
                scores[seed, index[row.item_id], row.repeat] = row.score
    return scores


def build_pool(setting: Setting) -> dict[str, np.ndarray]:
    workflows = sorted({setting.null_workflow, *setting.planted})
    unknown = [w for w in workflows if w not in registries()["workflows"]]
    if unknown:
        raise SystemExit(f"unknown workflows {unknown}")
    # each workflow under its own executor seeds: under shared seeds two workflows' first calls draw
    # the same answers (common random numbers), a correlation that arms drawn from different
    # executions of a real run do not have
    return {
        workflow: asyncio.run(_pool_of(workflow, setting, 1000 * (index + 1)))
        for index, workflow in enumerate(workflows)
    }


def _flat_draws(pool: np.ndarray) -> np.ndarray:
    """(items, seeds * repeats): every execution of each item in the pool."""
    return pool.transpose(1, 0, 2).reshape(pool.shape[1], -1)


def replicate(
    pools: tuple[np.ndarray, np.ndarray], setting: Setting, replications: int, seed: int = 0
) -> tuple[float, list[float]]:
    """(rejection rate at ALPHA, p-values) of the report's paired test over ``replications`` draws:
    arm A from pools[0], arm B from pools[1], on the same items. Each item's executions for an arm
    are drawn afresh for that item (seeds x repeats of them, none shared by the arms): reusing one
    set of pool seeds for every item would carry the pool's chance seed-to-seed differences into
    all items at once, a dependence that fresh executions do not have."""
    rng = np.random.default_rng(seed)
    draws = (_flat_draws(pools[0]), _flat_draws(pools[1]))
    per_arm = setting.seeds * setting.repeats
    p_values = []
    for _ in range(replications):
        items = rng.choice(setting.items_pool, size=setting.items, replace=False)
        rows = []
        for item in items:
            order = rng.permutation(draws[0].shape[1])
            arms = (("A", draws[0], order[:per_arm]), ("B", draws[1], order[per_arm : 2 * per_arm]))
            for label, flat, chosen in arms:
                scores = flat[item, chosen].reshape(setting.seeds, setting.repeats)
                rows += [
                    {"method": label, "seed": k, "iteration": 0, "benchmark": "gsm_synth", "item_id": f"i{item}",
                     "score": float(np.nanmean(scores[k])), "transfer": ""}
                    for k in range(setting.seeds)
                    if not np.isnan(scores[k]).all()
                ]  # fmt: skip
        table = paired_table(pd.DataFrame(rows), [("A", "B")], alpha=ALPHA, resamples=1_000)
        p_values.append(float(table["p_value"].iloc[0]))
    return float(np.mean(np.asarray(p_values) < ALPHA)), p_values


def population_components(a: np.ndarray, b: np.ndarray, setting: Setting) -> VarianceComponents:
    """The pool's own values: each item's true difference is its mean over every draw; one seed's
    item difference varies by the single-draw variances over ``repeats`` (arms independent)."""
    true_a, true_b = np.nanmean(a, axis=(0, 2)), np.nanmean(b, axis=(0, 2))
    differences = true_a - true_b
    draws_a, draws_b = _flat_draws(a), _flat_draws(b)
    per_seed = (np.nanvar(draws_a, axis=1, ddof=1) + np.nanvar(draws_b, axis=1, ddof=1)) / setting.repeats
    # an arm's seeds x repeats draws come without replacement from the item's M draws: with the
    # ddof=1 variance S2 the mean of k such draws varies by S2 / k * (M - k) / M
    pool_draws, drawn = setting.pool_seeds * setting.pool_repeats, setting.seeds * setting.repeats
    per_seed = per_seed * (pool_draws - drawn) / pool_draws
    return VarianceComponents(
        difference=float(differences.mean()),
        sigma2_item=float(differences.var(ddof=1)),
        sigma2_noise=float(per_seed.mean()),
        items=len(differences),
        seeds=a.shape[0],
    )


@dataclass(frozen=True)
class Result:
    setting: dict
    replications: int
    aa_rate: float
    aa_mc_error: float
    planted_difference: float
    predicted_power: float
    planted_rate: float
    planted_mc_error: float
    pool_s: float
    replications_s: float


def run(setting: Setting, replications: int) -> Result:
    start = time.perf_counter()
    pools = build_pool(setting)
    pool_s = time.perf_counter() - start
    truth = population_components(pools[setting.planted[0]], pools[setting.planted[1]], setting)
    # before any replication. The items come from a finite pool, which the test does not know: its
    # variance estimate stands for the unlimited-population se, so its critical value scales by that
    se = standard_error(truth, setting.items, setting.seeds, population=setting.items_pool)
    test_se = standard_error(truth, setting.items, setting.seeds)
    predicted = power(truth.difference, se, setting.items, ALPHA, test_se=test_se)
    start = time.perf_counter()
    null = pools[setting.null_workflow]
    aa_rate, _ = replicate((null, null), setting, replications, seed=1)
    planted_rate, _ = replicate((pools[setting.planted[0]], pools[setting.planted[1]]), setting, replications, seed=2)
    return Result(
        asdict(setting),
        replications,
        aa_rate,
        math.sqrt(ALPHA * (1 - ALPHA) / replications),
        truth.difference,
        predicted,
        planted_rate,
        math.sqrt(predicted * (1 - predicted) / replications),
        pool_s,
        time.perf_counter() - start,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=600)
    parser.add_argument("--items", type=int, default=Setting.items)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    result = run(Setting(items=args.items), args.replications)
    print(f"[SIMULATED executor] pool built in {result.pool_s:.0f} s; {result.replications} replications of each "
          f"experiment in {result.replications_s:.0f} s")  # fmt: skip
    print(f"A/A ({result.setting['null_workflow']} vs itself): rejection rate {result.aa_rate:.3f} at alpha "
          f"{ALPHA} (Monte Carlo error {result.aa_mc_error:.3f}; required 0.03-0.07)")  # fmt: skip
    print(f"planted ({' vs '.join(result.setting['planted'])}, true difference {result.planted_difference:+.4f}): "
          f"detection rate {result.planted_rate:.3f}, predicted power {result.predicted_power:.3f} "
          f"(Monte Carlo error {result.planted_mc_error:.3f})")  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(asdict(result), handle, indent=2)
    ratio = result.planted_rate / result.predicted_power
    print(f"calibration_planted_vs_predicted: ratio={ratio:.3f} (aa_rate={result.aa_rate:.3f}, "
          f"planted={result.planted_rate:.3f}, predicted={result.predicted_power:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
