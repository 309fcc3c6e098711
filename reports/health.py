"""Run health: how each method's workflow runs ended, and what infrastructure failures were left out.

An ``infra_error`` (the executor failed after its retries) says nothing about the workflow: it
is never a score of 0, never enters a training group, and is left out of item scores. This table
says how many there were, so a reader can tell a clean comparison from one thinned by an outage.
"""

from __future__ import annotations

import pandas as pd

from spogw.harness.workflows.engine import RunStatus

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
    table = table[shown]
    served = served_logprob_gap(rollouts)
    if not served.empty:
        table = table.merge(served, on="method", how="left")
    return table.sort_values("method").reset_index(drop=True)


SERVED_GAP = "served log-prob gap max"
SERVED_NOTE = (
    f" {SERVED_GAP} (generators served by vLLM): the largest difference between a log-prob the server "
    "reported and the trainer's own pass over the same token, a check of the served model; training uses "
    "the trainer's."
)


def served_logprob_gap(rollouts: pd.DataFrame) -> pd.DataFrame:
    """Per method whose generator was served by vLLM: the largest |server log-prob - trainer's
    log-prob| over every sampled token (Rollout.sampler_logp_diff; vLLM reports log-probs of the raw
    logits from its own kernels, so this is a diagnostic of the served model, never used to train).
    Empty when no rollout was served."""
    if rollouts.empty or "sampler_logp_diff" not in rollouts:
        return pd.DataFrame()
    served = rollouts.dropna(subset=["sampler_logp_diff"])
    if served.empty:
        return pd.DataFrame()
    gap = served.groupby("method", sort=True)["sampler_logp_diff"].max()
    # as text: the report's one-decimal float format would print 1.9e-06 as 0.0
    return pd.DataFrame({"method": gap.index, SERVED_GAP: [f"{value:.1e}" for value in gap.to_numpy()]})


def learning_signal_warnings(
    rollouts: pd.DataFrame, iterations: pd.DataFrame | None, updating_iterations: int
) -> list[str]:
    """Lines for the report's head when a trained method had nothing to learn from over its
    iterations 0 .. ``updating_iterations`` - 1: no sampled workflow ran to an answer; or every
    question's trainable samples scored the same (every advantage 0, no pair); or no iteration made
    an update (no group or pair survived curation). Such a method's scores are its untrained
    generator's."""
    warnings: list[str] = []
    flagged: set[str] = set()
    training = rollouts[rollouts["iteration"] < updating_iterations] if not rollouts.empty else rollouts
    for method, group in training.groupby("method", sort=True) if not training.empty else ():
        if not (group["status"] == "ok").any():
            counts = ", ".join(f"{count} {status}" for status, count in group["status"].value_counts().items())
            warnings.append(
                f"**No learning signal: {method}.** None of its {len(group)} sampled workflows ran to an "
                f"answer ({counts}): its updates had nothing to learn from."
            )
            flagged.add(str(method))
            continue
        scored = group[(group["status"] != "infra_error") & group["score"].notna()]
        spread = scored.groupby(["seed", "iteration", "query_id"])["score"].nunique()
        if not (spread > 1).any():
            warnings.append(
                f"**No learning signal: {method}.** For every question, its {len(scored)} sampled workflows scored "
                "the same: every group advantage is 0 and no preference pair exists."
            )
            flagged.add(str(method))
    if iterations is not None and not iterations.empty:
        trained = iterations[iterations["iteration"] < updating_iterations]
        for method, group in trained.groupby("method", sort=True):
            if int(group["steps"].sum()) == 0 and str(method) not in flagged:
                warnings.append(
                    f"**No learning signal: {method}.** No iteration made an update (0 optimizer steps over "
                    f"{group['iteration'].nunique()} iterations x {group['seed'].nunique()} seeds): no group or pair "
                    "survived curation. Its scores are those of the untrained generator."
                )
    return warnings
