"""The study inputs rebuilt from a run's tables (group curation, diversity, cost) and the study
sections' statistics, on hand-computed cases; the store's migration to the transfer column."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spogw.harness.config import ConfigError, load_experiment, load_raw, validate
from spogw.harness.rollouts import Rollout
from spogw.harness.store import EvalRow, SQLiteStore
from spogw.methods.spogw import SPOGWConfig
from spogw.methods.units import grpo_unit, question_seed
from spogw.reports.costs import cost_table, cumulative_costs, iteration_costs
from spogw.reports.curation import curation_table, group_std_frame
from spogw.reports.data import read_eval_items
from spogw.reports.diversity import diversity_frame, diversity_table, entropy_bits
from spogw.reports.studies import transfer_differences

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "tests" / "data" / "runner_small.yaml"


def rollout_rows(
    scores: list[float | None], method: str = "spogw", iteration: int = 0, query: str = "q0"
) -> list[dict]:
    return [
        {
            "method": method,
            "seed": 0,
            "iteration": iteration,
            "query_id": query,
            "sample_idx": k,
            "benchmark": "gsm_synth",
            "structure": "Custom",
            "status": "ok" if score is not None else "infra_error",
            "score": score,
            "tokens": 5,
            "nll": 2.0,
            "executor_calls": 2,
            "executor_tokens": 100,
            "wall_s": 0.1,
        }
        for k, score in enumerate(scores)
    ]


# ----------------------------------------------------------------------------------------------
# Group curation


def trained_groups(
    scores_by_query: dict[str, list[float | None]], config: SPOGWConfig, iteration: int = 0
) -> pd.DataFrame:
    """The groups table the trainer writes for one iteration of these scores (units built by
    methods/steps.py, rows by harness/train.py): what the report reads."""
    from spogw.harness.train import IterationSummary, group_rows
    from spogw.methods.steps import build_units

    rollouts = [
        Rollout(
            "e",
            "spogw",
            0,
            iteration,
            query,
            k,
            "p",
            "c",
            (1,),
            (2, 3),
            (-0.1, -0.2),
            "ok" if s is not None else "infra_error",
            "",
            s,
            (s,),
            1,
            1,
            0.0,
        )
        for query, scores in scores_by_query.items()
        for k, s in enumerate(scores)
    ]
    units = build_units(rollouts, config, 0, iteration)
    summary = IterationSummary(iteration, 0.0, len(rollouts), units=units)
    return pd.DataFrame([dataclasses.asdict(row) for row in group_rows("spogw", 0, summary)])


def test_group_stds_by_hand_filter_then_sharpen() -> None:
    """m=4 scores [1, 1, 1, 0], n=3: C(4,3) = 4 groups; {0,1,2} has std 0, the other three
    [1, 1, 0] have std sqrt(2)/3. The filter (0.05) drops the first; sharpening t=1 keeps [1, 0]
    of each of the others: std 0.5. An infra_error sample never enters a group."""
    config = SPOGWConfig(num_samples=4, group_size=3, max_groups=10, min_group_std=0.05, sharpen_t=1)
    stds = group_std_frame(trained_groups({"q": [1.0, 1.0, 1.0, 0.0]}, config))
    built = sorted(stds[stds["stage"] == "built"]["std"])
    kept = sorted(stds[stds["stage"] == "kept"]["std"])
    assert built == pytest.approx([0.0, math.sqrt(2) / 3, math.sqrt(2) / 3, math.sqrt(2) / 3], abs=1e-6)
    assert kept == pytest.approx([0.5, 0.5, 0.5])
    table = curation_table(stds).set_index("method")
    assert table.loc["spogw", "groups_built"] == 4 and table.loc["spogw", "groups_kept"] == 3
    assert table.loc["spogw", "removed_fraction"] == pytest.approx(0.25)
    assert table.loc["spogw", "zero_std_fraction"] == pytest.approx(0.25)
    with_infra = trained_groups({"q": [1.0, 1.0, 1.0, 0.0, None]}, config)
    assert len(group_std_frame(with_infra)) == len(stds)
    kept_members = [json.loads(m) for m in with_infra[with_infra["stage"] == "kept"]["members"]]
    assert kept_members and all(4 not in members for members in kept_members)  # sample 4 was infra_error
    assert group_std_frame(pd.DataFrame()).empty  # a pairwise or static method has no groups


def test_the_report_reads_the_groups_the_trainer_built() -> None:
    """The stored rows are the trainer's own GroupUnits, group draw included (C(8,5) = 56 >
    max_groups 20), for several questions of one iteration."""
    rng = np.random.default_rng(3)
    config = SPOGWConfig(num_samples=8, group_size=5, max_groups=20, min_group_std=0.1, sharpen_t=2)
    scores = {query: rng.choice([0.0, 0.5, 1.0], size=8).tolist() for query in ["qa", "qb", "qc"]}
    stds = group_std_frame(trained_groups(scores, config, iteration=1))
    for index, (query, values) in enumerate(scores.items()):
        rollouts = [
            Rollout("e", "spogw", 0, 1, query, k, "p", "c", (1,), (2, 3), (-0.1, -0.2), "ok", "", s, (s,), 1, 1, 0.0)
            for k, s in enumerate(values)
        ]
        unit = grpo_unit(rollouts, config, question_seed(0, 1, index))
        assert unit is not None
        mine = stds[stds["query_id"] == query]
        assert sorted(mine[mine["stage"] == "built"]["std"]) == pytest.approx(sorted(unit.std_before.tolist()))
        assert sorted(mine[mine["stage"] == "kept"]["std"]) == pytest.approx(sorted(unit.std_after.tolist()))


# ----------------------------------------------------------------------------------------------
# Diversity


def test_entropy_bits_by_hand() -> None:
    assert entropy_bits(np.array([4])) == 0.0
    assert entropy_bits(np.array([2, 2])) == pytest.approx(1.0)
    assert entropy_bits(np.array([1, 1, 1, 1])) == pytest.approx(2.0)
    assert entropy_bits(np.array([2, 1, 0])) == pytest.approx(-(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3))
    assert entropy_bits(np.array([])) == 0.0


def test_diversity_frame_by_hand() -> None:
    """Structures A, A, B and one invalid ('') -> 2 distinct, entropy H(2/3, 1/3); token entropy =
    sum(nll) / sum(tokens) = (1 + 2 + 3 + 0) / (2 + 2 + 2 + 0) = 1 nat per token."""
    rows = rollout_rows([1.0, 0.0, 1.0, 0.0])
    for row, structure, nll, tokens in zip(rows, ["A", "A", "B", ""], [1.0, 2.0, 3.0, 0.0], [2, 2, 2, 0], strict=True):
        row.update(structure=structure, nll=nll, tokens=tokens)
    frame = diversity_frame(pd.DataFrame(rows))
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["distinct"] == 2 and row["samples"] == 4
    assert row["structure_entropy"] == pytest.approx(entropy_bits(np.array([2, 1])))
    assert row["token_entropy"] == pytest.approx(1.0)
    table = diversity_table(frame, resamples=200)
    assert table.loc[0, "distinct"] == 2 and table.loc[0, "questions"] == 1


# ----------------------------------------------------------------------------------------------
# Cost


def test_cumulative_cost_is_what_was_spent_before_each_policy() -> None:
    """Iteration 0 collected with 2 calls per workflow x 3 workflows, iteration 1 with 4 x 3: the
    policy of iteration k has cost the collections before k (0, 6, 18), never its own."""
    rows = rollout_rows([1.0, 0.0, 1.0], iteration=0) + rollout_rows([1.0, 0.0, 1.0], iteration=1)
    for row in rows[3:]:
        row["executor_calls"] = 4
    timing = pd.DataFrame(
        {"method": ["spogw"] * 2, "seed": [0, 0], "iteration": [0, 1], "collect_s": [1.0, 2.0], "train_s": [0.5, 0.5]}
    )
    costs = iteration_costs(pd.DataFrame(rows), timing)
    cumulative = cumulative_costs(costs, last_iteration=2).set_index("iteration")
    assert cumulative["executor_calls"].tolist() == [0.0, 6.0, 18.0]
    assert cumulative["generator_tokens"].tolist() == [0.0, 15.0, 30.0]
    assert cumulative["wall_s"].tolist() == pytest.approx([0.0, 1.5, 4.0])
    totals = cost_table(costs).set_index("method")
    assert totals.loc["spogw", "executor_calls"] == 18 and totals.loc["spogw", "wall_s"] == pytest.approx(4.0)


# ----------------------------------------------------------------------------------------------
# Executor transfer


def transfer_config() -> object:
    data = load_raw(SMALL)
    spec = data["methods"][0]
    data["methods"] = [
        {**spec, "label": "opt_x", "executor": {"profile": "coder"}},
        {**spec, "label": "opt_y", "executor": {"profile": "verifier"}},
    ]
    data["evaluation"]["transfer"] = {"x": {"profile": "coder"}, "y": {"profile": "verifier"}}
    data["stats"] = {"bootstrap_samples": 1000}
    return validate(data, "transfer test")


def test_transfer_differences_find_a_drop_and_not_a_null() -> None:
    """Item scores with a known structure: on executor y the generator optimized with x is 0.3
    worse than the one optimized with y; on executor x the two are equal. Only the first cell differs."""
    rng = np.random.default_rng(0)
    rows = []
    items = 40
    difficulty = {executor: rng.uniform(0.2, 0.6, size=items) for executor in ("sim:coder", "sim:verifier")}
    for method, trained in (("opt_x", "sim:coder"), ("opt_y", "sim:verifier")):
        for evaluated in ("sim:coder", "sim:verifier"):
            drop = 0.3 if (method, evaluated) == ("opt_x", "sim:verifier") else 0.0
            for seed in range(3):
                scores = np.clip(difficulty[evaluated] - drop + rng.normal(0, 0.02, items), 0, 1)
                rows += [
                    {
                        "method": method,
                        "seed": seed,
                        "benchmark": "gsm_synth",
                        "item_id": f"i{k}",
                        "score": v,
                        "trained_with": trained,
                        "evaluated_with": evaluated,
                    }
                    for k, v in enumerate(scores)
                ]
    table = transfer_differences(pd.DataFrame(rows), transfer_config()).set_index(["method", "evaluated_with"])
    assert len(table) == 2  # the two off-diagonal cells, one Holm family
    moved = table.loc[("opt_x", "sim:verifier")]
    assert moved["reference"] == "opt_y" and moved["significant"] and moved["ci_high"] < -0.25
    stayed = table.loc[("opt_y", "sim:coder")]
    assert not stayed["significant"] and stayed["ci_low"] < 0 < stayed["ci_high"]


# ----------------------------------------------------------------------------------------------
# Configuration and store


def test_per_method_executor_and_sampling_and_transfer_are_validated(tmp_path: Path) -> None:
    config = transfer_config()
    assert config.executor_for(config.methods[0]).profile == "coder"
    assert config.executor.profile == "medium"  # the experiment's executor is unchanged
    assert set(config.transfer_executors()) == {"x", "y"}
    data = load_raw(SMALL)
    data["methods"][0]["executor"] = {"profil": "weak"}
    with pytest.raises(ConfigError, match=r"methods\.0\.executor\.profil = 'weak': unknown field"):
        validate(data, "e.yaml")
    data["methods"][0]["executor"] = {}
    data["methods"][0]["sampling"] = {"temperature": -1}
    with pytest.raises(ConfigError, match=r"methods\.0\.sampling\.temperature = -1"):
        validate(data, "e.yaml")
    data["methods"][0]["sampling"] = {}
    data["stats"]["comparisons"] = [["spogw", "nope"]]
    with pytest.raises(ConfigError, match=r"stats\.comparisons\.0 \['spogw', 'nope'\]"):
        validate(data, "e.yaml")
    data["stats"]["comparisons"] = []
    data["study"] = {"kind": "transfer"}
    with pytest.raises(ConfigError, match=r"needs evaluation\.transfer"):
        validate(data, "e.yaml")
    data["study"] = {}
    data["evaluation"]["transfer"] = {"bad name": {"profile": "weak"}}
    with pytest.raises(ConfigError, match="transfer executor name 'bad name'"):
        validate(data, "e.yaml")


@pytest.mark.parametrize(
    "path",
    [
        "experiments/open_questions/q1_executor_transfer.yaml",
        "experiments/open_questions/q2_sharpening_low_variance.yaml",
        "experiments/open_questions/q3_kl_diversity.yaml",
        "experiments/ablation_spogw.yaml",
    ],
)
def test_study_files_declare_their_question_and_family(path: str) -> None:
    config = load_experiment(REPO / path)
    assert config.study.kind != "comparison" and config.study.question
    assert config.stats.comparisons or config.stats.baseline or config.study.kind == "transfer"
    assert config.executor.name == "sim" and "SIMULATED" in (REPO / path).read_text()


def test_store_migrates_eval_items_written_before_the_transfer_column(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.sqlite"
    old_columns = [c for c in EvalRow.__dataclass_fields__ if c not in ("transfer", "cost_usd", "answer")]
    with sqlite3.connect(path) as db:
        db.execute(
            f"CREATE TABLE eval_items ({', '.join(old_columns)}, "
            "PRIMARY KEY (method, seed, iteration, benchmark, item_id, repeat))"
        )
        db.execute(
            f"INSERT INTO eval_items VALUES ({', '.join('?' * len(old_columns))})",
            ("e", "spogw", 0, 1, "gsm_synth", "i0", 0, "code", "Custom", "ok", "", 1.0, 2, 10, 20, 0.5),
        )
        assert read_eval_items(db)["transfer"].tolist() == [""]  # a read-only report of an old folder
    with SQLiteStore(path) as store:
        (row,) = store.eval_rows()
        assert row.transfer == "" and row.score == 1.0 and row.answer is None  # later columns read NULL
        assert store.eval_done("spogw", 0, 1, "gsm_synth") == {"i0"}
        store.put_eval([EvalRow(**{**row.__dict__, "transfer": "weak", "score": 0.0})])  # same item, other executor
        assert len(store.eval_rows(transfer=None)) == 2 and store.eval_done("spogw", 0, 1, "gsm_synth", "weak") == {
            "i0"
        }
    with SQLiteStore(path) as store:  # opening again migrates nothing twice
        assert len(store.eval_rows(transfer=None)) == 2


def test_a_question_with_fewer_than_two_trainable_samples_has_no_group() -> None:
    config = SPOGWConfig(num_samples=2, group_size=2, min_group_std=0.0, sharpen_t=0)
    assert group_std_frame(trained_groups({"q": [1.0, None]}, config)).empty
    assert len(group_std_frame(trained_groups({"q": [1.0, 0.0]}, config))) == 2  # built + kept


def test_a_study_section_lists_only_the_arms_and_seeds_with_scores_and_names_the_missing() -> None:
    """The ablation declares 9 arms x seeds [0, 1, 2]; a run of `--methods spogw,no_kl --seeds 0`
    has scores for two arms and one seed. Its design table lists those two and the section names
    the arms and seeds that did not run."""
    from spogw.reports.studies import STUDIES, StudyData

    config = load_experiment(REPO / "experiments" / "ablation_spogw.yaml", ["stats.bootstrap_samples=100"])
    frame = pd.DataFrame(
        [
            {"method": method, "seed": 0, "iteration": 3, "benchmark": "gsm_synth", "item_id": f"i{k}", "score": 1.0}
            for method in ("spogw", "no_kl")
            for k in range(4)
        ]
    )
    section, _ = STUDIES["ablation"](StudyData(config, True, frame, frame.iloc[:0], pd.DataFrame()))
    design = [line for line in section.markdown.splitlines() if line.startswith("| ") and "| spogw |" in line]
    assert [line.split(" | ")[0] for line in design] == ["| spogw", "| no_kl"]  # label column: these two only
    assert "| dpo | dpo |" not in section.markdown and "| online | spogw |" not in section.markdown
    missing = (
        "arms without scores (not run): no_combinations, no_filter, no_sharpening, standard_kl, online, dpo, score_dpo"
    )
    assert missing in section.markdown and "seeds without scores (not run): [1, 2]" in section.markdown
