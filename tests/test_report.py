"""Comparison tables and the report on synthetic per-item frames with known answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spogw.harness.scores import read_item_scores
from spogw.harness.store import EvalRow, SQLiteStore
from spogw.reports.comparison import aggregate_table, comparison_pairs, final_rows, paired_table, score_table
from spogw.reports.tables import latex_table, markdown_table


def synthetic_frame(effects: dict[str, float], items: int = 30, seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    """item scores in [0, 1]: item difficulty + method effect + seed noise, two benchmarks."""
    rng = np.random.default_rng(seed)
    rows = []
    for benchmark in ("bench_a", "bench_b"):
        difficulty = rng.uniform(0.2, 0.6, size=items)
        for method, effect in effects.items():
            iteration = 0 if method == "base" else 2
            for s in range(seeds):
                noise = rng.normal(0, 0.02, size=items)
                scores = np.clip(difficulty + effect + noise, 0, 1)
                rows += [
                    {
                        "method": method,
                        "seed": s,
                        "iteration": iteration,
                        "benchmark": benchmark,
                        "item_id": f"i{k}",
                        "score": v,
                    }
                    for k, v in enumerate(scores)
                ]
                if iteration:  # an earlier iteration that the final tables must ignore
                    rows += [
                        {
                            "method": method,
                            "seed": s,
                            "iteration": 0,
                            "benchmark": benchmark,
                            "item_id": f"i{k}",
                            "score": 0.0,
                        }
                        for k in range(items)
                    ]
    return pd.DataFrame(rows)


def test_final_rows_keep_each_methods_last_iteration() -> None:
    frame = synthetic_frame({"base": 0.0, "better": 0.2})
    final = final_rows(frame)
    assert set(final[final["method"] == "better"]["iteration"]) == {2}
    assert set(final[final["method"] == "base"]["iteration"]) == {0}


def test_paired_table_finds_a_real_effect_and_not_a_null_one() -> None:
    frame = synthetic_frame({"base": 0.0, "better": 0.2, "same": 0.0})
    paired = paired_table(frame, comparison_pairs(frame["method"].unique(), "base"), alpha=0.05, resamples=2_000)
    assert len(paired) == 4  # 2 methods x 2 benchmarks: one Holm family
    better = paired[paired["method"] == "better"]
    same = paired[paired["method"] == "same"]
    assert better["significant"].all() and (better["difference"] > 0.15).all()
    assert (better["ci_low"] > 0).all()
    assert not same["significant"].any() and (same["ci_low"] < 0).all() and (same["ci_high"] > 0).all()
    assert (paired["p_holm"] >= paired["p_value"]).all()
    with pytest.raises(ValueError, match=r"compared methods \['missing'\] are not methods of this run"):
        paired_table(frame, [("better", "missing")])


def test_score_and_aggregate_tables() -> None:
    frame = synthetic_frame({"base": 0.0, "better": 0.2})
    scores = score_table(frame, resamples=1_000)
    assert set(scores["seeds"]) == {3} and set(scores["items"]) == {30}
    assert (scores["ci_low"] <= scores["score"]).all() and (scores["score"] <= scores["ci_high"]).all()
    aggregates = aggregate_table(frame, "base", resamples=300).set_index("method")
    assert aggregates.loc["better", "p_improve"] == pytest.approx(1.0)
    assert aggregates.loc["better", "iqm"] > aggregates.loc["base", "iqm"]
    assert aggregates.loc["better", "optimality_gap"] < aggregates.loc["base", "optimality_gap"]


def test_tables_mark_the_best_and_the_significant_and_say_what_the_executor_is() -> None:
    frame = synthetic_frame({"base": 0.0, "better": 0.2, "same": 0.0})
    scores = score_table(frame, resamples=1_000)
    paired = paired_table(frame, [("better", "base"), ("same", "base")], resamples=2_000)
    md = markdown_table(scores, paired, "sim:medium", "SIMULATED executor: simulator numbers.", "base", 0.05)
    better_line = next(line for line in md.splitlines() if line.startswith("| better"))
    assert better_line.count("**") == 4 and better_line.count("\u2020") == 2  # bold in both columns, 2 daggers
    assert "| base (baseline) |" in md and "SIMULATED" in md and "Executor: sim:medium" in md
    same_line = next(line for line in md.splitlines() if line.startswith("| same"))
    assert "\u2020" not in same_line and "**" not in same_line
    tex = latex_table(scores, paired, "openai:gpt-4o-mini", "", "base", 0.05)
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "bench\\_a" in tex and "\\textbf{" in tex and "$^{\\dagger}$" in tex and "SIMULATED" not in tex


# ----------------------------------------------------------------------------------------------
# What is simulated, said once


def _mixed_experiment(url: str) -> dict:  # type: ignore[type-arg]
    return {
        "version": 1,
        "name": "mixed",
        "benchmarks": [{"name": "gsm_synth", "size": 20, "test_limit": 3}],
        "executor": {"name": "openai", "profile": None, "model": "stub", "base_url": url, "cache": False,
                     "max_retries": 1, "call_timeout_s": 5},
        "methods": [
            {"name": "static", "label": "io_llm", "overrides": {"workflow": "io"}},
            {"name": "static", "label": "cot_sim", "overrides": {"workflow": "cot"},
             "executor": {"name": "sim", "profile": "medium"}},
        ],
        "seeds": [0],
        "iterations": 0,
        "evaluation": {"repeats": 1},
        "stats": {"bootstrap_samples": 200},
    }  # fmt: skip


def test_simulation_is_decided_once_from_the_resolved_experiment() -> None:
    from spogw.harness.config import validate

    config = validate(_mixed_experiment("http://127.0.0.1:9/v1"), "mixed.yaml")
    simulation = config.simulation()
    assert simulation.kind == "mixed" and simulation.tag == "mixed" and simulation.simulated == ["cot_sim"]
    assert "cot_sim" in simulation.statement() and "Partly SIMULATED" in simulation.statement()
    data = _mixed_experiment("http://127.0.0.1:9/v1")
    data["methods"] = data["methods"][:1]
    data["evaluation"]["transfer"] = {"simulated": {"name": "sim", "profile": "weak"}}
    assert validate(data, "t.yaml").simulation().simulated == ["transfer simulated"]
    data["executor"] = {"name": "sim"}
    data["evaluation"]["transfer"] = {}
    everything = validate(data, "t.yaml").simulation()
    assert everything.kind == "all" and everything.statement().startswith("SIMULATED executor")


def test_a_mixed_sim_and_llm_run_is_labelled_row_by_row(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Base executor an OpenAI-compatible server, one method overridden to the simulator: the MLflow
    tags, report.md, report.html and results.tex say which rows are simulated (they used to say
    the run was not simulated at all)."""
    import asyncio

    import yaml
    from mlflow.tracking import MlflowClient

    from spogw.harness.cli import main
    from spogw.harness.executors.stub_server import StubServer

    async def go() -> int:
        async with StubServer(seed=1) as server:
            path = tmp_path / "mixed.yaml"
            path.write_text(yaml.safe_dump(_mixed_experiment(server.url)))
            return await asyncio.to_thread(main, ["run", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"])

    assert asyncio.run(go()) == 0
    run_dir = tmp_path / "run"
    for name, label in (("report.md", "cot_sim"), ("report.html", "cot_sim"), ("results.tex", "cot\\_sim")):
        text = (run_dir / name).read_text()
        assert "Partly SIMULATED" in text and f"results of {label} come from the simulated executor" in text, name
        assert "SIMULATED executor: these are" not in text, name
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mixed").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["simulated"] == "mixed"
    children = {r.data.tags["method"]: r.data.tags["simulated"] for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert children == {"io_llm": "false", "cot_sim": "true"}


# ----------------------------------------------------------------------------------------------
# One test score: the macro average over benchmarks, the same number everywhere


SMALL_EXPERIMENT = Path(__file__).resolve().parent / "data" / "runner_small.yaml"


def eval_rows(method: str, seed: int, iteration: int, scores: dict[str, list[float]]) -> list[EvalRow]:
    """One repeat per item of each benchmark, with the given item scores."""
    fixed = {"repeat": 0, "workflow_code": "code", "structure": "Custom", "status": "ok", "reason": "", "calls": 2}
    costs = {"prompt_tokens": 10, "completion_tokens": 5, "wall_s": 0.1}
    return [
        EvalRow("e", method, seed, iteration, benchmark, f"{benchmark}-{k}", score=score, **fixed, **costs)
        for benchmark, values in scores.items()
        for k, score in enumerate(values)
    ]


def test_every_place_gives_the_same_test_score_for_benchmarks_of_different_sizes(tmp_path: Path) -> None:
    """A 2-item and a 6-item benchmark, two seeds: seed 0 scores (1, 1) and (0, 0, 0, 0, 0, 1), seed 1
    (1, 0) and (1, 1, 0, 0, 0, 0). Macro average: seed 0 (1 + 1/6) / 2 = 7/12, seed 1 (1/2 + 1/3) / 2
    = 5/12, over seeds 1/2 (and items averaged over seeds first: (3/4 + 1/4) / 2 = 1/2). Pooling the
    16 items would give 6/16 = 0.375. MLflow's test_score, the aggregates' mean, the cost figure,
    the sweep objective and the final MLflow metric all give 1/2."""
    from spogw.harness.scores import iteration_metrics, read_item_scores
    from spogw.harness.sweeps.config import ObjectiveConfig
    from spogw.harness.sweeps.objective import objective_value
    from spogw.reports.coverage import Cell, Coverage
    from spogw.reports.plots import cost_points
    from spogw.reports.report import final_metrics

    seeds = {
        0: {"small": [1.0, 1.0], "large": [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]},
        1: {"small": [1.0, 0.0], "large": [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]},
    }
    with SQLiteStore(tmp_path / "rollouts.sqlite") as store:
        for seed, scores in seeds.items():
            store.put_eval(eval_rows("spogw", seed, 2, scores))
        logged = [iteration_metrics(store.eval_rows("spogw", seed, 2))["test_score"] for seed in seeds]
    assert logged == pytest.approx([7 / 12, 5 / 12])  # per seed, as the runner logs each evaluation
    frame = read_item_scores(tmp_path)
    cumulative = pd.DataFrame({"method": ["spogw"], "seed": [0], "iteration": [2], "executor_calls": [10.0]})
    _, cost_figure = cost_points(frame, cumulative, "executor_calls")
    done = Coverage(("spogw",), (0, 1), 2, tuple(Cell("spogw", s, 2, False, 2, True) for s in seeds))
    everywhere = {
        "mlflow test_score, mean over seeds": float(np.mean(logged)),
        "aggregates mean": float(aggregate_table(frame, None, resamples=50).set_index("method").loc["spogw", "mean"]),
        "cost figure": float(cost_figure.loc[("spogw", 2)]),
        "sweep objective": objective_value(tmp_path, ObjectiveConfig(method="spogw")),
        "final MLflow metric": final_metrics(frame, done)["final.spogw.test_score"],
    }
    assert everywhere == pytest.approx(dict.fromkeys(everywhere, 0.5)), everywhere


def test_seeds_that_scored_different_items_give_one_score_everywhere(tmp_path: Path) -> None:
    """Seed 1's item b-3 ended in infra_error on its only repeat: it has no score for that seed. Every
    seed is then averaged over the items all seeds scored (b-0, b-1, b-2): seed 0 2/3, seed 1 2/3,
    score 2/3. Before, three definitions disagreed: items averaged over seeds first gave 0.75 (MLflow's
    final metric), each seed over its own items 0.708 (the aggregates), common items 2/3 (the table)."""
    from spogw.harness.scores import read_item_scores
    from spogw.harness.sweeps.config import ObjectiveConfig
    from spogw.harness.sweeps.objective import objective_value
    from spogw.reports.coverage import Cell, Coverage
    from spogw.reports.report import final_metrics

    with SQLiteStore(tmp_path / "rollouts.sqlite") as store:
        store.put_eval(eval_rows("spogw", 0, 1, {"b": [1.0, 0.0, 1.0, 1.0]}))
        rows = eval_rows("spogw", 1, 1, {"b": [1.0, 1.0, 0.0, 1.0]})
        rows[-1] = dataclasses.replace(rows[-1], score=None, status="infra_error")
        store.put_eval(rows)
    frame = read_item_scores(tmp_path)
    done = Coverage(("spogw",), (0, 1), 1, tuple(Cell("spogw", s, 1, False, 1, True) for s in (0, 1)))
    everywhere = {
        "results table": float(score_table(frame, resamples=50)["score"].iloc[0]),
        "aggregates mean": float(aggregate_table(frame, None, resamples=50).set_index("method").loc["spogw", "mean"]),
        "sweep objective": objective_value(tmp_path, ObjectiveConfig(method="spogw")),
        "final MLflow metric": final_metrics(frame, done)["final.spogw.test_score"],
        "final MLflow metric of the benchmark": final_metrics(frame, done)["final.spogw.test_score.b"],
    }
    assert everywhere == pytest.approx(dict.fromkeys(everywhere, 2 / 3)), everywhere
    assert int(score_table(frame, resamples=50)["items"].iloc[0]) == 3


def test_a_benchmark_whose_seeds_share_no_scored_item_has_no_score_rather_than_nan() -> None:
    """Seed 0 scored only x-0 and seed 1 only x-1 on benchmark x: no item all seeds scored, so x has
    no score; benchmark y (scored by both) keeps its own, and the tables hold no NaN."""
    from spogw.harness.scores import benchmark_means

    rows = [("x", 0, "x-0", 1.0), ("x", 1, "x-1", 0.0), ("y", 0, "y-0", 1.0), ("y", 1, "y-0", 0.5)]
    frame = pd.DataFrame(rows, columns=["benchmark", "seed", "item_id", "score"]).assign(method="m", iteration=1)
    assert benchmark_means(frame).to_dict() == {"y": 0.75}
    table = score_table(frame, resamples=50)
    assert table["benchmark"].tolist() == ["y"] and not table["score"].isna().any()
    assert score_table(frame[frame["benchmark"] == "x"], resamples=50).empty


def test_one_seed_has_no_interval_over_seeds() -> None:
    """From one seed the bootstrap over seeds returns the point itself; the table says nan, not a
    zero-width interval, and the two-level interval still covers the items."""
    frame = pd.DataFrame(
        {"method": "m", "seed": 0, "iteration": 1, "benchmark": "b", "item_id": list("abcdef"),
         "score": [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]}
    )  # fmt: skip
    (row,) = score_table(frame, resamples=200).itertuples()
    assert np.isnan(row.seed_ci_low) and np.isnan(row.seed_ci_high)
    assert row.ci_low < row.score < row.ci_high


# ----------------------------------------------------------------------------------------------
# Partial runs: what the report covers


class RecordingTracker:
    """Stands in for harness.tracking.Tracker: records what would be logged."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.artifacts: list[Path] = []

    def log_metrics(self, run_id: str | None, metrics: dict[str, float], step: int) -> None:
        self.metrics.update(metrics)

    def log_artifact(self, run_id: str | None, path: Path, folder: str | None = None) -> None:
        self.artifacts.append(path)


def test_a_partial_run_says_what_it_covers_marks_methods_in_progress_and_logs_only_finished_ones(
    tmp_path: Path,
) -> None:
    """The file declares seeds [0, 1, 2] and 2 iterations; the folder has cot seed 0 done (its
    marker) and spogw seed 0 evaluated at iteration 0 only, as `spogw run --seeds 0` leaves it while
    it trains. The report says Partial at its top, marks spogw in progress in the results table, and
    only cot's numbers are MLflow's final metrics; with one seed the aggregates have no interval over
    seeds and no probability of improvement. Once spogw's last iteration is in and marked, it is final."""
    from spogw.harness.config import load_experiment
    from spogw.harness.run_folder import done_marker
    from spogw.reports.coverage import coverage
    from spogw.reports.report import log_report, write_report

    config = load_experiment(SMALL_EXPERIMENT, ["seeds=[0, 1, 2]", "stats.bootstrap_samples=200"])
    config = config.model_copy(update={"methods": [m for m in config.methods if m.name != "aflow"]})  # spogw, cot
    items = {"gsm_synth": [1.0, 0.0, 1.0, 1.0]}
    with SQLiteStore(tmp_path / "rollouts.sqlite") as store:
        store.put_eval(eval_rows("cot", 0, 0, {"gsm_synth": [0.0, 0.0, 1.0, 0.0]}))
        store.put_eval(eval_rows("spogw", 0, 0, items))
    done_marker(tmp_path, "cot", 0).parent.mkdir()
    done_marker(tmp_path, "cot", 0).touch()
    report = write_report(tmp_path, config)
    text = report.markdown.read_text()
    head = text.split("\n## ")[0]
    assert "**Partial**: seeds [0] of [0, 1, 2]" in head and "in progress: spogw seed 0 (iteration 0 of 2)" in head
    results = text.split("## Results")[1].split("\n## ")[0]
    assert "| spogw: in progress (iteration 0 of 2) |" in results and "| cot (baseline) |" in results
    assert "not final" in results
    assert "spogw: in progress (iteration 0 of 2)" in report.latex.read_text()
    aggregates = text.split("## Aggregates")[1].split("\n## ")[0]
    assert "n/a (1 seed)" in aggregates and "(interval n/a: 1 seed)" in aggregates
    assert "1.000 [1.000, 1.000]" not in aggregates and "| 1.0 | 1.0 |" not in aggregates
    tracker = RecordingTracker()
    log_report(report, tracker, "parent")  # type: ignore[arg-type]  # duck-typed stand-in
    assert tracker.metrics == {
        "final.cot.test_score": 0.25, "final.cot.test_score.gsm_synth": 0.25, "final.cot.seeds": 1,
    }  # fmt: skip
    assert not any(name.startswith("final.spogw") for name in tracker.metrics)

    with SQLiteStore(tmp_path / "rollouts.sqlite") as store:
        store.put_eval(eval_rows("spogw", 0, 2, items))
    done_marker(tmp_path, "spogw", 0).touch()
    finished = coverage(config, read_item_scores(tmp_path), tmp_path)
    assert finished.finished_methods() == ["spogw", "cot"] and finished.marks() == {}
    assert finished.statement().startswith("**Partial**: seeds [0] of [0, 1, 2].")
    small = load_experiment(SMALL_EXPERIMENT)
    small = small.model_copy(update={"methods": [m for m in small.methods if m.name != "aflow"]})
    everything = coverage(small, read_item_scores(tmp_path), tmp_path)
    assert everything.complete and everything.statement().startswith("Complete")


def test_one_seed_gives_no_interval_over_seeds_and_no_probability_of_improvement() -> None:
    frame = synthetic_frame({"base": 0.0, "better": 0.2}, seeds=1)
    aggregates = aggregate_table(frame, "base", resamples=100).set_index("method")
    assert aggregates["mean_low"].isna().all() and aggregates["iqm_high"].isna().all()
    assert np.isnan(aggregates.loc["better", "p_improve"])
    two = aggregate_table(synthetic_frame({"base": 0.0, "better": 0.2}, seeds=2), "base", resamples=100)
    assert two["mean_low"].notna().all() and two.set_index("method").loc["better", "p_improve"] == 1.0


def test_the_learning_test_pairs_each_trained_method_with_its_own_iteration_zero() -> None:
    """A method whose final generator gains 0.2 on every item is significant after Holm; one that
    does not move is not; a static method (iteration 0 only) is not in the family."""
    from spogw.reports.comparison import learning_table

    rng = np.random.default_rng(3)
    rows = []
    difficulty = rng.uniform(0.2, 0.6, size=30)
    for method, gain in (("learns", 0.2), ("flat", 0.0)):
        for iteration in (0, 1, 2):
            for s in range(2):
                scores = np.clip(difficulty + gain * (iteration == 2) + rng.normal(0, 0.05, size=30), 0, 1)
                rows += [
                    {
                        "method": method,
                        "seed": s,
                        "iteration": iteration,
                        "benchmark": "b",
                        "item_id": f"i{k}",
                        "score": v,
                    }
                    for k, v in enumerate(scores)
                ]
    rows += [
        {**row, "method": "static", "iteration": 0} for row in rows if row["method"] == "flat" and row["iteration"] == 0
    ]
    table = learning_table(pd.DataFrame(rows), resamples=500).set_index("method")
    assert sorted(table.index) == ["flat", "learns"]
    assert table.loc["learns", "reference"] == "learns@0"
    assert table.loc["learns", "difference"] == pytest.approx(0.2, abs=0.03)
    assert bool(table.loc["learns", "significant"]) and not bool(table.loc["flat", "significant"])
    assert table.loc["learns", "items"] == 30
