"""A run folder's per-item scores as one tidy table, for the reports and for users' own analyses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spogw.harness.store import connect_read_only

__all__ = ["COLUMNS", "connect_read_only", "load", "read_eval_items", "read_groups", "read_iterations", "read_rollouts"]

COLUMNS = ["method", "seed", "iteration", "benchmark", "item", "repeat", "score", "status"]
"""The tidy frame's first columns, in order (then calls, prompt_tokens, completion_tokens, wall_s, transfer)."""


def columns_of(db: Any, table: str) -> list[str]:
    """The columns of ``table`` ([] when the store has no such table: a run folder from before it)."""
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def read_eval_items(db: Any) -> Any:
    """The eval_items table; stores written before its ``transfer`` column read as '' (own executor)."""
    import pandas as pd

    frame = pd.read_sql_query("SELECT * FROM eval_items", db)
    if "transfer" not in frame.columns:
        frame["transfer"] = ""
    return frame


def read_rollouts(db: Any) -> Any:
    """One row per collected workflow, without its token arrays: key, benchmark, structure, status,
    score, ``tokens`` (completion length), ``nll`` (sum of the sampler's -log p over the completion:
    nll / tokens estimates the policy's per-token entropy), executor calls, tokens and wall time, and
    ``sampler_logp_diff`` (None unless a vLLM server sampled, and in run folders from before it)."""
    import pandas as pd

    columns = {row[1] for row in db.execute("PRAGMA table_info(rollouts)")}
    served = "sampler_logp_diff" if "sampler_logp_diff" in columns else "NULL AS sampler_logp_diff"
    return pd.read_sql_query(
        "SELECT method, seed, iteration, query_id, sample_idx, benchmark, structure, status, score, "
        "json_array_length(completion_ids) AS tokens, "
        "-(SELECT total(value) FROM json_each(old_logp)) AS nll, "
        f"executor_calls, executor_tokens, wall_s, {served} FROM rollouts",
        db,
    )


def read_iterations(db: Any) -> Any:
    """The iterations table (training score, rollouts, collection and update time per method x seed x
    iteration); empty for run folders from before it."""
    import pandas as pd

    columns = ["method", "seed", "iteration", "train_score", "rollouts", "collect_s", "train_s", "steps"]
    if not columns_of(db, "iterations"):
        return pd.DataFrame(columns=columns)
    return pd.read_sql_query(f"SELECT {', '.join(columns)} FROM iterations", db)


def read_groups(db: Any) -> Any:
    """The groups the trainer built and kept (harness/store.py GroupRow); empty for run folders from
    before the table."""
    import pandas as pd

    columns = ["method", "seed", "iteration", "query_id", "stage", "group_index", "members", "std"]
    if not columns_of(db, "groups"):
        return pd.DataFrame(columns=columns)
    return pd.read_sql_query(f"SELECT {', '.join(columns)} FROM groups", db)


def load(run_dir: str | Path) -> Any:
    """Per-item evaluation scores of a run folder: one row per (method, seed, iteration, benchmark,
    item, repeat, transfer) with its score (NaN for infra_error: it never counts as 0) and status,
    plus the run's executor calls, tokens and wall time; ``transfer`` is '' for the method's own
    executor, else the evaluation.transfer executor's name. Read-only; the run may still be going."""
    import pandas as pd

    with connect_read_only(run_dir) as db:
        frame = read_eval_items(db).rename(columns={"item_id": "item"})
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    ordered = [*COLUMNS, "calls", "prompt_tokens", "completion_tokens", "wall_s", "transfer"]
    return frame[ordered].sort_values([*ordered[:6], "transfer"]).reset_index(drop=True)
