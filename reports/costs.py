"""What training cost, per method: executor calls and tokens and generator tokens of the collected
workflows (from the rollout store) and wall time (from the iterations table), cumulated over
iterations so test scores can be plotted against cost. Held-out evaluation is measurement, not
training, and is not counted."""

from __future__ import annotations

import pandas as pd

COSTS = {
    "executor_calls": "executor calls (training)",
    "generator_tokens": "generator tokens (training)",
    "wall_s": "wall time, s (collection + updates)",
}


def iteration_costs(rollouts: pd.DataFrame, iterations: pd.DataFrame) -> pd.DataFrame:
    """Per (method, seed, iteration): the cost of that iteration's collection and updates."""
    spent = (
        rollouts.groupby(["method", "seed", "iteration"])
        .agg(
            executor_calls=("executor_calls", "sum"),
            executor_tokens=("executor_tokens", "sum"),
            generator_tokens=("tokens", "sum"),
        )
        .reset_index()
    )
    if iterations.empty:
        return spent.assign(wall_s=float("nan"))
    timing = iterations.assign(wall_s=iterations["collect_s"] + iterations["train_s"])
    return spent.merge(
        timing[["method", "seed", "iteration", "wall_s"]], how="left", on=["method", "seed", "iteration"]
    )


def cumulative_costs(costs: pd.DataFrame, last_iteration: int) -> pd.DataFrame:
    """Per (method, seed, iteration k) for k = 0..last_iteration: the cost spent before the policy
    of iteration k existed (the sum over iterations < k), i.e. the x of test score k."""
    rows = []
    for (method, seed), part in costs.groupby(["method", "seed"], sort=True):
        by_iteration = part.set_index("iteration").sort_index()
        for k in range(last_iteration + 1):
            before = by_iteration[by_iteration.index < k]
            rows.append(
                {
                    "method": method,
                    "seed": int(seed),
                    "iteration": k,
                    **{name: float(before[name].sum(min_count=0)) for name in (*COSTS, "executor_tokens")},
                }
            )
    return pd.DataFrame(rows, columns=["method", "seed", "iteration", *COSTS, "executor_tokens"])


def cost_table(costs: pd.DataFrame) -> pd.DataFrame:
    """Per method: the whole run's training cost, mean over seeds."""
    totals = costs.groupby(["method", "seed"])[[*COSTS, "executor_tokens"]].sum(min_count=1)
    return totals.groupby("method").mean().reset_index()
