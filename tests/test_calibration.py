"""Null and power calibration of the report's paired test, end to end on the SIMULATED executor
(bench/calibration.py): real executions pooled once, then replications that draw items, seeds and
repeats, build a run's item frame and call reports.comparison.paired_table.

- A/A (cot against itself under two labels): rejects at alpha = 0.05 in 3-7% of replications.
- planted effect (cot_sc against cot, true difference known from the pool): the detection rate
  matches the power reports/power.py predicted before the replications, within 3 Monte Carlo errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_paired_test_holds_its_level_and_its_predicted_power(tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "calibration.py"), "--replications", "600", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=1500, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    numbers = json.loads(out.read_text())
    assert 0.03 <= numbers["aa_rate"] <= 0.07, numbers
    assert 0.2 < numbers["predicted_power"] < 0.95, "the planted effect should be neither trivial nor hopeless"
    assert abs(numbers["planted_rate"] - numbers["predicted_power"]) <= 3 * numbers["planted_mc_error"], numbers
