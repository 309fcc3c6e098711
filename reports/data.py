"""A run folder's per-item scores as one tidy table, for the reports and for users' own analyses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

COLUMNS = ["method", "seed", "iteration", "benchmark", "item", "repeat", "score", "status"]
"""The tidy frame's columns, in order (then calls, prompt_tokens, completion_tokens, wall_s)."""


@contextmanager
def connect_read_only(run_dir: str | Path) -> Iterator[Any]:
    """A read-only connection to a run folder's store (the run may still be writing to it), closed
    on exit."""
    import sqlite3

    path = Path(run_dir) / "rollouts.sqlite"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {path} does not exist")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        yield db


def load(run_dir: str | Path) -> Any:
    """Per-item evaluation scores of a run folder: one row per (method, seed, iteration, benchmark,
    item, repeat) with its score (NaN for infra_error: it never counts as 0) and status, plus the
    run's executor calls, tokens and wall time. Read-only; the run may still be going."""
    import pandas as pd

    with connect_read_only(run_dir) as db:
        frame = pd.read_sql_query(
            "SELECT method, seed, iteration, benchmark, item_id AS item, repeat, score, status, calls, "
            "prompt_tokens, completion_tokens, wall_s FROM eval_items "
            "ORDER BY method, seed, iteration, benchmark, item_id, repeat",
            db,
        )
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame
