"""Sample-size planning for the report's paired comparison: from a pilot run's per-item and
per-seed variation, the minimum detectable difference at the run's items x seeds, and for a given
difference (the smallest one of interest) the power, the items and the seeds it needs.

The test being planned is the report's (reports.comparison.paired_table): items are the units,
each item's score is averaged over the seeds (and repeats) that scored it, and the mean paired
difference is tested (paired permutation test; McNemar's exact test when every score is 0 or 1),
Holm-corrected over the family of comparisons. The pilot's (seeds, items) per-seed differences D
are split by a two-way analysis of variance without replication, D[s, i] = mu + a_s + b_i + e_si:

- ``sigma2_noise``: Var(e), one seed's item difference around its item and seed effects
  (execution noise at the run's repeats): the residual mean square (needs >= 2 seeds, >= 2 items);
- ``sigma2_item``: Var(b), the true item differences' spread: (MS_item - MS_res) / seeds, clipped
  at 0 (flagged when clipped);
- ``sigma2_policy``: Var(a), a seed's effect on every item at once (the seeds differ as policies,
  i.e. training randomness): (MS_seed - MS_res) / items, with the F test of MS_seed / MS_res.

The item-paired test's variance, for n items and s seeds, is

    Var(mean difference) = (sigma2_item * (1 - n / N) + sigma2_noise / s) / n

(``N``: a finite pool the items are drawn from, as in the calibration; None for a benchmark that
stands for an unlimited population). sigma2_policy / s is left out because the test leaves it out:
it treats the seeds' policies as fixed, so a significant policy effect means the test speaks about
these seeds' policies only. Power uses the noncentral t distribution with n - 1 degrees of freedom
(Cohen 1988, Statistical Power Analysis for the Behavioral Sciences, ch. 2), planned at Holm's
first step alpha / K over the K comparisons of the family (conservative: later steps test at larger
levels). bench/calibration.py checks predicted power against detection rates in replications.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

MOST_ITEMS = 100_000
MOST_SEEDS = 100


@dataclass(frozen=True)
class VarianceComponents:
    """What a pilot tells about one paired comparison (method - reference) on one benchmark."""

    difference: float
    """The pilot's mean paired difference (method - reference) over items and seeds."""
    sigma2_item: float
    """Variance across items of the true item difference (NaN from one item)."""
    sigma2_noise: float
    """Variance of one seed's item difference around its item and seed effects (NaN from one seed:
    then sigma2_item holds the whole spread across items, noise included)."""
    items: int
    seeds: int
    sigma2_policy: float = math.nan
    """Variance of a seed's effect on every item (NaN from one seed)."""
    policy_p: float = math.nan
    """F test p-value of the seed effect (NaN from one seed)."""
    item_clipped: bool = False
    """sigma2_item was estimated below 0 and set to 0 (few seeds or items: read it as uncertain)."""


def variance_components(differences: np.ndarray) -> VarianceComponents:
    """Estimate the components from a (seeds, items) array of per-seed item differences (each item's
    score, the mean over its repeats, of the method minus the reference's; items every seed scored).
    Raises ValueError for an empty array."""
    from scipy import stats

    data = np.asarray(differences, dtype=float)
    if data.ndim != 2 or 0 in data.shape:
        raise ValueError(f"variance_components needs a (seeds, items) array, got shape {data.shape}")
    seeds, items = data.shape
    grand = float(data.mean())
    item_means, seed_means = data.mean(axis=0), data.mean(axis=1)
    if items < 2:
        return VarianceComponents(grand, math.nan, math.nan, items, seeds)
    ms_item = seeds * float(((item_means - grand) ** 2).sum()) / (items - 1)
    if seeds < 2:
        return VarianceComponents(grand, ms_item, math.nan, items, seeds)
    residual = data - item_means[None, :] - seed_means[:, None] + grand
    df_res = (seeds - 1) * (items - 1)
    ms_res = float((residual**2).sum()) / df_res
    ms_seed = items * float(((seed_means - grand) ** 2).sum()) / (seeds - 1)
    raw_item = (ms_item - ms_res) / seeds
    policy_p = float(stats.f.sf(ms_seed / ms_res, seeds - 1, df_res)) if ms_res > 0 else math.nan
    return VarianceComponents(
        grand,
        max(0.0, raw_item),
        ms_res,
        items,
        seeds,
        sigma2_policy=max(0.0, (ms_seed - ms_res) / items),
        policy_p=policy_p,
        item_clipped=raw_item < 0,
    )


