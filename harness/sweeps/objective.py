"""A trial's objective, read from its run folder's store (the same per-item scores the reports use)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spogw.harness.sweeps.config import ObjectiveConfig

if TYPE_CHECKING:
    import pandas as pd


def objective_value(run_dir: Path, objective: ObjectiveConfig) -> float:
    """The objective of the run folder's final item scores (``objective_from_frame``)."""
    from spogw.harness.scores import read_item_scores

    return objective_from_frame(read_item_scores(run_dir), objective, str(run_dir))


def objective_from_frame(frame: pd.DataFrame, objective: ObjectiveConfig, source: str = "") -> float:
    """mean_score: the objective method's test score at its final iteration (harness.scores'
    macro average: mean over benchmarks of the benchmark's score, every seed over the items all
    seeds scored); paired_difference: the macro average of the per-benchmark mean over items of (method -
    baseline), item scores averaged over seeds, on the items both scored. ``frame``: an item frame
    (harness.scores.item_score_frame); ``source`` names it in errors."""
    from spogw.harness.scores import final_rows, macro_average, macro_score, own_executor

    frame = final_rows(own_executor(frame))
    if frame.empty:
        raise ValueError(f"{source}: no evaluation rows")
    per_item = frame.groupby(["benchmark", "method", "item_id"])["score"].mean()
    values = []
    for benchmark, part in per_item.groupby(level="benchmark"):
        scores = part.droplevel("benchmark").unstack("item_id")
        if objective.method not in scores.index:
            raise ValueError(f"{source}: no final scores of {objective.method} on {benchmark}")
        if objective.metric == "paired_difference":
            both = scores.loc[[objective.method, objective.baseline]].dropna(axis=1)
            values.append(float((both.loc[objective.method] - both.loc[objective.baseline]).mean()))
    if objective.metric == "mean_score":
        return macro_score(frame[frame["method"] == objective.method])
    return macro_average(values)
