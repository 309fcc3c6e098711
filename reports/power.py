"""Sample-size planning for the report's paired comparison: from a pilot run's per-item and
per-seed variation, the minimum detectable difference at the run's items x seeds, the power for a
given difference, and the items (or seeds) a given difference needs.

The test being planned is the report's (reports.comparison.paired_table): items are the units,
each item's score is averaged over the seeds (and repeats) that scored it, and the mean paired
difference is tested with a paired permutation test. Its variance, for n items and s seeds, is

    Var(mean difference) = (sigma2_item * (1 - n / N) + sigma2_seed / s) / n

- ``sigma2_seed``: the variance of one seed's item difference around that item's mean difference
  (execution noise at the run's repeats, and anything else that changes from seed to seed),
  estimated as the mean over items of the variance across seeds (needs >= 2 seeds);
- ``sigma2_item``: the variance across items of the true item difference, estimated as the
  variance across items of the seed-averaged differences minus sigma2_seed / s (clipped at 0);
- ``N``: a finite population of items (the calibration draws items from a fixed pool); None for
  a benchmark that stands for an unlimited population (the finite-population factor is then 1).

Power uses the noncentral t distribution with n - 1 degrees of freedom (the permutation test's
large-sample twin, Cohen 1988, Statistical Power Analysis, ch. 2): with delta the difference and
se = sqrt(Var), power = P(|T| > t_crit) for T ~ nct(n - 1, delta / se). bench/calibration.py
checks the prediction against detection rates in simulated replications (docs/reports.md).

A caveat the planner reports rather than hides: the item-paired test treats the seeds' policies as
fixed. When trained policies differ from seed to seed (policy-level variance), the seeds' mean
differences spread more than item noise explains; ``seed_spread`` measures that ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class VarianceComponents:
    """What a pilot tells about one paired comparison (method - reference) on one benchmark."""

    difference: float
    """The pilot's mean paired difference (method - reference) over items and seeds."""
    sigma2_item: float
    """Variance across items of the true item difference."""
    sigma2_seed: float
    """Variance of one seed's item difference around the item's mean (NaN from one seed)."""
    items: int
    seeds: int
    seed_spread: float
    """Observed sd of the seeds' mean differences / the sd item noise alone would give (about 1
    when seeds differ only by execution noise; NaN from one seed)."""


def variance_components(differences: np.ndarray) -> VarianceComponents:
    """Estimate the components from a (seeds, items) array of per-seed item differences, each item's
    score (mean over its repeats) of the method minus the reference's, items every seed scored.
    Raises ValueError for an empty array."""
    data = np.asarray(differences, dtype=float)
    if data.ndim != 2 or 0 in data.shape:
        raise ValueError(f"variance_components needs a (seeds, items) array, got shape {data.shape}")
    seeds, items = data.shape
    item_means = data.mean(axis=0)
    spread_items = float(item_means.var(ddof=1)) if items > 1 else 0.0
    if seeds < 2:
        return VarianceComponents(float(data.mean()), spread_items, math.nan, items, seeds, math.nan)
    sigma2_seed = float(data.var(axis=0, ddof=1).mean())
    sigma2_item = max(0.0, spread_items - sigma2_seed / seeds)
    seed_means = data.mean(axis=1)
    expected_sd = math.sqrt(sigma2_seed / items)
    observed_sd = float(seed_means.std(ddof=1))
    spread = observed_sd / expected_sd if expected_sd > 0 else math.nan
    return VarianceComponents(float(data.mean()), sigma2_item, sigma2_seed, items, seeds, spread)


def standard_error(components: VarianceComponents, items: int, seeds: int, population: int | None = None) -> float:
    """sd of the test's mean difference at ``items`` x ``seeds`` (module docstring's formula). From a
    one-seed pilot the split is unknown: the pilot's whole item variance is used, at any seeds."""
    seed_term = 0.0 if math.isnan(components.sigma2_seed) else components.sigma2_seed / seeds
    fpc = 1.0 - items / population if population else 1.0  # drawing items from a finite pool: only their term
    return math.sqrt(max(0.0, (components.sigma2_item * fpc + seed_term) / items))


def power(delta: float, se: float, items: int, alpha: float = 0.05) -> float:
    """P(the two-sided paired test at ``alpha`` rejects) when the true mean difference is ``delta``
    and the estimate's sd is ``se``, over ``items`` pairs (noncentral t, items - 1 df)."""
    from scipy import stats

    if items < 2:
        return math.nan
    if se == 0:
        return 1.0 if delta != 0 else alpha
    df = items - 1
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    shift = delta / se
    exact = float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))
    if math.isfinite(exact):
        return min(1.0, exact)
    # scipy's nct loses precision far in the tail (large shift): the normal limit is exact there
    return float(min(1.0, stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift)))


def minimum_detectable_difference(
    components: VarianceComponents,
    items: int,
    seeds: int,
    alpha: float = 0.05,
    target_power: float = 0.8,
    population: int | None = None,
) -> float:
    """The smallest |difference| the test detects with ``target_power`` at ``items`` x ``seeds``."""
    from scipy.optimize import brentq

    se = standard_error(components, items, seeds, population)
    if items < 2 or se == 0:
        return math.nan if items < 2 else 0.0
    return float(brentq(lambda d: power(d, se, items, alpha) - target_power, 0.0, 50 * se + 1e-9))


