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

from reports.stats import mean_ci

ITEM_KEY = ["method", "seed", "iteration", "benchmark", "item_id", "transfer"]


def item_score_frame(eval_items: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed, iteration, benchmark, item_id, transfer): score, repeats scored, ok
    fraction, executor calls and tokens per run. ``transfer`` '' = the method's own executor."""
    columns = [*ITEM_KEY, "score", "repeats", "ok_fraction", "calls", "tokens"]
    if eval_items.empty:
        return pd.DataFrame(columns=columns)
    if "transfer" not in eval_items.columns:  # rows from before executor-transfer evaluations
        eval_items = eval_items.assign(transfer="")
    frame = eval_items.assign(
        score=pd.to_numeric(eval_items["score"], errors="coerce"),
        ok=(eval_items["status"] == "ok").astype(float),
        tokens=eval_items["prompt_tokens"] + eval_items["completion_tokens"],
    )
    out = (
        frame.groupby(ITEM_KEY, sort=True)
        .agg(
            score=("score", "mean"),  # the mean skips NaN (infra errors): they never count as 0
            repeats=("score", "count"),
            ok_fraction=("ok", "mean"),
            calls=("calls", "mean"),
            tokens=("tokens", "mean"),
        )
        .reset_index()
    )
    return out[out["repeats"] > 0].reset_index(drop=True)[columns]


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
        per_item = part.groupby("item_id")["score"].mean()
        per_seed = part.groupby("seed")["score"].mean()
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


def summary_markdown(table: pd.DataFrame) -> str:
    """The per-iteration tables, one per benchmark, with what their intervals cover."""
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
            lines.append(
                f"| {row.method} | {row.iteration} | {row.score:.3f} | [{row.ci_low:.3f}, {row.ci_high:.3f}] | "
                f"{row.seeds} ({row.seed_min:.3f} - {row.seed_max:.3f}) | {row.items} | "
                f"{row.calls_per_run:.1f} | {row.tokens_per_run:,.0f} |"
            )
        lines.append("")
    return "\n".join(lines)
