"""The runner, the run folder's store, resume after kill -9, MLflow tracking, the CLI's `run`."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from chaos import run_tables

from spogw.harness.config import ConfigError, load_experiment
from spogw.harness.rollouts import Rollout
from spogw.harness.run_folder import config_differences, prepare_run_dir
from spogw.harness.store import EvalRow, SQLiteStore

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "tests" / "data" / "runner_small.yaml"


def _rollout(query: str, idx: int, score: float | None = 0.5) -> Rollout:
    return Rollout(
        "e", "spogw", 0, 1, query, idx, "prompt", "code", (1, 2), (3, 4), (-0.25, -1e-9), "ok", "", score,
        (score, None), 3, 30, 0.1, "Custom", "gsm_synth",
    )  # fmt: skip


def test_store_round_trips_rollouts_exactly_and_ignores_rewrites(tmp_path: Path) -> None:
    rows = [_rollout("q1", 0), _rollout("q1", 1, None), _rollout("q2", 0, 1.0)]
    with SQLiteStore(tmp_path / "r.sqlite") as store:
        store.put(rows)
        store.put([_rollout("q1", 0, 0.0)])  # same key again: ignored, the first write stands
        got = store.get("e", "spogw", 0, 1)
        assert got == sorted(rows, key=lambda r: (r.query_id, r.sample_idx))
        assert store.keys("e", "spogw", 0, 1) == {r.key for r in rows}
        assert store.get("e", "spogw", 0, 2) == []
    with SQLiteStore(tmp_path / "r.sqlite") as reopened:  # durable
        assert len(reopened.get("e", "spogw", 0, 1)) == 3
        assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_eval_rows_are_keyed_and_idempotent(tmp_path: Path) -> None:
    def row(item: str, repeat: int, score: float | None) -> EvalRow:
        return EvalRow("e", "cot", 0, 0, "gsm_synth", item, repeat, "code", "Custom", "ok", "", score, 1, 10, 5, 0.1)

    with SQLiteStore(tmp_path / "r.sqlite") as store:
        store.put_eval([row("a", 0, 1.0), row("a", 1, None), row("b", 0, 0.0)])
        store.put_eval([row("a", 0, 0.0)])
        assert store.eval_done("cot", 0, 0, "gsm_synth") == {"a", "b"}
        rows = store.eval_rows("cot")
        assert [(r.item_id, r.repeat, r.score) for r in rows] == [("a", 0, 1.0), ("a", 1, None), ("b", 0, 0.0)]
        assert len(store.table("eval_items")) == 3


def test_changed_experiment_on_a_run_folder_is_refused_with_the_fields(tmp_path: Path) -> None:
    first = load_experiment(SMALL)
    prepare_run_dir(first, tmp_path / "run", force_new=False)
    prepare_run_dir(first, tmp_path / "run", force_new=False)  # same config: resumes
    changed = load_experiment(SMALL, ["iterations=3", "executor.profile=weak"])
    with pytest.raises(ConfigError) as err:
        prepare_run_dir(changed, tmp_path / "run", force_new=False)
    assert "iterations: 2 -> 3" in str(err.value) and "executor.profile: 'medium' -> 'weak'" in str(err.value)
    prepare_run_dir(changed, tmp_path / "run", force_new=True)
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and (moved[0] / "config.resolved.yaml").is_file()
    assert yaml.safe_load((tmp_path / "run" / "config.resolved.yaml").read_text())["iterations"] == 3


def test_config_differences_names_list_members() -> None:
    old = {"methods": [{"name": "spogw", "overrides": {"beta": 0.1}}], "seeds": [0, 1]}
    new = {"methods": [{"name": "spogw", "overrides": {"beta": 0.2}}], "seeds": [0]}
    assert config_differences(old, new) == ["methods.0.overrides.beta: 0.1 -> 0.2", "seeds.1: 1 -> '(absent)'"]


def _spogw(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spogw.harness.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        ("methods.0.name=spogww", "methods.0.name", "'spogww'"),
        ("methods.0.overrides.group_size=9", "methods.0", "larger than num_samples m=4"),
        ("methods.0.overrides.sharpen_t=2", "methods.0", "2t=4"),
        ("methods.0.overrides.beta=-0.1", "methods.0", "beta"),
        ("benchmarks.0.path=/nonexistent/HumanEval.jsonl", "benchmarks.0.path", "/nonexistent/HumanEval.jsonl"),
    ],
)
def test_bad_experiment_fails_before_any_work(tmp_path: Path, override: str, field: str, value: str) -> None:
    result = _spogw("run", str(SMALL), "--run-dir", str(tmp_path / "run"), "--set", override, "--quiet")
    assert result.returncode == 2, result.stderr
    assert field in result.stderr and value in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_unreadable_benchmark_file_fails_before_any_work(tmp_path: Path) -> None:
    broken = tmp_path / "HumanEval.jsonl"
    broken.write_text('{"task_id": "HumanEval/0", "prompt": "def f():\\n"}\nnot json\n')
    overrides = ["benchmarks.0.name=humaneval", f"benchmarks.0.path={broken}", "benchmarks.0.size=null"]
    args = [a for o in overrides for a in ("--set", o)]
    result = _spogw("run", str(SMALL), "--run-dir", str(tmp_path / "run"), *args, "--quiet")
    assert result.returncode == 2, result.stderr
    assert "benchmarks.0.path" in result.stderr and str(broken) in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    result = _spogw("run", str(SMALL), "--run-dir", str(tmp_path / "run"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "spogw     0      2" in result.stdout and "executor calls" in result.stdout
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------
# End to end, with kill -9 and resume (the standard tiny generator: its workflows really run)

E2E_SETTINGS = ["generator.tiny_recipe=standard", "benchmarks.0.test_limit=6"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, standard_tiny: Path) -> Path:
    from spogw import harness

    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    overrides = {key.replace(".", "__"): yaml.safe_load(value) for key, value in (s.split("=") for s in E2E_SETTINGS)}
    returned = harness.run(SMALL, run_dir=run_dir, progress=False, **overrides)  # the notebook API
    assert returned == run_dir
    return run_dir


def test_run_folder_holds_every_artifact(uninterrupted: Path) -> None:
    import pandas as pd

    for name in ("mlflow.db", "rollouts.sqlite", "item_scores.parquet", "report.md", "config.resolved.yaml"):
        assert (uninterrupted / name).is_file(), name
    frame = pd.read_parquet(uninterrupted / "item_scores.parquet")
    assert set(frame["method"]) == {"spogw", "cot", "aflow"}
    assert sorted(frame[frame["method"] == "spogw"]["iteration"].unique()) == [0, 1, 2]
    assert len(frame[(frame["method"] == "spogw") & (frame["iteration"] == 2)]) == 6
    report = (uninterrupted / "report.md").read_text()
    assert "SIMULATED executor" in report and "| spogw | 2 |" in report and "| cot | 0 |" in report
    head = report.split("\n## ")[0]  # the first lines name the generator, its decoding and the executor
    assert "Generator: tiny-" in head and "grammar decoding, compact-v1 prompt, hf sampling" in head
    assert "Executor: sim:medium" in head
    # the warning says what the data say: on this small run every training question's samples may score alike
    spread_query = (
        "SELECT COUNT(*) FROM (SELECT iteration, query_id FROM rollouts GROUP BY 1, 2 HAVING COUNT(DISTINCT score) > 1)"
    )
    spread = sqlite3.connect(uninterrupted / "rollouts.sqlite").execute(spread_query).fetchone()[0]
    assert ("**No learning signal: spogw.**" in head) == (spread == 0)
    tables = run_tables(uninterrupted)
    assert len(tables["rollouts"]) == 2 * 3 * 4  # 2 training iterations x 3 questions x m=4
    assert len(tables["eval_items"]) == (3 + 1 + 1) * 6 * 2  # spogw iterations 0-2, cot and aflow, 6 items, 2 repeats
    # the search: round 0 and 3 rounds on the 3 training questions; its chosen workflow is in the report
    search = tables["search_rounds"]
    assert {row[3] for row in search} == {0, 1, 2, 3} and "## Search" in report and "| aflow | 0 |" in report
    statuses = {
        row[0] for row in sqlite3.connect(uninterrupted / "rollouts.sqlite").execute("SELECT status FROM rollouts")
    }
    assert "ok" in statuses  # workflows ran for real
    # the trainer's own groups and steps are in the store: every kept group's members were trainable
    # rollouts of its question, and the steps are numbered 0.. across iterations
    trainable = {
        (iteration, query, sample)
        for iteration, query, sample in sqlite3.connect(uninterrupted / "rollouts.sqlite").execute(
            "SELECT iteration, query_id, sample_idx FROM rollouts WHERE status != 'infra_error' AND score IS NOT NULL"
        )
    }
    groups = pd.read_sql_query("SELECT * FROM groups", sqlite3.connect(uninterrupted / "rollouts.sqlite"))
    assert set(groups["method"]) == {"spogw"} and set(groups["stage"]) == {"built", "kept"}
    for row in groups[groups["stage"] == "kept"].itertuples():
        assert all((row.iteration, row.query_id, s) in trainable for s in json.loads(row.members))
    steps = [row[0] for row in sqlite3.connect(uninterrupted / "rollouts.sqlite").execute("SELECT step FROM steps")]
    assert sorted(steps) == list(range(len(steps))) and len(steps) >= 2


def test_mlflow_has_parent_and_nested_runs_with_params_metrics_tags(uninterrupted: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{uninterrupted / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("runner_small")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and len(children) == 3
    assert parent[0].data.params["iterations"] == "2" and parent[0].data.tags["simulated"] == "true"
    assert parent[0].data.tags["git_commit"] and parent[0].data.tags["version.torch"].startswith("2.")
    spogw = next(r for r in children if r.data.tags["method"] == "spogw")
    assert spogw.data.params["num_samples"] == "4" and spogw.data.params["seed"] == "0"
    history = client.get_metric_history(spogw.info.run_id, "test_score")
    assert sorted(m.step for m in history) == [0, 1, 2]
    steps = sorted(m.step for m in client.get_metric_history(spogw.info.run_id, "step.loss"))
    assert steps == list(range(len(steps))) and len(steps) >= 2  # one x axis: optimizer steps so far
    artifacts = {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    assert {
        "config.resolved.yaml",
        "item_scores.parquet",
        "report.md",
        "report.html",
        "results.tex",
        "report",
    } <= artifacts
    assert any(a.path == "adapter" for a in client.list_artifacts(spogw.info.run_id))


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path: Path, uninterrupted: Path) -> None:
    """tests/chaos.py: at least 20 SIGKILLs, at least 3 in each of collection, training, the search
    (runner_small has an aflow cell), evaluation and report writing (crash points drawn at random,
    plus timer kills that land anywhere), each followed by a resume; every chain's final tables
    equal an uninterrupted run's: nothing lost, nothing doubled, no torn file read."""
    import json

    import pandas as pd

    command = [sys.executable, str(REPO / "tests" / "chaos.py"), str(SMALL), "--out", str(tmp_path), "--seed", "0"]
    command += ["--kills", "20", "--min-per-phase", "3", *(a for s in E2E_SETTINGS for a in ("--set", s))]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((tmp_path / "chaos.json").read_text())
    kills = summary["kills"]
    assert len(kills) >= 20
    assert all(summary["kills_per_phase"][p] >= 3 for p in ("collection", "training", "search", "evaluation", "report"))
    assert sum(k["how"] == "timer" for k in kills) >= 1
    baseline = Path(summary["baseline"])
    expected = run_tables(baseline)
    assert expected == run_tables(uninterrupted), "the forked baseline equals the in-process run"
    scores = pd.read_parquet(baseline / "item_scores.parquet")
    results = (baseline / "report.md").read_text().split("## Results")[1].split("\n## ")[0]
    for chain in map(Path, summary["chains"]):
        assert run_tables(chain) == expected, chain
        pd.testing.assert_frame_equal(pd.read_parquet(chain / "item_scores.parquet"), scores)
        assert (chain / "report.md").read_text().split("## Results")[1].split("\n## ")[0] == results


