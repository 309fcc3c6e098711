"""Figures of a run (matplotlib/seaborn, PNG + SVG): learning curves with CI bands (against
iteration and against training cost), score intervals per method, probability of improvement over
the baseline, workflow diversity over iterations, group-std histograms before and after curation,
and executor-transfer heatmaps.

Each function takes the frames of reports/comparison.py (or the rollouts table) and returns the
figure; `save` writes both formats atomically. Titles say what an interval covers and whether the
executor is simulated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spogw.harness.atomic import atomic_path
from spogw.reports.stats import mean_ci


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
    items (harness.scores' benchmark score: item scores averaged over seeds, on the items every seed
    scored). Static workflows are flat lines at their score."""
    from spogw.harness.scores import seed_item_matrix

    plt = _pyplot()
    benchmarks = sorted(frame["benchmark"].unique())
    figure, axes = plt.subplots(1, len(benchmarks), figsize=(4.2 * len(benchmarks), 3.4), squeeze=False)
    last = int(frame["iteration"].max())
    for axis, benchmark in zip(axes[0], benchmarks, strict=True):
        part = frame[frame["benchmark"] == benchmark]
        for method, rows in part.groupby("method", sort=True):
            points = []
            for iteration, at in rows.groupby("iteration", sort=True):
                matrix = seed_item_matrix(at)  # the report's score: every seed over the same items
                if matrix.empty:
                    continue
                ci = mean_ci(matrix.mean(axis=0).to_numpy(), "items", resamples=resamples)
                points.append((int(iteration), ci.mean, ci.low, ci.high))
            if not points:
                continue
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
    """P(method > baseline) over benchmarks with its stratified-bootstrap 95% CI over seeds; a
    method with fewer than two seeds (or a baseline with fewer) has none, and the figure says so."""
    plt = _pyplot()
    part = aggregates.dropna(subset=["p_improve"]).sort_values("p_improve")
    figure, axis = plt.subplots(figsize=(5.0, 0.6 + 0.45 * max(len(part), 3 if part.empty else 1)))
    _intervals(axis, part["method"], part["p_improve"], part["p_improve_low"], part["p_improve_high"])
    if part.empty:
        axis.text(
            0.5, 0.5, "n/a: needs at least 2 seeds per method", ha="center", va="center", transform=axis.transAxes
        )
        axis.set_yticks([])
    axis.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"P(method > {baseline})")
    axis.set_title(f"Probability of improvement, 95% CI over seeds{_suffix(simulated)}")
    figure.tight_layout()
    return figure


def diversity_plot(table: pd.DataFrame, simulated: bool) -> Any:
    """The diversity metrics of reports/diversity.py against iteration, one panel per metric, one
    line per method, 95% CI bands over questions."""
    from matplotlib.ticker import MaxNLocator

    from spogw.reports.diversity import METRICS

    plt = _pyplot()
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4), squeeze=False)
    for axis, (metric, title) in zip(axes[0], METRICS.items(), strict=True):
        for method, rows in table.dropna(subset=[metric]).groupby("method", sort=True):
            rows = rows.sort_values("iteration")
            (line,) = axis.plot(rows["iteration"], rows[metric], marker="o", label=str(method))
            axis.fill_between(
                rows["iteration"], rows[f"{metric}_low"], rows[f"{metric}_high"], alpha=0.15, color=line.get_color()
            )
        axis.set_title(title)
        axis.set_xlabel("iteration")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not table.empty:
        axes[0][-1].legend(fontsize="small")
    figure.suptitle(f"Diversity of the sampled workflows, 95% CI over questions{_suffix(simulated)}")
    figure.tight_layout()
    return figure


def variance_histograms(stds: pd.DataFrame, simulated: bool) -> Any:
    """Per GRPO-family method, the distribution of group score std before curation (every group
    built) and after (the variance filter and sharpening), pooled over seeds, iterations, questions."""
    plt = _pyplot()
    methods = sorted(stds["method"].unique())
    columns = min(len(methods), 4) or 1
    rows = -(-len(methods) // columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), squeeze=False)
    bins = np.linspace(0.0, 0.5, 26)  # scores lie in [0, 1]: a population std is at most 0.5
    for axis, method in zip(axes.flat, methods, strict=False):
        part = stds[stds["method"] == method]
        for stage, color in (("built", "tab:grey"), ("kept", "tab:blue")):
            values = part[part["stage"] == stage]["std"].to_numpy()
            if values.size:
                axis.hist(values, bins=bins, alpha=0.55, color=color, label=f"{stage} ({values.size:,})")
        axis.set_title(str(method))
        axis.set_xlabel("group score std")
        axis.legend(fontsize="x-small")
    for axis in list(axes.flat)[len(methods) :]:
        axis.set_visible(False)
    figure.suptitle(f"Group score std before (built) and after curation (kept){_suffix(simulated)}")
    figure.tight_layout()
    return figure


def cost_points(frame: pd.DataFrame, cumulative: pd.DataFrame, cost: str) -> tuple[pd.Series, pd.Series]:
    """The cost figure's numbers: per (method, iteration) the training cost spent before that
    iteration's policy (mean over seeds) and its test score (harness.scores' macro average over
    benchmarks of the benchmark scores)."""
    from spogw.harness.scores import macro_scores

    x = cumulative.groupby(["method", "iteration"])[cost].mean()
    return x, macro_scores(frame, ["method", "iteration"])


def cost_curves(frame: pd.DataFrame, cumulative: pd.DataFrame, cost: str, label: str, simulated: bool) -> Any:
    """Test score (``cost_points``) against the training cost spent before each iteration's policy:
    one line per trained method; static workflows as dashed horizontal lines (they cost nothing to
    train)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.4, 3.6))
    x, score = cost_points(frame, cumulative, cost)
    score = score.rename("score")
    for method in sorted(frame["method"].unique()):
        if method in x.index.get_level_values("method"):
            points = pd.concat([x.loc[method], score.loc[method]], axis=1, join="inner").sort_index()
            axis.plot(points[cost], points["score"], marker="o", label=str(method))
        else:
            axis.axhline(float(score.loc[method].iloc[-1]), linestyle="--", linewidth=1, label=f"{method} (static)")
    axis.set_xlabel(label)
    axis.set_ylabel("test score")
    axis.set_title(f"Test score against training cost{_suffix(simulated)}")
    axis.legend(fontsize="x-small")
    figure.tight_layout()
    return figure


def transfer_heatmap(matrix: pd.DataFrame, title: str, simulated: bool, center: float | None = None) -> Any:
    """A trained-with x evaluated-with matrix as an annotated heatmap (``center``: diverging colours
    around it, for differences)."""
    import seaborn as sns

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(6.0, 1.6 + 1.3 * matrix.shape[1]), 1.2 + 0.55 * matrix.shape[0]))
    cmap = "vlag" if center is not None else "viridis"
    sns.heatmap(matrix.astype(float), annot=True, fmt=".3f", cmap=cmap, center=center, ax=axis, cbar=False)
    axis.set_xlabel("evaluated with")
    axis.set_ylabel("trained with")
    axis.set_title(f"{title}{_suffix(simulated)}", fontsize="small")
    figure.tight_layout()
    return figure


def save(figure: Any, directory: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.svg (temporary name, then rename: never a torn file)."""
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "svg"):
        path = directory / f"{name}.{suffix}"
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=suffix, dpi=150)
        paths.append(path)
    plt.close(figure)
    return paths
