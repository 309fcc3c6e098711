"""Figures of a run (matplotlib/seaborn, PNG + SVG): learning curves with CI bands, score intervals
per method, probability of improvement over the baseline, and workflow diversity over iterations.

Each function takes the frames of reports/comparison.py (or the rollouts table) and returns the
figure; `save` writes both formats atomically. Titles say what an interval covers and whether the
executor is simulated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports.stats import mean_ci


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt


def _suffix(simulated: bool) -> str:
    return " (SIMULATED executor)" if simulated else ""


def _intervals(axis: Any, labels: Any, points: Any, lows: Any, highs: Any) -> None:
    """One horizontal interval per label: the point with its [low, high] as error bars."""
    ys = np.arange(len(labels))
    axis.errorbar(points, ys, xerr=[points - lows, highs - points], fmt="o", capsize=3)
    axis.set_yticks(ys, labels)


def learning_curves(frame: pd.DataFrame, simulated: bool, resamples: int = 2_000) -> Any:
    """Test score against iteration, one panel per benchmark, one line per method, 95% BCa band over
    items (item scores averaged over seeds). Static workflows are flat lines at their score."""
    plt = _pyplot()
    benchmarks = sorted(frame["benchmark"].unique())
    figure, axes = plt.subplots(1, len(benchmarks), figsize=(4.2 * len(benchmarks), 3.4), squeeze=False)
    last = int(frame["iteration"].max())
    for axis, benchmark in zip(axes[0], benchmarks, strict=True):
        part = frame[frame["benchmark"] == benchmark]
        for method, rows in part.groupby("method", sort=True):
            points = []
            for iteration, at in rows.groupby("iteration", sort=True):
                ci = mean_ci(at.groupby("item_id")["score"].mean().to_numpy(), "items", resamples=resamples)
                points.append((int(iteration), ci.mean, ci.low, ci.high))
            if len(points) == 1:  # a static workflow: the same score at every iteration
                points = [(0, *points[0][1:]), (last, *points[0][1:])]
            xs, means, lows, highs = (np.array(column) for column in zip(*points, strict=True))
            (line,) = axis.plot(xs, means, marker="o", label=str(method))
            axis.fill_between(xs, lows, highs, alpha=0.15, color=line.get_color())
        axis.set_title(str(benchmark))
        axis.set_xlabel("iteration")
        axis.set_ylabel("test score")
        axis.set_xticks(range(last + 1))
    axes[0][-1].legend(fontsize="small", loc="best")
    figure.suptitle(f"Learning curves, 95% CI over items{_suffix(simulated)}")
    figure.tight_layout()
    return figure


def interval_plot(scores: pd.DataFrame, simulated: bool) -> Any:
    """Final score per method with its two-level 95% CI (seeds and items), one panel per benchmark."""
    plt = _pyplot()
    benchmarks = sorted(scores["benchmark"].unique())
    figure, axes = plt.subplots(
        1, len(benchmarks), figsize=(4.2 * len(benchmarks), 0.5 + 0.45 * scores["method"].nunique()), squeeze=False
    )
    for axis, benchmark in zip(axes[0], benchmarks, strict=True):
        part = scores[scores["benchmark"] == benchmark].sort_values("score")
        _intervals(axis, part["method"], part["score"], part["ci_low"], part["ci_high"])
        axis.set_title(str(benchmark))
        axis.set_xlabel("test score")
    figure.suptitle(f"Final test score, 95% CI over seeds and items{_suffix(simulated)}")
    figure.tight_layout()
    return figure


def improvement_plot(aggregates: pd.DataFrame, baseline: str, simulated: bool) -> Any:
    """P(method > baseline) over benchmarks with its stratified-bootstrap 95% CI over seeds."""
    plt = _pyplot()
    part = aggregates.dropna(subset=["p_improve"]).sort_values("p_improve")
    figure, axis = plt.subplots(figsize=(5.0, 0.6 + 0.45 * max(len(part), 1)))
    _intervals(axis, part["method"], part["p_improve"], part["p_improve_low"], part["p_improve_high"])
    axis.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"P(method > {baseline})")
    axis.set_title(f"Probability of improvement, 95% CI over seeds{_suffix(simulated)}")
    figure.tight_layout()
    return figure


def diversity_plot(rollouts: pd.DataFrame, simulated: bool) -> Any:
    """Distinct operator structures among a question's sampled workflows, averaged over questions
    and seeds, against iteration (collection samples of the trained methods)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.0, 3.4))
    valid = rollouts[rollouts["structure"].astype(str) != ""]
    distinct = valid.groupby(["method", "seed", "iteration", "query_id"])["structure"].nunique().reset_index()
    for method, rows in distinct.groupby("method", sort=True):
        curve = rows.groupby("iteration")["structure"].mean()
        axis.plot(curve.index, curve.to_numpy(), marker="o", label=str(method))
    axis.set_xlabel("iteration")
    axis.set_ylabel("distinct structures per question")
    axis.set_title(f"Workflow diversity of sampled workflows{_suffix(simulated)}")
    if not distinct.empty:
        axis.legend(fontsize="small")
    figure.tight_layout()
    return figure


def save(figure: Any, directory: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.svg (temporary name, then rename: never a torn file)."""
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "svg"):
        path = directory / f"{name}.{suffix}"
        temporary = directory / f".{name}.{suffix}.tmp"
        figure.savefig(temporary, format=suffix, dpi=150)
        os.replace(temporary, path)
        paths.append(path)
    plt.close(figure)
    return paths