def standard_error(components: VarianceComponents, items: int, seeds: int, population: int | None = None) -> float:
    """sd of the test's mean difference at ``items`` x ``seeds`` (module docstring's formula); NaN
    when the pilot had one item. From a one-seed pilot the split is unknown: the pilot's whole
    spread across items is used, at any number of seeds."""
    if math.isnan(components.sigma2_item):
        return math.nan
    noise = 0.0 if math.isnan(components.sigma2_noise) else components.sigma2_noise / seeds
    fpc = 1.0 - items / population if population else 1.0  # a finite pool of items: only their term
    return math.sqrt(max(0.0, (components.sigma2_item * fpc + noise) / items))


def power(
    delta: float,
    se: float,
    items: int,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    test_se: float | None = None,
) -> float:
    """P(the paired test at ``alpha`` rejects) when the true mean difference is ``delta`` and the
    estimate's sd is ``se``, over ``items`` pairs: noncentral t with items - 1 degrees of freedom.
    ``alternative``: two-sided, greater (delta > 0 sought) or less. ``test_se``: the sd the test's
    own variance estimate stands for when it differs from ``se`` (items drawn from a finite pool:
    the test does not know the pool, so its critical value scales by test_se / se)."""
    from scipy import stats

    if items < 2 or math.isnan(se):
        return math.nan
    df = items - 1
    one_sided = alternative in ("greater", "less")
    critical = float(stats.t.ppf(1 - (alpha if one_sided else alpha / 2), df))
    if se == 0:
        return (
            1.0
            if (delta > 0 if alternative == "greater" else delta < 0 if alternative == "less" else delta != 0)
            else alpha
        )
    critical *= (test_se / se) if test_se else 1.0
    shift = delta / se
    if alternative == "greater":
        return _upper(critical, df, shift)
    if alternative == "less":
        return _upper(critical, df, -shift)
    return min(1.0, _upper(critical, df, abs(shift)) + _upper(critical, df, -abs(shift)))


def _upper(critical: float, df: int, shift: float) -> float:
    """P(T > critical) for T ~ nct(df, shift). scipy's nct returns NaN far in a tail: there the
    probability is 0 (shift far below) or 1 (far above)."""
    from scipy import stats

    value = float(stats.nct.sf(critical, df, shift))
    if math.isfinite(value):
        return value
    return 1.0 if shift > critical else 0.0


def _power_at(
    components: VarianceComponents, delta: float, items: int, seeds: int, alpha: float, alternative: str
) -> float:
    """The power for ``delta`` at ``items`` x ``seeds``, with the pilot's components."""
    return power(delta, standard_error(components, items, seeds), items, alpha, alternative)


def minimum_detectable_difference(
    components: VarianceComponents,
    items: int,
    seeds: int,
    alpha: float = 0.05,
    target_power: float = 0.8,
    alternative: str = "two-sided",
) -> float:
    """The smallest difference (in the direction of ``alternative``) the test detects with
    ``target_power`` at ``items`` x ``seeds``; NaN when not computable (one item, or a power target
    at or below alpha, or one the test cannot reach)."""
    from scipy.optimize import brentq

    se = standard_error(components, items, seeds)
    if items < 2 or math.isnan(se) or target_power <= alpha:
        return math.nan
    if se == 0:
        return 0.0
    sign = -1.0 if alternative == "less" else 1.0

    def gap(d: float) -> float:
        return power(sign * d, se, items, alpha, alternative) - target_power

    high = 100.0 * se
    if gap(high) < 0:
        return math.nan
    return float(brentq(gap, 0.0, high))