def test_dry_run_tokens_are_the_measured_rates_times_the_planned_work() -> None:
    from spogw.harness.plan import load_splits, measure_token_rates, plan_experiment, select_methods, select_seeds
    from spogw.harness.workflows.structure import calls_per_run
    from spogw.methods.static import workflow_source

    config = load_experiment(SMALL)
    splits = load_splits(config)
    rates = measure_token_rates(config, splits)["math"]
    assert rates.prompt_per_call > 20 and rates.completion_per_call > 20, "operator prompts and replies were counted"
    assert rates.generator_completion <= config.generator.sampling.max_new_tokens
    plan = plan_experiment(config, splits, select_methods(config, None), select_seeds(config, None))
    static = next(r for r in plan.runs if r.label == "cot")
    calls = 4 * 2 * calls_per_run(workflow_source("cot")[1])  # 4 test items x 2 repeats
    assert static.executor_tokens == pytest.approx(calls * (rates.prompt_per_call + rates.completion_per_call))
    trained = next(r for r in plan.runs if r.label == "spogw")
    assert trained.generator_tokens == pytest.approx(
        trained.generator_samples * (rates.generator_prompt + rates.generator_completion)
    )
    assert trained.executor_tokens == pytest.approx(
        trained.executor_calls * (rates.prompt_per_call + rates.completion_per_call)
    )


