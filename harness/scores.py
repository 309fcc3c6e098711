"""The item score, defined once: the mean over an item's scorable repeats.

A repeat whose run ended in infra_error has no score (the executor failed; it says nothing about the
workflow) and is left out, never counted as 0; an item with no scorable repeat has no score. Every
consumer uses this module: `spogw eval`, the runner's per-iteration metrics, the reports' per-item
frame and the sweep objective (`item_score_frame` is the vectorised form of `item_score`; a test
checks they agree).

A benchmark's score over seeds is defined here once: the mean over seeds of each seed's mean item
score, every seed over the same items (those all seeds scored; `seed_item_matrix`). The test score
over several benchmarks too: the macro average, the unweighted mean over benchmarks of each
benchmark's score (`macro_average`; `benchmark_means` and `macro_scores` are its forms over an item
frame). A 20-item benchmark weighs as much as a 500-item
one, as papers average over benchmarks. MLflow's ``test_score``, the report's aggregates and cost
figure, and the sweep objective all call it (tests/test_report.py checks they agree).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from spogw.harness.store import EvalRow

ITEM_KEY = ["method", "seed", "iteration", "benchmark", "item_id", "transfer"]
"""What an item score is keyed by: the method's policy at one iteration and seed, on one item, with
its own executor (transfer '') or a transfer executor."""


def item_score(repeat_scores: Iterable[float | None]) -> float | None:
    """The mean of the scored repeats (None entries are infra errors and are skipped); None if none."""
    scored = [s for s in repeat_scores if s is not None]
    return statistics.fmean(scored) if scored else None


def item_scores(rows: Sequence[EvalRow]) -> dict[tuple[str, str], float]:
    """(benchmark, item_id) -> item score, for the evaluation rows of one policy; items without a
    scorable repeat are left out."""
    repeats: dict[tuple[str, str], list[float | None]] = {}
    for row in rows:
        repeats.setdefault((row.benchmark, row.item_id), []).append(row.score)
    scores = {key: item_score(values) for key, values in repeats.items()}
    return {key: score for key, score in scores.items() if score is not None}


def macro_average(benchmark_means: Iterable[float]) -> float:
    """The test score over benchmarks: the unweighted mean of the benchmarks' mean item scores (each
    in [0, 1]); NaN when there is no benchmark."""
    values = list(benchmark_means)
    return statistics.fmean(values) if values else math.nan


def iteration_metrics(rows: Sequence[EvalRow]) -> dict[str, float]:
    """Mean test score per benchmark (over its items' scores), the test score over benchmarks
    (``macro_average`` of those) and the fraction of runs that ended ok: what is logged for one
    (method, seed, iteration)."""
    scores = item_scores(rows)
    metrics: dict[str, float] = {}
    benchmarks = sorted({b for b, _ in scores})
    for benchmark in benchmarks:
        metrics[f"test_score.{benchmark}"] = statistics.fmean(s for (b, _), s in scores.items() if b == benchmark)
    if scores:
        metrics["test_score"] = macro_average(metrics[f"test_score.{b}"] for b in benchmarks)
    if rows:
        metrics["test_ok_fraction"] = sum(row.status == "ok" for row in rows) / len(rows)
    return metrics


def item_score_frame(eval_items: pd.DataFrame) -> pd.DataFrame:
    """One row per ITEM_KEY: score (`item_score` of its repeats), repeats scored, ok fraction,
    executor calls and tokens per run. ``transfer`` '' = the method's own executor."""
    import pandas as pd

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
            score=("score", "mean"),  # pandas' mean skips NaN: item_score's rule for infra errors
            repeats=("score", "count"),
            ok_fraction=("ok", "mean"),
            calls=("calls", "mean"),
            tokens=("tokens", "mean"),
        )
        .reset_index()
    )
    return out[out["repeats"] > 0].reset_index(drop=True)[columns]


def seed_item_matrix(part: pd.DataFrame) -> pd.DataFrame:
    """(seeds, items) item scores of one method and benchmark (rows of an item frame): a seed that
    scored no item is dropped, then every item some remaining seed did not score (all its repeats
    infra errors), so that each seed is averaged over the same items and every place that reports
    a score (table, aggregates, MLflow, sweep objective) gives the same number."""
    matrix = part.pivot_table(index="seed", columns="item_id", values="score", aggfunc="mean")
    return matrix.dropna(axis=0, how="all").dropna(axis=1)


def seed_benchmark_means(frame: pd.DataFrame, by: Sequence[str] = ()) -> pd.Series:
    """Per (*by, benchmark, seed): the seed's mean item score over the items of ``seed_item_matrix``.
    A Series indexed by (*by, benchmark, seed)."""
    import pandas as pd

    keys = [*by, "benchmark"]
    pieces = []
    for key, part in frame.groupby(keys, sort=True):
        matrix = seed_item_matrix(part)
        if matrix.empty:  # no item all its seeds scored: no score (never NaN, never 0)
            continue
        means = matrix.mean(axis=1)
        key = key if isinstance(key, tuple) else (key,)
        pieces += [(*key, seed, float(value)) for seed, value in means.items()]
    index = pd.MultiIndex.from_tuples([p[:-1] for p in pieces], names=[*keys, "seed"])
    return pd.Series([p[-1] for p in pieces], index=index, name="score", dtype=float)


def benchmark_means(frame: pd.DataFrame, by: Sequence[str] = ()) -> pd.Series:
    """Per (*by, benchmark): the benchmark's score, the mean over seeds of each seed's mean item score
    (over the items every seed scored, ``seed_item_matrix``). A Series indexed by (*by, benchmark)."""
    per_seed = seed_benchmark_means(frame, by)
    return per_seed.groupby(level=[*by, "benchmark"], sort=True).mean()


def macro_scores(frame: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    """Per ``by`` group of an item frame (e.g. method and iteration): its test score, the
    ``macro_average`` of its ``benchmark_means``. A Series indexed by ``by``."""
    means = benchmark_means(frame, by)
    return means.groupby(level=list(by), sort=True).agg(macro_average)


def macro_score(frame: pd.DataFrame) -> float:
    """The test score of an item frame's rows taken together (one method at one iteration, say)."""
    return macro_average(benchmark_means(frame).tolist())


def own_executor(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of an item frame scored with each method's own executor (``transfer`` ''), not the
    executor-transfer evaluations: what results, comparisons and objectives are about."""
    return frame[frame["transfer"] == ""].reset_index(drop=True)


def final_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each method's rows at its last evaluated iteration."""
    last = frame.groupby("method")["iteration"].transform("max")
    return frame[frame["iteration"] == last]


def read_item_scores(run_dir: str | Path) -> pd.DataFrame:
    """The item-score frame of a run folder, read without a write lock (the run may still write)."""
    from spogw.harness.store import read_table

    return item_score_frame(read_table(run_dir, "eval_items"))
