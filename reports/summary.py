"""Per-item test scores of a run and the per-iteration summary tables (mean test score per method
and iteration with a 95% CI); the full report (reports/report.py) builds on the same frame.

Item score = mean over the item's scorable repeats (infra_error repeats are left out, never 0).
A method's score at an iteration = mean over items of the item score averaged over seeds; the CI
is a BCa bootstrap over items (what it covers is printed beside it), and the seed spread (lowest
and highest per-seed mean) is shown so that seed variance is never hidden behind item variance.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from spogw.harness.scores import ITEM_KEY, item_score_frame, seed_item_matrix
from spogw.reports.stats import mean_ci

__all__ = ["ITEM_KEY", "item_score_frame"]  # defined once in harness/scores.py, used here by name


def final_iterations(frame: pd.DataFrame) -> dict[str, int]:
    """The last evaluated iteration of each method (0 for static workflows)."""
    return {str(m): int(i) for m, i in frame.groupby("method")["iteration"].max().items()}


def summary_table(frame: pd.DataFrame, iterations: dict[str, int] | None = None, seed: int = 0) -> pd.DataFrame:
    """Per benchmark x method x iteration (with ``iterations``: only 0 and each method's last):
    mean score with its 95% CI over items, and the seed spread."""
    rows: list[dict[str, Any]] = []
    for (benchmark, method, iteration), part in frame.groupby(["benchmark", "method", "iteration"], sort=True):
        if iterations is not None and iteration not in (0, iterations.get(str(method), 0)):
            continue
        matrix = seed_item_matrix(part)  # harness.scores' definition: every seed over the same items
        if matrix.empty:
            continue
        per_item, per_seed = matrix.mean(axis=0), matrix.mean(axis=1)
        ci = mean_ci(per_item.to_numpy(), covers="items", seed=seed)
        rows.append(
            {
                "benchmark": benchmark,
                "method": method,
                "iteration": int(iteration),
                "score": ci.mean,
                "ci_low": ci.low,
                "ci_high": ci.high,
                "items": ci.n,
                "seeds": int(per_seed.size),
                "seed_min": float(per_seed.min()),
                "seed_max": float(per_seed.max()),
                "calls_per_run": float(part["calls"].mean()),
                "tokens_per_run": float(part["tokens"].mean()),
            }
        )
    return pd.DataFrame(rows)


def summary_markdown(table: pd.DataFrame, marks: dict[str, str] | None = None) -> str:
    """The per-iteration tables, one per benchmark, with what their intervals cover; ``marks``: text
    after a method's name (its 'in progress' state, reports.coverage)."""
    lines = [
        "Mean test score (item score = mean over repeats, averaged over seeds) with a 95% BCa bootstrap",
        "CI over items, and the lowest and highest per-seed mean. Iteration 0 of a trained method is the",
        "untrained generator; its last iteration is the trained one.",
        "",
    ]
    for benchmark, part in table.groupby("benchmark", sort=True):
        lines += [
            f"### {benchmark}",
            "",
            "| method | iteration | score | 95% CI | seeds (min - max) | items | calls/run | tokens/run |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in part.sort_values(["method", "iteration"]).itertuples():
            method = f"{row.method}{(marks or {}).get(str(row.method), '')}"
            lines.append(
                f"| {method} | {row.iteration} | {row.score:.3f} | [{row.ci_low:.3f}, {row.ci_high:.3f}] | "
                f"{row.seeds} ({row.seed_min:.3f} - {row.seed_max:.3f}) | {row.items} | "
                f"{row.calls_per_run:.1f} | {row.tokens_per_run:,.0f} |"
            )
        lines.append("")
    return "\n".join(lines)
