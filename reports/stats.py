"""Statistics over per-item scores. Every interval says what it covers.

The aggregate metrics follow rliable's definitions (Agarwal et al., 2021): interquartile mean,
optimality gap, probability of improvement, stratified bootstrap over runs. rliable itself does not
import beside this lock (its `arch` dependency fails with pandas 3), so they are computed here with
numpy and scipy and tested against hand-computed cases. Paired tests use scipy
(`bootstrap`, `permutation_test`) and statsmodels (`mcnemar`, `multipletests`).

Shapes: a method's scores on one benchmark are a (seeds, items) array of item scores (each the
mean over repeats); `runs x tasks` arrays (seeds x benchmarks) hold per-seed benchmark means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class MeanCI:
    mean: float
    low: float
    high: float
    n: int
    covers: str
    """What the interval's resampling covers (e.g. 'items', 'seeds')."""

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}] (95% CI over {self.n} {self.covers})"


def mean_ci(
    values: np.ndarray | Sequence[float], covers: str, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> MeanCI:
    """Mean with a BCa bootstrap CI (scipy); a constant sample gets a zero-width interval, and a sample
    whose BCa interval is undefined gets the percentile interval of the same resamples."""
    from scipy import stats

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("mean_ci of an empty sample")
    mean = float(data.mean())
    if data.size < 2 or np.all(data == data[0]):
        return MeanCI(mean, mean, mean, int(data.size), covers)
    result = stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=level,
        n_resamples=resamples,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        # BCa is undefined when the resampled means barely vary (hypothesis found [0, 0, 6.5e-295]):
        # fall back to the percentile interval of the same resamples
        low, high = np.quantile(result.bootstrap_distribution, [(1 - level) / 2, (1 + level) / 2])
    return MeanCI(mean, float(low), float(high), int(data.size), covers)


def seed_mean_ci(seed_means: Sequence[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> MeanCI:
    """Mean over seeds with a percentile bootstrap CI over seeds (BCa is unstable with 3-5 seeds)."""
    data = np.asarray(seed_means, dtype=float)
    if data.size == 0:
        raise ValueError("seed_mean_ci of an empty sample")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return MeanCI(float(data.mean()), float(low), float(high), int(data.size), "seeds")


# ----------------------------------------------------------------------------------------------
# rliable's aggregate metrics


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of all scores (25% trimmed each side)."""
    from scipy import stats

    return float(stats.trim_mean(np.asarray(scores, dtype=float).reshape(-1), proportiontocut=0.25))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """Mean shortfall below the target ``gamma``: mean(gamma - min(score, gamma))."""
    data = np.asarray(scores, dtype=float).reshape(-1)
    return float(np.mean(gamma - np.minimum(data, gamma)))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) (ties count half), averaged over tasks. x: (runs_x, tasks), y: (runs_y, tasks)."""
    x, y = np.atleast_2d(np.asarray(x, dtype=float)), np.atleast_2d(np.asarray(y, dtype=float))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} tasks, y has {y.shape[1]}")
    per_task = []
    for task in range(x.shape[1]):
        a, b = x[:, task][:, None], y[:, task][None, :]
        per_task.append(float(np.mean((a > b) + 0.5 * (a == b))))
    return float(np.mean(per_task))


def stratified_bootstrap_ci(
    scores: Sequence[np.ndarray],
    statistic: Callable[..., float],
    level: float = 0.95,
    resamples: int = 2_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, low, high) of ``statistic(*scores)`` with a percentile CI from resampling runs (rows)
    with replacement independently within each task (column), as rliable's StratifiedBootstrap.
    Each array is (runs, tasks); several arrays (e.g. x and y of probability_of_improvement) are
    resampled independently."""
    arrays = [np.atleast_2d(np.asarray(s, dtype=float)) for s in scores]
    rng = np.random.default_rng(seed)
    point = statistic(*arrays)
    draws = np.empty(resamples)
    for draw in range(resamples):
        resampled = []
        for array in arrays:
            runs, tasks = array.shape
            rows = rng.integers(0, runs, size=(runs, tasks))
            resampled.append(np.take_along_axis(array, rows, axis=0))
        draws[draw] = statistic(*resampled)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(point), float(low), float(high)


# ----------------------------------------------------------------------------------------------
# Paired comparisons against a baseline


@dataclass(frozen=True)
class PairedComparison:
    difference: float
    """Mean of (method - baseline) over the paired items."""
    low: float
    high: float
    """95% BCa bootstrap CI of the mean difference (items resampled as pairs)."""
    p_value: float
    """Paired permutation test (two-sided unless stated), or McNemar's exact test for binary scores."""
    test: str
    n: int


def paired_comparison(
    method: Sequence[float],
    baseline: Sequence[float],
    alternative: str = "two-sided",
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Mean paired difference with a BCa CI and a paired permutation p-value (labels swapped within
    pairs: scipy's permutation_type='samples'); binary scores use McNemar's exact test instead."""
    from scipy import stats

    a, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores need two equal-length non-empty vectors, got {a.shape} and {b.shape}")
    diff = a - b
    ci = mean_ci(diff, covers="paired items", level=level, resamples=resamples, seed=seed)
    if binary_scores(a, b):
        p_value, test = mcnemar_exact(a.tolist(), b.tolist()), "McNemar exact"
    elif np.all(diff == 0):
        p_value, test = 1.0, "paired permutation"
    else:
        result = stats.permutation_test(
            (a, b),
            lambda x, y, axis: np.mean(x - y, axis=axis),
            permutation_type="samples",
            alternative=alternative,
            n_resamples=resamples,
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
        p_value, test = float(result.pvalue), "paired permutation"
    return PairedComparison(float(diff.mean()), ci.low, ci.high, p_value, test, int(a.size))


def binary_scores(*scores: np.ndarray) -> bool:
    """Whether every score is 0 or 1: then the paired comparison uses McNemar's exact test."""
    return set(np.unique(np.concatenate([np.asarray(s, dtype=float).ravel() for s in scores]))) <= {0.0, 1.0}


def mcnemar_exact(method: Sequence[float], baseline: Sequence[float]) -> float:
    """McNemar's exact test on paired binary outcomes (statsmodels): only discordant pairs count."""
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(method, dtype=bool), np.asarray(baseline, dtype=bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    return float(mcnemar(table, exact=True).pvalue)


def two_level_bootstrap_ci(scores: np.ndarray, level: float = 0.95, resamples: int = 5_000, seed: int = 0) -> MeanCI:
    """CI of the grand mean of a (seeds, items) array covering both noise sources: each draw
    resamples seeds, then items jointly (the same item indices for every drawn seed)."""
    data = np.asarray(scores, dtype=float)
    if data.ndim != 2 or 0 in data.shape:
        raise ValueError(f"two_level_bootstrap_ci needs a (seeds, items) array, got shape {data.shape}")
    seeds, items = data.shape
    rng = np.random.default_rng(seed)
    seed_rows = rng.integers(0, seeds, size=(resamples, seeds))
    item_cols = rng.integers(0, items, size=(resamples, items))
    draws = np.array([data[seed_rows[r]][:, item_cols[r]].mean() for r in range(resamples)])
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return MeanCI(float(data.mean()), float(low), float(high), seeds * items, f"{seeds} seeds x {items} items")


def holm(p_values: Sequence[float], alpha: float = 0.05) -> tuple[list[bool], list[float]]:
    """Holm's step-down correction over a declared family: (reject, adjusted p) in input order.

    A family of one needs no correction (its adjusted p is its p; rejected when p <= alpha, as
    statsmodels decides): answered here, because statsmodels' Holm branch ends with a full
    gc.collect(), 0.1 s in a process holding torch, which bench/calibration.py's 1,200 one-pair
    tests paid on every one of them."""
    if len(p_values) == 1:
        p = float(p_values[0])
        return [p <= alpha], [p]
    from statsmodels.stats.multitest import multipletests

    reject, adjusted, _, _ = multipletests(list(p_values), alpha=alpha, method="holm")
    return [bool(r) for r in reject], [float(p) for p in adjusted]