def items_needed(
    components: VarianceComponents, delta: float, seeds: int, alpha: float = 0.05, target_power: float = 0.8
) -> int | None:
    """The fewest items at which a true difference ``delta`` is detected with ``target_power`` at
    ``seeds`` seeds; None when even 100,000 items do not suffice (delta 0)."""
    if delta == 0:
        return None
    low, high = 2, 100_000
    if power(abs(delta), standard_error(components, high, seeds), high, alpha) < target_power:
        return None
    while low < high:
        middle = (low + high) // 2
        if power(abs(delta), standard_error(components, middle, seeds), middle, alpha) >= target_power:
            high = middle
        else:
            low = middle + 1
    return low


def seeds_needed(
    components: VarianceComponents,
    delta: float,
    items: int,
    alpha: float = 0.05,
    target_power: float = 0.8,
    most: int = 100,
) -> int | None:
    """The fewest seeds at which ``delta`` is detected with ``target_power`` at ``items`` items; None
    when no number of seeds up to ``most`` suffices (the item variance alone is too large: more
    items are needed) or the pilot had one seed (the split between item and seed noise is unknown)."""
    if delta == 0 or math.isnan(components.sigma2_seed):
        return None
    for seeds in range(1, most + 1):
        if power(abs(delta), standard_error(components, items, seeds), items, alpha) >= target_power:
            return seeds
    return None


def pair_differences(frame: pd.DataFrame, method: str, reference: str, benchmark: str) -> np.ndarray:
    """(seeds, items) per-seed item differences method - reference at each one's final iteration,
    over the seeds both ran and the items every one of those seeds scored for both (an item score
    frame, harness.scores.item_score_frame)."""
    from spogw.harness.scores import final_rows

    final = final_rows(frame[frame["benchmark"] == benchmark])
    grids = [
        final[final["method"] == label].pivot_table(index="seed", columns="item_id", values="score", aggfunc="mean")
        for label in (method, reference)
    ]
    seeds = grids[0].index.intersection(grids[1].index)
    items = grids[0].columns.intersection(grids[1].columns)
    both = (grids[0].loc[seeds, items] - grids[1].loc[seeds, items]).dropna(axis=1)
    return both.to_numpy()


PLAN_COLUMNS = [
    "benchmark", "method", "reference", "difference", "items", "seeds", "sigma2_item", "sigma2_seed",
    "seed_spread", "mdd", "effect", "power_at_effect", "items_for_effect", "seeds_for_effect",
]  # fmt: skip


def planning_table(
    frame: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    effect: float | None = None,
    alpha: float = 0.05,
    target_power: float = 0.8,
) -> pd.DataFrame:
    """One row per (benchmark, pair): the pilot's difference and variance components, the minimum
    detectable difference (``mdd``) at its items x seeds, and for ``effect`` (default: the pilot's
    own |difference|) the power at its size, the items needed at its seeds and the seeds needed at
    its items (None: not reachable, see ``seeds_needed``)."""
    import pandas as pd

    rows = []
    for benchmark in sorted(frame["benchmark"].unique()):
        for method, reference in pairs:
            differences = pair_differences(frame, method, reference, benchmark)
            if differences.size == 0:
                continue
            parts = variance_components(differences)
            delta = abs(parts.difference) if effect is None else effect
            se = standard_error(parts, parts.items, parts.seeds)
            rows.append(
                {
                    "benchmark": benchmark,
                    "method": method,
                    "reference": reference,
                    "difference": parts.difference,
                    "items": parts.items,
                    "seeds": parts.seeds,
                    "sigma2_item": parts.sigma2_item,
                    "sigma2_seed": parts.sigma2_seed,
                    "seed_spread": parts.seed_spread,
                    "mdd": minimum_detectable_difference(parts, parts.items, parts.seeds, alpha, target_power),
                    "effect": delta,
                    "power_at_effect": power(delta, se, parts.items, alpha),
                    "items_for_effect": items_needed(parts, delta, parts.seeds, alpha, target_power),
                    "seeds_for_effect": seeds_needed(parts, delta, parts.items, alpha, target_power),
                }
            )
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


def planning_markdown(table: pd.DataFrame, alpha: float, target_power: float, effect: float | None) -> str:
    """The planning table as the report and `spogw power` print it, with how to read it."""
    from spogw.reports.sections import pipe_table

    if table.empty:
        return "No paired comparison with scored items in common: nothing to plan from.\n"
    shown = table.copy()
    for column in ("difference", "sigma2_item", "sigma2_seed", "seed_spread", "mdd", "effect", "power_at_effect"):
        shown[column] = shown[column].map(lambda v: "n/a" if v is None or math.isnan(v) else f"{v:.4f}")
    for column in ("items_for_effect", "seeds_for_effect"):
        shown[column] = shown[column].map(lambda v: "not reachable" if v is None or v != v else str(int(v)))
    which = "the pilot's own |difference|" if effect is None else f"{effect:g}"
    notes = [
        f"mdd: the smallest difference the report's paired test (two-sided, alpha = {alpha:g}) detects with "
        f"power {target_power:g} at this run's items x seeds. For effect = {which}: the power at this size, the "
        "items needed at this run's seeds, the seeds needed at this run's items ('not reachable': item-to-item "
        "variation alone is too large, add items; or the pilot had one seed).",
        "Var(mean difference) = (sigma2_item + sigma2_seed / seeds) / items; power from the noncentral t with "
        "items - 1 degrees of freedom (reports/power.py; checked against simulated replications by "
        "bench/calibration.py).",
        "seed_spread: the seeds' mean differences spread this many times what item noise alone gives; well above "
        "1 means seeds differ as policies (training randomness), which the item-paired test does not cover: "
        "add seeds and read the aggregates' intervals over seeds.",
    ]
    return pipe_table(shown) + "\n\n" + "\n\n".join(notes) + "\n"