def test_paper_configuration_validates_with_a_dry_run(tmp_path: Path) -> None:
    """The paper-scale file is all_methods.yaml's experiment with other model fields; here it can only
    plan, with local folders in the hub layouts standing in for the hub datasets (no download)."""
    paper = REPO / "experiments" / "paper_qwen7b_gpt4omini.yaml"
    hub = REPO / "tests" / "data" / "hub"
    stand_ins = []
    for index, name in enumerate(["gsm8k", "math", None, "mbpp", "hotpotqa", "drop"]):
        if name is not None:
            stand_ins += [
                "--set",
                f"benchmarks.{index}.hub={hub / name}",
                "--set",
                f"benchmarks.{index}.hub_config=null",
            ]
    result = _spogw("run", str(paper), "--run-dir", str(tmp_path / "run"), "--dry-run", *stand_ins)
    assert result.returncode == 0, result.stderr
    assert "gsm8k: 2 train / 8 test items" in result.stdout and "drop: 2 train / 8 test items" in result.stdout
    assert "humaneval: 33 train / 131 test items" in result.stdout
    assert "executor calls" in result.stdout and not (tmp_path / "run").exists()
    assert "generator tokens (estimate)" in result.stdout and "executor gpt-4o-mini: about $" in result.stdout
    config = load_experiment(paper)
    assert config.generator.backend == "vllm_server" and config.generator.base_url
    spogw = next(m for m in config.methods if m.name == "spogw")
    assert spogw.overrides.get("num_samples", 16) == 16 and spogw.overrides.get("group_size", 14) == 14


