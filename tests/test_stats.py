"""Statistics of the reports against known cases: coverage by simulation, exact enumeration, hand
values, statsmodels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spogw.reports.stats import (
    holm,
    iqm,
    mcnemar_exact,
    mean_ci,
    optimality_gap,
    paired_comparison,
    probability_of_improvement,
    seed_mean_ci,
    stratified_bootstrap_ci,
    two_level_bootstrap_ci,
)


def test_bca_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    """200 simulated benchmarks of 40 item scores drawn from Beta(2, 5) (true mean 2/7)."""
    rng = np.random.default_rng(12)
    true_mean = 2 / 7
    hits = 0
    for k in range(200):
        sample = rng.beta(2, 5, size=40)
        ci = mean_ci(sample, covers="items", resamples=2_000, seed=k)
        hits += ci.low <= true_mean <= ci.high
    coverage = hits / 200
    print(f"BCa coverage over 200 simulated data sets: {coverage:.3f}")
    assert 0.92 <= coverage <= 0.98


def test_permutation_p_value_matches_exact_enumeration() -> None:
    method = np.array([0.9, 0.7, 0.8, 0.6, 0.75, 0.5, 0.95, 0.4])
    baseline = np.array([0.6, 0.65, 0.5, 0.62, 0.55, 0.52, 0.7, 0.45])
    diff = method - baseline
    observed = abs(diff.mean())
    # every assignment of labels within pairs = every sign pattern of the differences
    extreme = sum(
        abs((np.array(signs) * diff).mean()) >= observed - 1e-12 for signs in itertools.product([1, -1], repeat=8)
    )
    exact = extreme / 2**8
    result = paired_comparison(method, baseline)
    assert result.test == "paired permutation"
    assert result.p_value == pytest.approx(exact, abs=1e-12)
    assert result.difference == pytest.approx(diff.mean())
    assert result.low <= result.difference <= result.high


def test_binary_scores_use_mcnemar_exact() -> None:
    # 7 items only the method solves, 1 only the baseline solves, 2 both, 0 neither
    method = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=float)
    baseline = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1], dtype=float)
    # exact two-sided binomial on the 8 discordant pairs: 2 * P(Bin(8, 1/2) <= 1) = 2 * 9 / 256
    assert mcnemar_exact(method, baseline) == pytest.approx(18 / 256)
    assert paired_comparison(method, baseline).test == "McNemar exact"


def test_holm_hand_computed_and_as_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    reject, adjusted = holm(p, alpha=0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert reject == [True, False, False, True]
    assert adjusted == pytest.approx(list(multipletests(p, alpha=0.05, method="holm")[1]))
    for single in (0.0, 0.01, 0.05, 0.0500001, 0.7, 1.0):  # a family of one: answered without statsmodels
        expected = multipletests([single], alpha=0.05, method="holm")
        assert holm([single], alpha=0.05) == ([bool(expected[0][0])], [float(expected[1][0])])


def test_rliable_metrics_hand_values() -> None:
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # middle four of 1..8
    assert optimality_gap(np.array([0.2, 1.0, 0.5, 1.2])) == pytest.approx((0.8 + 0.0 + 0.5 + 0.0) / 4)
    # x > y in 4 of 9 pairs, one tie: (4 + 0.5) / 9
    x, y = np.array([[1.0], [2.0], [3.0]]), np.array([[0.0], [2.0], [5.0]])
    assert probability_of_improvement(x, y) == pytest.approx(4.5 / 9)
    # averaged over tasks: task 2 is a sure win
    x2, y2 = np.array([[1.0, 9.0], [2.0, 9.0], [3.0, 9.0]]), np.array([[0.0, 1.0], [2.0, 1.0], [5.0, 1.0]])
    assert probability_of_improvement(x2, y2) == pytest.approx((4.5 / 9 + 1.0) / 2)


def test_stratified_bootstrap_resamples_runs_within_tasks() -> None:
    scores = np.array([[0.2, 0.9], [0.4, 0.7], [0.6, 0.8]])
    point, low, high = stratified_bootstrap_ci([scores], lambda s: float(s.mean()), resamples=500)
    assert point == pytest.approx(scores.mean()) and low <= point <= high
    # a task's column only ever contains that task's values
    point, low, high = stratified_bootstrap_ci([scores], lambda s: float(s[:, 1].min()), resamples=300)
    assert 0.7 <= low <= high <= 0.9
    constant = np.full((4, 3), 0.5)
    assert stratified_bootstrap_ci([constant], iqm, resamples=50) == (0.5, 0.5, 0.5)


def test_seed_and_two_level_intervals() -> None:
    ci = seed_mean_ci([0.50, 0.52, 0.54])
    assert ci.mean == pytest.approx(0.52) and 0.50 <= ci.low <= ci.mean <= ci.high <= 0.54
    rng = np.random.default_rng(0)
    items = rng.uniform(size=50)
    same_seeds = np.vstack([items, items, items])
    spread_seeds = np.vstack([items - 0.1, items, items + 0.1])
    narrow = two_level_bootstrap_ci(same_seeds, resamples=2_000)
    wide = two_level_bootstrap_ci(spread_seeds, resamples=2_000)
    assert narrow.mean == pytest.approx(wide.mean)
    # seed-to-seed variation widens the interval beyond the items-only one
    assert (wide.high - wide.low) > (narrow.high - narrow.low)
    with pytest.raises(ValueError, match="seeds, items"):
        two_level_bootstrap_ci(np.ones(5))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=3, max_size=30))
def test_intervals_contain_their_point_estimate(values: list[float]) -> None:
    ci = mean_ci(values, covers="items", resamples=500)
    assert ci.low - 1e-9 <= ci.mean <= ci.high + 1e-9
    assert ci.low >= 0.0 - 1e-9 and ci.high <= 1.0 + 1e-9
    comparison = paired_comparison(values, values[::-1], resamples=500)
    assert 0.0 <= comparison.p_value <= 1.0
