"""A trial's objective, read from its run folder's store (the same per-item scores the reports use)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.sweeps.config import ObjectiveConfig


def objective_value(run_dir: Path, objective: ObjectiveConfig) -> float:
    """mean_score: mean over benchmarks of the method's final mean score (items x seeds);
    paired_difference: mean over benchmarks of the mean over items of (method - baseline), item
    scores averaged over seeds, on the items both scored."""
    from harness.scores import final_rows, read_item_scores

    frame = read_item_scores(run_dir)
    frame = final_rows(frame[frame["transfer"] == ""])
    per_item = frame.groupby(["benchmark", "method", "item_id"])["score"].mean()
    values = []
    for benchmark, part in per_item.groupby(level="benchmark"):
        scores = part.droplevel("benchmark").unstack("item_id")
        if objective.method not in scores.index:
            raise ValueError(f"{run_dir}: no final scores of {objective.method} on {benchmark}")
        if objective.metric == "mean_score":
            values.append(float(scores.loc[objective.method].mean()))
        else:
            both = scores.loc[[objective.method, objective.baseline]].dropna(axis=1)
            values.append(float((both.loc[objective.method] - both.loc[objective.baseline]).mean()))
    if not values:
        raise ValueError(f"{run_dir}: no evaluation rows")
    return float(np.mean(values))