def test_spogw_report_rewrites_every_table_and_figure(uninterrupted: Path, tmp_path: Path) -> None:

    start = time.perf_counter()
    result = _spogw("report", str(uninterrupted))
    elapsed = time.perf_counter() - start
    print(f"spogw report: {elapsed:.1f} s")
    assert result.returncode == 0, result.stderr
    report = (uninterrupted / "report.md").read_text()
    for section in (
        "## Results",
        "## Paired comparisons against cot",
        "## Aggregates",
        "## Per iteration",
        "## Figures",
    ):
        assert section in report, section
    assert "SIMULATED executor" in report and "| cot (baseline) |" in report
    page = (uninterrupted / "report.html").read_text()
    figures = (
        "learning_curves",
        "intervals",
        "probability_of_improvement",
        "diversity",
        "group_std",
        "cost_executor_calls",
        "search_aflow_seed0_gsm_synth",
    )
    assert page.count("data:image/png;base64,") == len(figures), "every figure embedded: the page stands alone"
    for section in (
        "## Group curation",
        "## Workflow diversity",
        "## Training cost",
        "## Search",
        "## Chosen workflows",
    ):
        assert section in report, section
    for name in figures:
        assert (uninterrupted / "report" / f"{name}.png").stat().st_size > 1000
        assert (uninterrupted / "report" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    assert "\\toprule" in (uninterrupted / "results.tex").read_text()
    missing = _spogw("report", str(tmp_path))
    assert missing.returncode == 2 and "not a run folder" in missing.stderr


def test_reports_load_returns_the_tidy_per_item_frame(uninterrupted: Path, tmp_path: Path) -> None:
    from spogw import reports

    frame = reports.load(uninterrupted)
    assert list(frame.columns[:8]) == ["method", "seed", "iteration", "benchmark", "item", "repeat", "score", "status"]
    assert len(frame) == len(run_tables(uninterrupted)["eval_items"])
    assert not frame.duplicated(["method", "seed", "iteration", "benchmark", "item", "repeat"]).any()
    assert frame["score"].between(0, 1).all() or frame["score"].isna().any()
    assert set(frame["method"]) == {"spogw", "cot", "aflow"}
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        reports.load(tmp_path)


def test_export_writes_every_table_to_parquet(uninterrupted: Path, tmp_path: Path) -> None:
    import pandas as pd

    result = _spogw("export", str(uninterrupted), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rollouts = pd.read_parquet(tmp_path / "rollouts.parquet")
    evals = pd.read_parquet(tmp_path / "eval_items.parquet")
    tables = run_tables(uninterrupted)
    assert len(rollouts) == len(tables["rollouts"]) and len(evals) == len(tables["eval_items"])
    iterations = pd.read_parquet(tmp_path / "iterations.parquet")
    assert len(iterations) == len(tables["iterations"]) == 2  # spogw, seed 0, iterations 0 and 1 trained
    assert not rollouts.duplicated(["experiment", "method", "seed", "iteration", "query_id", "sample_idx"]).any()
    assert _spogw("export", str(tmp_path / "missing")).returncode == 2


def test_executor_transfer_run_evaluates_final_workflows_unchanged_with_every_executor(
    tmp_path: Path, spogw_cache: Path
) -> None:
    """Per-method executors and sampling, evaluation.transfer, collect_final, the iterations table
    and the Q1 report section, end to end on the small test build."""
    from spogw import harness

    run_dir = harness.run(REPO / "tests" / "data" / "runner_transfer.yaml", run_dir=tmp_path / "run", progress=False)
    with sqlite3.connect(run_dir / "rollouts.sqlite") as db:
        evaluated = set(db.execute("SELECT method, iteration, transfer FROM eval_items"))
        iterations = db.execute("SELECT method, iteration, rollouts, steps FROM iterations ORDER BY 1, 2").fetchall()
        same_code = db.execute(
            "SELECT count(*) FROM eval_items a JOIN eval_items b ON a.method=b.method AND a.item_id=b.item_id "
            "AND a.iteration=b.iteration AND a.repeat=b.repeat WHERE a.transfer='' AND b.transfer!='' "
            "AND a.workflow_code!=b.workflow_code"
        ).fetchone()[0]
        untrained = dict(db.execute("SELECT method, avg(score) FROM eval_items WHERE iteration=0 GROUP BY method"))
    # own executor at iterations 0 and 1; the other executor once, on the final workflows; the static
    # workflow too; a method's own executor is never run twice
    assert evaluated == {
        ("opt_weak", 0, ""), ("opt_weak", 1, ""), ("opt_weak", 1, "strong"),
        ("opt_strong", 0, ""), ("opt_strong", 1, ""), ("opt_strong", 1, "weak"),
        ("cot", 0, ""), ("cot", 0, "weak"), ("cot", 0, "strong"),
    }  # fmt: skip
    assert same_code == 0, "transferred workflows are the same code the own executor ran"
    # iteration-0 evaluations differ in executor and temperature: never copied from each other
    assert untrained["opt_strong"] > untrained["opt_weak"]
    # collect_final: a second collection (iteration 1, after the update) with 3 questions x m=4
    assert iterations == [
        ("opt_strong", 0, 12, 2),
        ("opt_strong", 1, 12, 0),
        ("opt_weak", 0, 12, 2),
        ("opt_weak", 1, 12, 0),
    ]
    report = (run_dir / "report.md").read_text()
    assert "## Q1: executor transfer" in report and "Question: Do the workflows transfer?" in report
    assert "Answer: evaluated with an executor it was not optimized for" in report
    assert "| opt_weak | spogw | sim:weak | 1.0 |" in report and "| opt_strong | spogw | sim:strong | 0.5 |" in report
    assert "Executor: by method (opt_weak: sim:weak, opt_strong: sim:strong, cot: sim:medium)" in report
    assert (run_dir / "report" / "transfer_gsm_synth.png").is_file()
    assert (run_dir / "report" / "transfer_drop_gsm_synth.png").is_file()


@pytest.mark.parametrize(
    ("kind", "heading"),
    [
        ("sharpening", "## Q2: sharpening under low score variance"),
        ("kl_diversity", "## Q3: mKL, standard KL and workflow diversity"),
        ("ablation", "## Component ablation"),
    ],
)
def test_every_study_section_renders_from_a_run_folder(
    uninterrupted: Path, tmp_path: Path, kind: str, heading: str
) -> None:
    """The study sections come from the store alone: the same run folder reported as each study
    states the question, the design table, the test and a generated answer."""
    import shutil

    from spogw.reports.report import write_report

    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    config = load_experiment(SMALL, [f"study.kind={kind}", "study.question=Does it?"])
    text = write_report(run_dir, config).markdown.read_text()
    assert text.index(heading) < text.index("## Results")  # the study comes first
    assert "Question: Does it?" in text and "| spogw | spogw | sim:medium |" in text
    assert "\nTest: paired by item" in text and "\nAnswer" in text


def test_a_run_with_nothing_to_learn_says_so_on_the_console_and_in_the_report(tmp_path: Path) -> None:
    """min_group_std 0.6 is above any std of scores in [0, 1]: no group survives curation (on this
    small run every question's samples also score the same, the first cause the notice names)."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "spogw.harness.cli", "run", str(SMALL), "--run-dir", str(run_dir), "--quiet",
         "--set", "methods.0.overrides.min_group_std=0.6", "--set", "iterations=1"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NO LEARNING SIGNAL: spogw seed 0 iteration 0: " in result.stderr
    head = (run_dir / "report.md").read_text().split("\n## ")[0]
    assert "**No learning signal: spogw.**" in head


def test_every_iteration_off_and_twins_sharing_iteration_zero(tmp_path: Path) -> None:
    """evaluation.every_iteration: false: held-out rows exist for iterations 0 and the last only,
    run.log announces no other evaluation, and the report's learning test still has both ends. An
    offline twin (grpo_kl beside spogw: same executor and sampling) has spogw's iteration-0
    rollouts as its own, copied (every field but the method, wall time included), and collects its
    later iterations itself."""
    from spogw import harness

    experiment = yaml.safe_load(SMALL.read_text())
    experiment["methods"].insert(1, {"name": "grpo_kl", "overrides": dict(experiment["methods"][0]["overrides"])})
    experiment["evaluation"]["every_iteration"] = False
    path = tmp_path / "twins.yaml"
    path.write_text(yaml.safe_dump(experiment))
    run_dir = harness.run(path, run_dir=tmp_path / "run", progress=False)
    with SQLiteStore(run_dir / "rollouts.sqlite") as store:
        assert {row.iteration for row in store.eval_rows(method="spogw")} == {0, 2}
        assert {row.iteration for row in store.eval_rows(method="grpo_kl")} == {0, 2}
        first = {method: store.get("runner_small", method, 0, 0) for method in ("spogw", "grpo_kl")}
        later = store.get("runner_small", "grpo_kl", 0, 1)
    assert first["spogw"] and [dataclasses.replace(r, method="") for r in first["grpo_kl"]] == [
        dataclasses.replace(r, method="") for r in first["spogw"]
    ]
    assert len(later) == len(first["spogw"])
    log = (run_dir / "run.log").read_text()
    assert "spogw seed 0 iteration 0/2: evaluate" in log and "spogw seed 0 iteration 2/2: evaluate" in log
    assert "iteration 1/2: evaluate" not in log
    report = (run_dir / "report.md").read_text()
    assert "| spogw | spogw@0 |" in report and "| grpo_kl | grpo_kl@0 |" in report
