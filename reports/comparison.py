"""Method comparisons from the tidy per-item frame: scores with CIs that say what they cover,
paired tests against the declared baseline with Holm's correction, and rliable's aggregates.

Everything reads `item_score_frame` rows (method, seed, iteration, benchmark, item_id, score) and
each method at its final evaluated iteration (static workflows: 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from spogw.harness.scores import final_rows, macro_average, seed_benchmark_means, seed_item_matrix
from spogw.reports.stats import (
    holm,
    iqm,
    optimality_gap,
    paired_comparison,
    probability_of_improvement,
    seed_mean_ci,
    stratified_bootstrap_ci,
    two_level_bootstrap_ci,
)

MIN_SEEDS = 2
"""Intervals over seeds (and P(method > baseline)) need at least this many seeds: from one seed
the bootstrap can only return the point itself, a zero-width interval that looks like certainty."""


Pair = tuple[str, str]
"""(method, reference): a paired test of method - reference."""


SCORE_COLUMNS = [
    "benchmark", "method", "iteration", "score", "seed_ci_low", "seed_ci_high", "ci_low", "ci_high", "seeds", "items",
]  # fmt: skip


def score_table(frame: pd.DataFrame, resamples: int = 5_000, seed: int = 0) -> pd.DataFrame:
    """Per benchmark x method (final iteration): mean score (harness.scores' definition), a 95% CI
    over seeds (percentile bootstrap of the per-seed means; NaN bounds below MIN_SEEDS seeds) and a
    two-level CI (seeds, then items jointly; over items alone from one seed)."""
    rows: list[dict[str, Any]] = []
    for (benchmark, method), part in final_rows(frame).groupby(["benchmark", "method"], sort=True):
        matrix = seed_item_matrix(part)  # items every seed scored (an all-infra item is left out, never 0)
        if matrix.empty:
            continue
        over_seeds = seed_mean_ci(matrix.mean(axis=1).to_numpy(), resamples=resamples, seed=seed)
        # one seed: the bootstrap over seeds can only return the point itself (a zero-width interval)
        seed_low, seed_high = (over_seeds.low, over_seeds.high) if len(matrix) >= MIN_SEEDS else (np.nan, np.nan)
        both = two_level_bootstrap_ci(matrix.to_numpy(), resamples=resamples, seed=seed)
        rows.append(
            {
                "benchmark": benchmark,
                "method": method,
                "iteration": int(part["iteration"].iloc[0]),
                "score": both.mean,
                "seed_ci_low": seed_low,
                "seed_ci_high": seed_high,
                "ci_low": both.low,
                "ci_high": both.high,
                "seeds": int(matrix.shape[0]),
                "items": int(matrix.shape[1]),
            }
        )
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def comparison_pairs(
    methods: Sequence[str], baseline: str | None, declared: Sequence[Sequence[str]] = ()
) -> list[Pair]:
    """The family of paired tests: the declared (method, reference) pairs, or else every method
    against ``baseline`` (none without a baseline). Pairs naming a method absent from the run are
    left out (a partial run reports what it has)."""
    present = set(methods)
    if declared:
        return [(str(a), str(b)) for a, b in declared if a in present and b in present]
    if baseline is None or baseline not in present:
        return []
    return [(method, baseline) for method in sorted(present) if method != baseline]


def paired_differences(
    per_item: pd.DataFrame, pairs: Sequence[Pair], alternative: str, resamples: int, seed: int
) -> list[dict[str, Any]]:
    """One row per pair: ``per_item`` (rows: methods, columns: items) compared on the items both
    have; the difference is method - reference."""
    rows: list[dict[str, Any]] = []
    for method, reference in pairs:
        if method not in per_item.index or reference not in per_item.index:
            continue
        both = per_item.loc[[method, reference]].dropna(axis=1)
        if both.shape[1] == 0:
            continue
        result = paired_comparison(
            both.loc[method].to_numpy(), both.loc[reference].to_numpy(), alternative, resamples=resamples, seed=seed
        )
        rows.append(
            {
                "method": method,
                "reference": reference,
                "difference": result.difference,
                "ci_low": result.low,
                "ci_high": result.high,
                "p_value": result.p_value,
                "test": result.test,
                "items": result.n,
            }
        )
    return rows


def with_holm(table: pd.DataFrame, alpha: float, alternative: str) -> pd.DataFrame:
    """``table`` with Holm's adjusted p-values over all its rows (the declared family)."""
    if table.empty:
        return table
    reject, adjusted = holm(table["p_value"].tolist(), alpha)
    return table.assign(p_holm=adjusted, significant=reject, alpha=alpha, alternative=alternative)


def paired_table(
    frame: pd.DataFrame,
    pairs: Sequence[Pair],
    alpha: float = 0.05,
    alternative: str = "two-sided",
    resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every (method, reference) pair on every benchmark, paired by item (item score averaged over
    seeds, items both scored): mean difference with a BCa CI, the paired test's p-value and Holm's
    adjustment over the whole family (all pairs x benchmarks)."""
    final = final_rows(frame)
    present = set(final["method"])
    missing = sorted({label for pair in pairs for label in pair} - present)
    if missing:
        raise ValueError(f"compared methods {missing} are not methods of this run ({sorted(present)})")
    rows: list[dict[str, Any]] = []
    for benchmark, part in final.groupby("benchmark", sort=True):
        per_item = part.groupby(["method", "item_id"])["score"].mean().unstack("item_id")
        rows += [
            {"benchmark": benchmark, **row} for row in paired_differences(per_item, pairs, alternative, resamples, seed)
        ]
    return with_holm(pd.DataFrame(rows), alpha, alternative)


UNTRAINED = "{method}@0"
"""How a trained method's iteration-0 evaluation (its untrained generator) is named in the learning test."""


def learning_table(
    frame: pd.DataFrame, alpha: float = 0.05, alternative: str = "two-sided", resamples: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Did training help? Every trained method's final iteration against its own iteration 0 (the
    generator before any update) on every benchmark, paired by item exactly as `paired_table` pairs
    methods (same test, BCa CI, Holm over the whole family: trained methods x benchmarks). Empty
    when no method was evaluated at iteration 0 and at a later one."""
    spans = frame.groupby("method")["iteration"].agg(["min", "max"])
    trained = [str(m) for m, row in spans.iterrows() if row["min"] == 0 and row["max"] > 0]
    if not trained:
        return pd.DataFrame()
    rows = frame[frame["method"].isin(trained)]
    untrained = rows[rows["iteration"] == 0].assign(method=lambda f: [UNTRAINED.format(method=m) for m in f["method"]])
    pairs = [(method, UNTRAINED.format(method=method)) for method in trained]
    return paired_table(pd.concat([rows, untrained], ignore_index=True), pairs, alpha, alternative, resamples, seed)


def aggregate_table(frame: pd.DataFrame, baseline: str | None, resamples: int = 2_000, seed: int = 0) -> pd.DataFrame:
    """rliable's aggregates over benchmarks (tasks) with stratified bootstrap CIs over seeds (runs):
    mean (the test score: mean over seeds of harness.scores' macro average), IQM and optimality gap
    per method, and the probability of improving on ``baseline``. With fewer than MIN_SEEDS seeds
    the interval bounds are NaN and p_improve is NaN (not computable from one run per method)."""
    final = final_rows(frame)
    per_seed = seed_benchmark_means(final, ["method"]).unstack("benchmark").dropna(axis=0)
    arrays = {str(m): part.to_numpy() for m, part in per_seed.groupby(level="method")}
    rows: list[dict[str, Any]] = []
    for method, scores in sorted(arrays.items()):
        row: dict[str, Any] = {"method": method, "seeds": scores.shape[0], "benchmarks": scores.shape[1]}
        for name, statistic in (
            ("mean", lambda s: float(np.mean([macro_average(run) for run in s]))),
            ("iqm", iqm),
            ("optimality_gap", optimality_gap),
        ):
            if scores.shape[0] < MIN_SEEDS:
                row[name], row[f"{name}_low"], row[f"{name}_high"] = statistic(scores), np.nan, np.nan
                continue
            row[name], row[f"{name}_low"], row[f"{name}_high"] = stratified_bootstrap_ci(
                [scores], statistic, resamples=resamples, seed=seed
            )
        if baseline is not None and baseline in arrays and method != baseline:
            if min(scores.shape[0], arrays[baseline].shape[0]) < MIN_SEEDS:
                row["p_improve"] = row["p_improve_low"] = row["p_improve_high"] = np.nan
            else:
                row["p_improve"], row["p_improve_low"], row["p_improve_high"] = stratified_bootstrap_ci(
                    [scores, arrays[baseline]], probability_of_improvement, resamples=resamples, seed=seed
                )
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate_display(
    aggregates: pd.DataFrame, baseline: str | None, marks: dict[str, str] | None = None
) -> pd.DataFrame:
    """The aggregates as the report prints them: 'value [low, high]', or 'value (interval n/a: 1
    seed)' where an interval over seeds cannot be computed, and p_improve 'n/a (1 seed)'; ``marks``:
    text after a method's name (its 'in progress' state)."""
    seeds = {str(m): int(n) for m, n in zip(aggregates["method"], aggregates["seeds"], strict=True)}
    shown = aggregates[["method", "seeds", "benchmarks"]].copy()
    shown["method"] = [f"{m}{(marks or {}).get(m, '')}" for m in shown["method"]]
    for name in ("mean", "iqm", "optimality_gap", "p_improve"):
        if name not in aggregates:
            continue
        cells = []
        for row in aggregates.itertuples():
            value, low, high = getattr(row, name), getattr(row, f"{name}_low"), getattr(row, f"{name}_high")
            if pd.isna(value):  # p_improve of the baseline itself, or of a pair with too few seeds
                fewest = min(row.seeds, seeds.get(str(baseline), 0))
                applicable = baseline in seeds and row.method != baseline
                cells.append(f"n/a ({fewest} seed{'s' if fewest != 1 else ''})" if applicable else "")
            elif pd.isna(low):
                cells.append(f"{value:.3f} (interval n/a: {row.seeds} seed)")
            else:
                cells.append(f"{value:.3f} [{low:.3f}, {high:.3f}]")
        shown[name] = cells
    return shown
