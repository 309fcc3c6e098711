"""Run health: how each method's workflow runs ended, and what infrastructure failures were left out.

An ``infra_error`` (the executor failed after its retries) says nothing about the workflow: it
is never a score of 0, never enters a training group, and is left out of item scores. This table
says how many there were, so a reader can tell a clean comparison from one thinned by an outage.
"""

from __future__ import annotations

import pandas as pd

from harness.workflows.engine import RunStatus

STATUSES = tuple(status.value for status in RunStatus)


def _counts(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=["method"])
    counts = pd.crosstab(frame["method"], frame["status"]).reindex(columns=list(STATUSES), fill_value=0)
    table = pd.DataFrame({"method": counts.index, f"{prefix} runs": counts.sum(axis=1).to_numpy()})
    for status in STATUSES:
        table[f"{prefix} {status}"] = counts[status].to_numpy()
    return table.reset_index(drop=True)


def health_table(rollouts: pd.DataFrame, eval_items: pd.DataFrame) -> pd.DataFrame:
    """Per method: training rollouts and held-out evaluation runs by status (counts), with the
    infra_error percentage of each (a method that never trained has 0 rollouts). Statuses that
    never occurred are left out, except ok and infra_error."""
    table = _counts(eval_items, "eval").merge(_counts(rollouts, "train"), on="method", how="outer")
    table = table.fillna(0)
    for prefix in ("eval", "train"):
        if f"{prefix} runs" in table:
            runs = table[f"{prefix} runs"].astype(float)
            table[f"{prefix} infra_error %"] = (100 * table[f"{prefix} infra_error"] / runs.where(runs > 0)).fillna(0.0)
    numeric = [c for c in table.columns if c != "method" and not c.endswith("%")]
    table[numeric] = table[numeric].astype(int)
    always = ("runs", "ok", "infra_error", "infra_error %")
    shown = [c for c in table.columns if c == "method" or c.endswith(always) or table[c].any()]
    return table[shown].sort_values("method").reset_index(drop=True)