def items_needed(
    components: VarianceComponents,
    delta: float,
    seeds: int,
    alpha: float = 0.05,
    target_power: float = 0.8,
    alternative: str = "two-sided",
) -> int | None:
    """The fewest items at which a true difference ``delta`` is detected with ``target_power`` at
    ``seeds`` seeds; None when MOST_ITEMS do not suffice or it is not computable (delta 0, one item)."""

    def reaches(items: int) -> bool:
        return _power_at(components, delta, items, seeds, alpha, alternative) >= target_power

    if delta == 0 or math.isnan(components.sigma2_item) or not reaches(MOST_ITEMS):
        return None
    low, high = 2, MOST_ITEMS
    while low < high:
        middle = (low + high) // 2
        if reaches(middle):
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
    alternative: str = "two-sided",
) -> int | None:
    """The fewest seeds at which ``delta`` is detected with ``target_power`` at ``items`` items; None
    when no number of seeds up to MOST_SEEDS suffices (the item term alone is too large: more items
    are needed) or the pilot had one seed (item and noise terms cannot be told apart)."""
    if delta == 0 or math.isnan(components.sigma2_noise) or math.isnan(components.sigma2_item):
        return None
    for seeds in range(1, MOST_SEEDS + 1):
        if _power_at(components, delta, items, seeds, alpha, alternative) >= target_power:
            return seeds
    return None


def pair_differences(frame: pd.DataFrame, method: str, reference: str, benchmark: str) -> np.ndarray:
    """(seeds, items) per-seed item differences method - reference at each one's final iteration
    (taken over the whole frame, as the report's paired test does), over the seeds both ran and the
    items every one of those seeds scored for both (an item score frame, harness.scores)."""
    from spogw.harness.scores import final_rows

    final = final_rows(frame)
    final = final[final["benchmark"] == benchmark]
    grids = [
        final[final["method"] == label].pivot_table(index="seed", columns="item_id", values="score", aggfunc="mean")
        for label in (method, reference)
    ]
    seeds = grids[0].index.intersection(grids[1].index)
    items = grids[0].columns.intersection(grids[1].columns)
    both = (grids[0].loc[seeds, items] - grids[1].loc[seeds, items]).dropna(axis=1)
    return both.to_numpy()


def _binary(final: pd.DataFrame, method: str, reference: str, benchmark: str) -> bool:
    """Whether the report's paired test of this pair uses McNemar (``final``: final-iteration rows)."""
    from spogw.reports.stats import binary_scores

    part = final[(final["benchmark"] == benchmark) & final["method"].isin([method, reference])]
    per_item = part.groupby(["method", "item_id"])["score"].mean()
    return bool(len(per_item)) and binary_scores(per_item.to_numpy())


