"""Sample-size planning (reports/power.py, `spogw power`): hand values of the variance components,
the power function's limits against the normal formula, and the planner on a real run folder.
The end-to-end check that predicted power matches detection rates is tests/test_calibration.py."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spogw.harness.cli import main
from spogw.reports.power import (
    VarianceComponents,
    items_needed,
    minimum_detectable_difference,
    pair_differences,
    power,
    seeds_needed,
    standard_error,
    variance_components,
)

Z_80 = 1.959964 + 0.841621  # z_{0.975} + z_{0.8}: the normal approximation's multiplier


def test_variance_components_hand_computed() -> None:
    """Two seeds x three items. Grand mean 0.3, item means 0.2, 0.2, 0.5, seed means 0.3, 0.3.
    Residuals -0.1, 0.1, 0 / 0.1, -0.1, 0: MS_res = 0.04 / 2 = 0.02. MS_item = 2 * 0.06 / 2 = 0.06,
    so sigma2_item = (0.06 - 0.02) / 2 = 0.02. MS_seed = 0: no policy effect, F test p = 1."""
    parts = variance_components(np.array([[0.1, 0.3, 0.5], [0.3, 0.1, 0.5]]))
    assert parts.difference == pytest.approx(0.3)
    assert parts.sigma2_noise == pytest.approx(0.02)
    assert parts.sigma2_item == pytest.approx(0.02)
    assert (parts.items, parts.seeds) == (3, 2)
    assert parts.sigma2_policy == 0.0 and parts.policy_p == pytest.approx(1.0)
    one_seed = variance_components(np.array([[0.1, 0.3, 0.5]]))
    assert math.isnan(one_seed.sigma2_noise) and one_seed.sigma2_item == pytest.approx(0.04)
    one_item = variance_components(np.array([[0.1], [0.3]]))
    assert math.isnan(one_item.sigma2_item) and math.isnan(standard_error(one_item, 10, 2))
    assert items_needed(one_item, 0.1, 2) is None
    with pytest.raises(ValueError, match="seeds, items"):
        variance_components(np.zeros((0, 3)))


def test_a_seed_that_shifts_every_item_is_a_policy_effect_not_item_noise() -> None:
    """Four seeds whose policies differ by a shift of every item's difference (+-0.1), with small
    noise: the F test finds it, sigma2_policy holds it, and the per-item noise stays small."""
    rng = np.random.default_rng(0)
    items = rng.normal(0.0, 0.2, size=60)
    shifts = np.array([0.1, -0.1, 0.1, -0.1])
    data = items[None, :] + shifts[:, None] + rng.normal(0.0, 0.05, size=(4, 60))
    parts = variance_components(data)
    assert parts.policy_p < 1e-6 and parts.sigma2_policy == pytest.approx(0.01 * 4 / 3, rel=0.2)
    assert parts.sigma2_noise == pytest.approx(0.0025, rel=0.3)
    assert parts.sigma2_item == pytest.approx(0.04, rel=0.35)


def test_power_has_the_level_at_no_difference_and_the_normal_multiplier_for_many_items() -> None:
    assert power(0.0, 0.01, 50) == pytest.approx(0.05, abs=1e-9)
    assert power(0.0, 0.01, 50, alternative="greater") == pytest.approx(0.05, abs=1e-9)
    parts = VarianceComponents(0.0, 0.04, 0.02, 1000, 2)
    se = standard_error(parts, 1000, 2)
    assert se == pytest.approx(math.sqrt((0.04 + 0.01) / 1000))
    assert minimum_detectable_difference(parts, 1000, 2) / se == pytest.approx(Z_80, abs=0.01)
    one_sided = minimum_detectable_difference(parts, 1000, 2, alternative="greater") / se
    assert one_sided == pytest.approx(1.644854 + 0.841621, abs=0.01)
    assert minimum_detectable_difference(parts, 1000, 2, alternative="less") / se == pytest.approx(one_sided)
    # with few items the t distribution asks for more: the multiplier grows
    small = minimum_detectable_difference(parts, 10, 2) / standard_error(parts, 10, 2)
    assert small > Z_80 + 0.2
    # a finite population shrinks the item term only: all N items drawn leaves the noise term
    assert standard_error(parts, 1000, 2, population=1000) == pytest.approx(math.sqrt(0.01 / 1000))
    # a power target at or below the level cannot be planned
    assert math.isnan(minimum_detectable_difference(parts, 30, 2, alpha=0.05, target_power=0.03))


def test_power_stays_right_far_in_the_tail_where_scipy_returns_nan() -> None:
    """scipy's noncentral t gives NaN for the far lower tail from a shift of about 8: that tail is 0,
    and the upper tail alone is the power. df = 1, alpha = 0.01: the critical t is 127.3, and a
    shift of 50 rejects with probability 0.568 (a Monte Carlo of (Z + 50) / sqrt(chi2_1) with 2 million
    draws gives the same)."""
    powers = [power(shift, 1.0, 2, alpha=0.01) for shift in (30, 40, 45, 50, 60, 200)]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(powers)), powers
    assert powers[3] == pytest.approx(0.568, abs=0.01)


def test_items_and_seeds_needed_are_the_smallest_that_reach_the_power() -> None:
    parts = VarianceComponents(0.05, 0.03, 0.12, 40, 3)
    n = items_needed(parts, 0.05, seeds=3)
    assert n is not None
    assert power(0.05, standard_error(parts, n, 3), n) >= 0.8 > power(0.05, standard_error(parts, n - 1, 3), n - 1)
    normal = Z_80**2 * (0.03 + 0.12 / 3) / 0.05**2
    assert normal <= n <= normal + 3  # the t correction adds a couple of items
    s = seeds_needed(parts, 0.05, items=300)
    assert s is not None
    assert power(0.05, standard_error(parts, 300, s), 300) >= 0.8 > power(0.05, standard_error(parts, 300, s - 1), 300)
    # the item term alone is too large at 40 items: no number of seeds suffices
    assert seeds_needed(parts, 0.05, items=40) is None
    assert items_needed(parts, 0.0, seeds=3) is None


@settings(max_examples=60, deadline=None)
@given(st.floats(0.001, 0.3), st.floats(0.001, 0.3), st.integers(5, 400), st.floats(0.0, 0.2), st.floats(1e-4, 0.1))
def test_power_grows_with_the_difference_and_with_the_items(
    small: float, extra: float, items: int, sigma2_item: float, sigma2_noise: float
) -> None:
    parts = VarianceComponents(0.0, sigma2_item, sigma2_noise, items, 2)
    se = standard_error(parts, items, 2)
    assert power(small, se, items) <= power(small + extra, se, items) + 1e-12
    assert power(small, se, items) <= power(small, standard_error(parts, items + 20, 2), items + 20) + 1e-12


def test_pair_differences_use_common_seeds_and_items_at_the_final_iteration() -> None:
    rows = [
        ("m", 0, 1, "i1", 1.0), ("m", 0, 1, "i2", 0.5), ("m", 1, 1, "i1", 0.0), ("m", 1, 1, "i2", 1.0),
        ("m", 0, 0, "i1", 0.0),  # an earlier iteration: not the final one
        ("r", 0, 0, "i1", 0.5), ("r", 0, 0, "i2", 0.5), ("r", 1, 0, "i1", 0.5),  # seed 1 never scored i2
        ("r", 2, 0, "i1", 0.5),  # a seed the method did not run
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["method", "seed", "iteration", "item_id", "score"]).assign(benchmark="b")
    assert pair_differences(frame, "m", "r", "b").tolist() == [[0.5], [-0.5]]


STATIC = Path(__file__).parent / "data" / "static_two_seeds.yaml"
"""Two static methods (io, cot) x two seeds on 40 gsm_synth items, the SIMULATED executor."""


def test_spogw_power_plans_from_a_pilot_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real pilot (two static workflows, 2 seeds, 32 test items, SIMULATED executor): the command
    prints, for cot against the baseline io, the difference, the detectable difference at 32 items x
    2 seeds, and the items and seeds a 0.05 difference needs, as reports/power.py computes them."""
    from spogw.harness.scores import read_item_scores

    run_dir = tmp_path / "run"
    assert main(["run", str(STATIC), "--run-dir", str(run_dir), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["power", str(run_dir), "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    parts = variance_components(pair_differences(read_item_scores(run_dir), "cot", "io", "gsm_synth"))
    assert (parts.items, parts.seeds) == (32, 2)
    row = next(line for line in out.splitlines() if line.startswith("| gsm_synth | cot | io |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3]) == pytest.approx(parts.difference, abs=1e-3)
    assert float(cells[12]) == pytest.approx(minimum_detectable_difference(parts, 32, 2), rel=1e-3)
    assert float(cells[14]) == pytest.approx(power(0.05, standard_error(parts, 32, 2), 32), abs=1e-3)
    assert cells[15] == str(items_needed(parts, 0.05, 2))
    assert "noncentral t" in out and "SIMULATED executor" in out

    assert main(["power", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["power", str(run_dir), "--effect", "2"]) == 2
    assert "--effect 2.0: give a difference of scores between 0 and 1" in capsys.readouterr().err
    assert main(["power", str(run_dir), "--power", "0.03"]) == 2
    assert "need 0 < alpha < power < 1" in capsys.readouterr().err
    assert main(["power", str(run_dir)]) == 0
    assert "--effect D" in capsys.readouterr().out  # without an effect, no power for the pilot's own difference
