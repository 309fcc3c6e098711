"""Method comparisons from the tidy per-item frame: scores with CIs that say what they cover,
paired tests against the declared baseline with Holm's correction, and rliable's aggregates.

Everything reads `item_score_frame` rows (method, seed, iteration, benchmark, item_id, score) and
each method at its final evaluated iteration (static workflows: 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reports.stats import (
    holm,
    iqm,
    optimality_gap,
    paired_comparison,
    probability_of_improvement,
    seed_mean_ci,
    stratified_bootstrap_ci,
    two_level_bootstrap_ci,
)


def final_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each method's rows at its last evaluated iteration."""
    last = frame.groupby("method")["iteration"].transform("max")
    return frame[frame["iteration"] == last]


def score_table(frame: pd.DataFrame, resamples: int = 5_000, seed: int = 0) -> pd.DataFrame:
    """Per benchmark x method (final iteration): mean score, a 95% CI over seeds (percentile
    bootstrap of the per-seed means) and a two-level CI (seeds, then items jointly)."""
    rows: list[dict[str, Any]] = []
    for (benchmark, method), part in final_rows(frame).groupby(["benchmark", "method"], sort=True):
        matrix = part.pivot_table(index="seed", columns="item_id", values="score", aggfunc="mean")
        matrix = matrix.dropna(axis=1)  # items every seed scored (an all-infra item is left out, never 0)
        over_seeds = seed_mean_ci(matrix.mean(axis=1).to_numpy(), resamples=resamples, seed=seed)
        both = two_level_bootstrap_ci(matrix.to_numpy(), resamples=resamples, seed=seed)
        rows.append(
            {
                "benchmark": benchmark,
                "method": method,
                "iteration": int(part["iteration"].iloc[0]),
                "score": both.mean,
                "seed_ci_low": over_seeds.low,
                "seed_ci_high": over_seeds.high,
                "ci_low": both.low,
                "ci_high": both.high,
                "seeds": int(matrix.shape[0]),
                "items": int(matrix.shape[1]),
            }
        )
    return pd.DataFrame(rows)


def paired_table(
    frame: pd.DataFrame,
    baseline: str,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every method against ``baseline`` on every benchmark, paired by item (item score averaged
    over seeds, items both scored): mean difference with a BCa CI, the paired test's p-value and
    Holm's adjustment over the whole family of comparisons (all methods x benchmarks)."""
    final = final_rows(frame)
    if baseline not in set(final["method"]):
        raise ValueError(f"stats.baseline {baseline!r} is not a method of this run ({sorted(set(final['method']))})")
    rows: list[dict[str, Any]] = []
    for benchmark, part in final.groupby("benchmark", sort=True):
        per_item = part.groupby(["method", "item_id"])["score"].mean().unstack("item_id")
        if baseline not in per_item.index:
            continue
        for method in per_item.index:
            if method == baseline:
                continue
            both = per_item.loc[[method, baseline]].dropna(axis=1)
            if both.shape[1] == 0:
                continue
            result = paired_comparison(
                both.loc[method].to_numpy(), both.loc[baseline].to_numpy(), alternative, resamples=resamples, seed=seed
            )
            rows.append(
                {
                    "benchmark": benchmark,
                    "method": method,
                    "baseline": baseline,
                    "difference": result.difference,
                    "ci_low": result.low,
                    "ci_high": result.high,
                    "p_value": result.p_value,
                    "test": result.test,
                    "items": result.n,
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    reject, adjusted = holm(table["p_value"].tolist(), alpha)
    return table.assign(p_holm=adjusted, significant=reject, alpha=alpha, alternative=alternative)


def aggregate_table(frame: pd.DataFrame, baseline: str | None, resamples: int = 2_000, seed: int = 0) -> pd.DataFrame:
    """rliable's aggregates over benchmarks (tasks) with stratified bootstrap CIs over seeds (runs):
    mean, IQM and optimality gap per method, and the probability of improving on ``baseline``."""
    final = final_rows(frame)
    per_seed = final.groupby(["method", "seed", "benchmark"])["score"].mean().unstack("benchmark").dropna(axis=0)
    arrays = {str(m): part.to_numpy() for m, part in per_seed.groupby(level="method")}
    rows: list[dict[str, Any]] = []
    for method, scores in sorted(arrays.items()):
        row: dict[str, Any] = {"method": method, "seeds": scores.shape[0], "benchmarks": scores.shape[1]}
        for name, statistic in (
            ("mean", lambda s: float(np.mean(s))),
            ("iqm", iqm),
            ("optimality_gap", optimality_gap),
        ):
            row[name], row[f"{name}_low"], row[f"{name}_high"] = stratified_bootstrap_ci(
                [scores], statistic, resamples=resamples, seed=seed
            )
        if baseline is not None and baseline in arrays and method != baseline:
            row["p_improve"], row["p_improve_low"], row["p_improve_high"] = stratified_bootstrap_ci(
                [scores, arrays[baseline]], probability_of_improvement, resamples=resamples, seed=seed
            )
        rows.append(row)
    return pd.DataFrame(rows)