def planning_table(
    frame: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    effect: float | None = None,
    alpha: float = 0.05,
    target_power: float = 0.8,
    alternative: str = "two-sided",
) -> pd.DataFrame:
    """One row per (benchmark, pair) with scored items in common: the pilot's difference and variance
    components, and the minimum detectable difference (``mdd``) at its items x seeds, planned at
    alpha / K over the K rows (Holm's first step). With ``effect`` (the smallest difference of
    interest, in the direction of ``alternative``): the power at the pilot's size, the items needed
    at its seeds and the seeds needed at its items."""
    import pandas as pd

    from spogw.harness.scores import final_rows

    final = final_rows(frame)  # once: pair_differences' own final_rows of it changes nothing
    found = []
    for benchmark in sorted(final["benchmark"].unique()):
        for method, reference in pairs:
            differences = pair_differences(final, method, reference, benchmark)
            if differences.size:
                found.append((benchmark, method, reference, variance_components(differences)))
    level = alpha / max(1, len(found))
    delta = None if effect is None else (-effect if alternative == "less" else effect)
    rows = []
    for benchmark, method, reference, parts in found:
        row = {
            "benchmark": benchmark,
            "method": method,
            "reference": reference,
            "difference": parts.difference,
            "items": parts.items,
            "seeds": parts.seeds,
            "sigma2_item": parts.sigma2_item,
            "sigma2_noise": parts.sigma2_noise,
            "sigma2_policy": parts.sigma2_policy,
            "policy_p": parts.policy_p,
            "notes": _notes(parts, _binary(final, method, reference, benchmark)),
            "alpha_planned": level,
            "mdd": minimum_detectable_difference(parts, parts.items, parts.seeds, level, target_power, alternative),
        }
        if delta is not None:
            se = standard_error(parts, parts.items, parts.seeds)
            row |= {
                "effect": delta,
                "power_at_effect": power(delta, se, parts.items, level, alternative),
                "items_for_effect": items_needed(parts, delta, parts.seeds, level, target_power, alternative),
                "seeds_for_effect": seeds_needed(parts, delta, parts.items, level, target_power, alternative),
            }
        rows.append(row)
    return pd.DataFrame(rows)


def _notes(parts: VarianceComponents, binary: bool) -> str:
    notes = []
    if parts.seeds < 2:
        notes.append("1 seed: item and noise terms not separated")
    if parts.items < 2:
        notes.append("1 item: no spread across items")
    if parts.item_clipped:
        notes.append("sigma2_item estimated below 0, set to 0")
    if parts.policy_p < 0.05:
        notes.append("seeds differ as policies (F test p < 0.05)")
    if binary:
        notes.append("0/1 scores: McNemar, less power than planned")
    return "; ".join(notes)


def planning_markdown(
    table: pd.DataFrame, alpha: float, target_power: float, effect: float | None, alternative: str = "two-sided"
) -> str:
    """The planning table as the report and `spogw power` print it, with how to read it."""
    from spogw.reports.sections import pipe_table

    if table.empty:
        return "No paired comparison with scored items in common: nothing to plan from.\n"
    shown = table.copy()
    numbers = ("difference", "sigma2_item", "sigma2_noise", "sigma2_policy", "policy_p", "alpha_planned", "mdd")
    for column in (*numbers, "effect", "power_at_effect"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "n/a" if v is None or math.isnan(v) else f"{v:.4g}")
    for column in ("items_for_effect", "seeds_for_effect"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "not reachable" if v is None or v != v else str(int(v)))
    notes = [
        f"mdd: the smallest difference ({alternative}) the report's paired test detects with power "
        f"{target_power:g} at this run's items x seeds, planned at alpha_planned = {alpha:g} / {len(table)} (Holm's "
        "first step over the comparisons; conservative). Var(mean difference) = (sigma2_item + sigma2_noise / "
        "seeds) / items; power from the noncentral t with items - 1 degrees of freedom (reports/power.py; "
        "calibrated by bench/calibration.py, docs/reports.md).",
        "sigma2_policy and policy_p: how much the seeds differ as policies (training randomness) and the F "
        "test of it. The item-paired test treats the seeds' policies as fixed; when they differ, add seeds and "
        "read the aggregates' intervals over seeds.",
    ]
    if effect is None:
        notes.append(
            "For the power, items and seeds a given difference needs, run `spogw power RUN_DIR --effect D` with "
            "D the smallest difference that matters to you (planning from the pilot's own difference would only "
            "restate its p-value)."
        )
    else:
        notes.append(
            f"For effect = {effect:g}: the power at this run's size, the items needed at its seeds and the seeds "
            f"needed at its items ('not reachable': more than {MOST_ITEMS:,} items, or more than {MOST_SEEDS} seeds "
            "because the item term alone is too large, or a one-seed pilot)."
        )
    return pipe_table(shown) + "\n\n" + "\n\n".join(notes) + "\n"
