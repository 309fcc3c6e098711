"""Oracle regret of simulated runs (reports/oracle.py): hand values, the structure a method chose
per kind, and the section in a real simulated run's report."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from spogw.harness.workflows.grammar import Structure, all_structures, render
from spogw.reports.oracle import Reference, choices_table, grammar_signature, regret_table


def reference(per_item: dict[str, tuple[float, float]], kinds: dict[str, str]) -> Reference:
    return Reference(
        benchmark="bench",
        domain="math",
        profile="medium",
        per_item=per_item,
        kinds=kinds,
        single_choice="Custom[cot]x3>ScEnsemble",
        class_choice={"large_numbers": "Custom[plain]x1+Programmer", "small_numbers": "Custom[cot]x3>ScEnsemble"},
    )


def frame(scores: dict[str, list[float]], iteration: int = 2) -> pd.DataFrame:
    """Item-score rows of one method: item -> its score per seed."""
    rows = [
        {"method": "m", "seed": s, "iteration": iteration, "benchmark": "bench", "item_id": item, "score": v}
        for item, values in scores.items()
        for s, v in enumerate(values)
    ]
    rows += [{**row, "iteration": 0, "score": 0.0} for row in rows]  # an earlier iteration, ignored
    return pd.DataFrame(rows)


def test_recovered_fraction_is_the_share_of_the_oracle_gain_over_the_best_static_workflow() -> None:
    # static 0.5 and oracle 1.0 on every item; the method scores 0.75 on average: half the headroom
    per_item = {f"i{k}": (0.5, 1.0) for k in range(8)}
    method = {f"i{k}": [1.0, 0.5] if k % 2 else [0.5, 0.5] for k in range(8)}  # item means 0.75 / 0.5
    table = regret_table(frame(method), {"bench": reference(per_item, dict.fromkeys(per_item, "small_numbers"))})
    row = table.iloc[0]
    assert row["items"] == 8
    assert row["score"] == pytest.approx(0.625)
    assert (row["best_static"], row["class_oracle"]) == (0.5, 1.0)
    assert row["recovered"] == pytest.approx(0.25)
    assert row["recovered_low"] <= 0.25 <= row["recovered_high"]
    assert row["recovered_low"] >= 0.0  # the method never scores below the static workflow here


def test_no_headroom_gives_no_fraction_rather_than_a_division_by_zero() -> None:
    per_item = {f"i{k}": (0.6, 0.6) for k in range(6)}
    references = {"bench": reference(per_item, dict.fromkeys(per_item, "a"))}
    table = regret_table(frame({i: [0.7] for i in per_item}), references)
    assert math.isnan(table.iloc[0]["recovered"]) and math.isnan(table.iloc[0]["recovered_low"])


def test_a_grammar_workflow_is_named_by_its_signature_and_other_code_is_marked() -> None:
    for structure in all_structures("math")[:10]:
        assert grammar_signature(render(structure), "math") == structure.signature()
    foreign = render(Structure("math", "Custom", 1, "cot")).replace("Solve the following", "Please solve the")
    assert grammar_signature(foreign, "math") == "Custom (outside the grammar)"
    assert grammar_signature(None, "math") == ""


def test_the_structure_written_most_per_kind_is_set_against_the_oracles() -> None:
    pot = render(Structure("math", "Custom", 1, "plain", programmer=True))
    cot_sc = render(Structure("math", "Custom", 3, "cot", ensemble=True))
    kinds = {"a": "large_numbers", "b": "large_numbers", "c": "small_numbers", "d": "small_numbers"}
    rows = [
        {"method": "m", "iteration": 1, "benchmark": "bench", "item_id": item, "workflow_code": code, "transfer": ""}
        for item, code in (("a", pot), ("b", pot), ("c", pot), ("d", cot_sc), ("d", cot_sc))
    ]
    rows.append({**rows[0], "iteration": 0, "workflow_code": cot_sc})  # iteration 0 is not the final one
    table = choices_table(pd.DataFrame(rows), {"bench": reference(dict.fromkeys(kinds, (0.0, 1.0)), kinds)})
    large = table[table["kind"] == "large_numbers"].iloc[0]
    small = table[table["kind"] == "small_numbers"].iloc[0]
    assert (large["most_written"], large["share"]) == ("`Custom[plain]x1+Programmer`", 1.0)
    assert bool(large["matches"])
    assert small["most_written"] == "`Custom[cot]x3>ScEnsemble`" and small["share"] == pytest.approx(2 / 3)


def test_a_simulated_run_report_has_the_oracle_regret_section(tmp_path: Path, spogw_cache: Path) -> None:
    """End to end on two static baselines (CoT-SC and program-of-thought): the section is there with a
    row per method, the oracle's per-kind choices, the structure each wrote; the oracle's scores are
    cached, and a rebuilt report reads the cache instead of scoring again."""
    from spogw.harness.cli import main

    run_dir = tmp_path / "run"
    experiment = Path(__file__).parent / "data" / "static_oracle.yaml"
    assert main(["run", str(experiment), "--run-dir", str(run_dir), "--quiet"]) == 0
    text = (run_dir / "report.md").read_text()
    assert "## Oracle regret (SIMULATED)" in text
    section = text.split("## Oracle regret (SIMULATED)")[1].split("\n## ")[0]
    assert "| cot_sc | gsm_synth |" in section and "| pot | gsm_synth |" in section
    assert "large_numbers" in section and "small_numbers" in section
    assert "`Custom[plain]x1+Programmer`" in section  # what the pot baseline wrote on every item
    cached = sorted((spogw_cache / "oracle").glob("gsm_synth-medium-*.json"))
    assert cached
    stamps = [path.stat().st_mtime_ns for path in cached]
    assert main(["report", str(run_dir)]) == 0
    assert [path.stat().st_mtime_ns for path in cached] == stamps
