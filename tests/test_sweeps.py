"""Sweeps: the constrained search space, the sweep file, a whole sweep on sqlite, and two worker
processes sharing one PostgreSQL study (the server is started here, on 127.0.0.1)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spogw.harness.config import ConfigError
from spogw.harness.sweeps.config import load_sweep
from spogw.harness.sweeps.space import Infeasible, ParamSpec, parse_constraint, suggest

REPO = Path(__file__).resolve().parents[1]
SMALL_SWEEP = REPO / "tests" / "data" / "sweep_small.yaml"


# ----------------------------------------------------------------------------------------------
# Constraints and the space


def test_constraints_parse_to_linear_inequalities() -> None:
    names = {"sharpen_t", "group_size", "num_samples"}
    chain = parse_constraint("2 * sharpen_t <= group_size <= num_samples", names)
    assert [dict(c.coefficients) for c in chain] == [
        {"sharpen_t": 2.0, "group_size": -1.0},
        {"group_size": 1.0, "num_samples": -1.0},
    ]
    (strict,) = parse_constraint("group_size > sharpen_t + 1", names)  # t + 1 < n  ->  t + 1 - n < 0
    assert dict(strict.coefficients) == {"sharpen_t": 1.0, "group_size": -1.0} and strict.constant == 1.0
    assert strict.strict and not chain[0].strict
    assert strict.satisfied({"sharpen_t": 1, "group_size": 3}) and not strict.satisfied(
        {"sharpen_t": 2, "group_size": 3}
    )
    for bad, message in (
        ("group_size * num_samples <= 10", "only linear"),
        ("n <= 3", "not a parameter"),
        ("group_size", "expected a comparison"),
        ("group_size == 3", "use <="),
        ("2 <= 3", "mentions no parameter"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_constraint(bad, names | {"x"})


SPACE = {
    "num_samples": ParamSpec(type="categorical", choices=[4, 6, 8]),
    "group_size": ParamSpec(type="int", low=2, high=8),
    "sharpen_t": ParamSpec(type="int", low=0, high=4),
    "beta": ParamSpec(type="float", low=0.01, high=0.5, log=True),
}
CONSTRAINTS = parse_constraint("2 * sharpen_t <= group_size <= num_samples", set(SPACE))


def test_every_suggestion_of_a_real_study_satisfies_the_constraints() -> None:
    """200 random-sampler trials of Optuna itself: 2t <= n <= m always holds, nothing is infeasible
    (n's range shrinks to [2, m], t's to [0, n // 2])."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(200):
        trial = study.ask()
        values = suggest(trial, SPACE, CONSTRAINTS)
        assert 2 * values["sharpen_t"] <= values["group_size"] <= values["num_samples"], values
        seen.add((values["num_samples"], values["group_size"], values["sharpen_t"]))
        study.tell(trial, 0.0)
    assert (8, 8, 4) in seen or (8, 8, 3) in seen  # the corners stay reachable


class Draws:
    """A Suggester drawing from hypothesis data: any value within the offered range."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self.data.draw(st.integers(low, high)))

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self.data.draw(st.floats(low, high)))

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.data.draw(st.sampled_from(choices))


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(1, 6), st.integers(2, 10))
def test_suggestions_satisfy_the_constraints_or_are_refused(data: Any, t_high: int, n_low: int) -> None:
    """For any ranges, whatever values the sampler picks inside the offered bounds satisfy every
    constraint; when no value fits, Infeasible is raised (the trial is never run)."""
    space = {
        "num_samples": ParamSpec(type="categorical", choices=[4, 8, 12]),
        "group_size": ParamSpec(type="int", low=n_low, high=12),
        "sharpen_t": ParamSpec(type="int", low=1, high=t_high),
    }
    constraints = parse_constraint("2 * sharpen_t <= group_size <= num_samples", set(space))
    try:
        values = suggest(Draws(data), space, constraints)
    except Infeasible:
        return
    assert all(c.satisfied(values) for c in constraints), values


def test_an_infeasible_space_is_refused_not_run() -> None:
    space = {"group_size": ParamSpec(type="int", low=2, high=3), "sharpen_t": ParamSpec(type="int", low=2, high=3)}
    with pytest.raises(Infeasible, match="sharpen_t"):
        suggest(optuna.create_study().ask(), space, parse_constraint("2 * sharpen_t <= group_size", set(space)))


def test_sweep_files_are_checked_with_file_field_and_value(tmp_path: Path) -> None:
    sweep = load_sweep(REPO / "experiments" / "sweep_spogw.yaml")
    trial = sweep.experiment({"num_samples": 6, "group_size": 4, "sharpen_t": 2, "beta": 0.2, "learning_rate": 0.003})
    spogw = trial.methods[0]
    assert [m.display_label for m in trial.methods] == ["spogw"] and trial.seeds == [0]
    assert spogw.overrides["group_size"] == 4 and spogw.overrides["num_samples"] == 6 and spogw.overrides["beta"] == 0.2
    assert trial.evaluation.split == "validation" and trial.benchmarks[0].split.validation_fraction == 0.16
    text = SMALL_SWEEP.read_text()
    for change, message in (
        ("method: spogw", "objective.method = 'nope': not a method label"),
        ("group_size: {", "unknown field"),
        ("constraints:\n  - 2 * sharpen_t <= group_size", "not a parameter of the space"),
    ):
        replaced = {
            "method: spogw": text.replace("method: spogw", "method: nope"),
            "group_size: {": text.replace("  group_size: {", "  group_siz: {").replace("<= group_size", "<= group_siz"),
            "constraints:\n  - 2 * sharpen_t <= group_size": text.replace(
                "2 * sharpen_t <= group_size", "2 * t <= group_size"
            ),
        }[change]
        (tmp_path / "base.yaml").write_text((SMALL_SWEEP.parent / "runner_small.yaml").read_text())
        path = tmp_path / "sweep.yaml"
        path.write_text(replaced.replace("base: runner_small.yaml", "base: base.yaml"))
        with pytest.raises(ConfigError, match=message):
            load_sweep(path)


def test_a_trial_whose_heartbeat_stops_is_failed_and_retried_once(tmp_path: Path) -> None:
    """The heartbeat thread really beats through Optuna's cached storage wrapper; once it stops
    (a dead worker) and the grace period passes, the trial is FAIL and one WAITING retry with the
    same parameters appears; the trial cap counts the retry, not the failure."""
    from spogw.harness.sweeps.storage import heartbeat, open_storage, resolve_paths
    from spogw.harness.sweeps.study import next_trial

    sweep = load_sweep(SMALL_SWEEP)  # heartbeat_s 1, grace_s 4
    paths = resolve_paths(tmp_path, None, None)
    study = optuna.create_study(study_name="hb", storage=open_storage(paths.storage, sweep))
    trial = next_trial(study, paths, n_trials=1)
    assert trial is not None
    trial.suggest_int("group_size", 2, 4)
    with heartbeat(study, trial):
        time.sleep(1.5)
    assert next_trial(study, paths, n_trials=1) is None  # the running trial holds the only slot
    time.sleep(sweep.config.grace_s + 1)
    retry = next_trial(study, paths, n_trials=1)  # fails the stale trial, then pops its retry
    assert retry is not None and retry.number == 1
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {0: optuna.trial.TrialState.FAIL, 1: optuna.trial.TrialState.RUNNING}
    assert study.trials[1].params == study.trials[0].params


def test_a_worker_that_dies_before_its_heartbeat_thread_starts_does_not_hang_the_sweep(tmp_path: Path) -> None:
    """A trial asked for and never beaten for (the worker was killed between ``ask`` and its
    heartbeat thread: CI once hung 15 minutes on this) is still failed after the grace period and
    retried: Optuna only fails trials that have a heartbeat, so ``next_trial`` records one at once."""
    from spogw.harness.sweeps.storage import open_storage, resolve_paths
    from spogw.harness.sweeps.study import next_trial

    sweep = load_sweep(SMALL_SWEEP)
    paths = resolve_paths(tmp_path, None, None)
    study = optuna.create_study(study_name="dead", storage=open_storage(paths.storage, sweep))
    trial = next_trial(study, paths, n_trials=1)
    assert trial is not None
    trial.set_user_attr("run_dir", "killed here")  # the last thing a killed worker did
    time.sleep(sweep.config.grace_s + 1)
    retry = next_trial(study, paths, n_trials=1)
    assert retry is not None and study.trials[0].state == optuna.trial.TrialState.FAIL


def test_importances_cover_parameters_whose_range_the_constraints_moved() -> None:
    """group_size is drawn from [2, num_samples], a range that changes between trials; Optuna would
    leave it out of the importances. Against the declared ranges it is assessed, and it carries the
    signal planted in the objective."""
    from spogw.reports.sweep import declared_space_copy, importances

    sweep = load_sweep(REPO / "experiments" / "sweep_spogw.yaml")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        values = suggest(trial, sweep.config.space, sweep.config.linear_constraints())
        study.tell(trial, values["group_size"] / 8 + 0.001 * values["beta"])
    weights = importances(declared_space_copy(study, sweep))
    assert set(weights) == set(sweep.config.space) and max(weights, key=weights.get) == "group_size"


def test_an_infeasible_trial_is_told_pruned_and_never_run(tmp_path: Path) -> None:
    """t >= 3 with n <= 4 breaks 2t <= n for every draw: the trial is PRUNED with the reason and
    no experiment starts (no trial folder, no MLflow run)."""
    from spogw.harness.sweeps.storage import resolve_paths
    from spogw.harness.sweeps.study import create_or_load, next_trial, run_trial

    sweep = load_sweep(SMALL_SWEEP, ["space.sharpen_t.low=3", "space.sharpen_t.high=4"])
    paths = resolve_paths(tmp_path, None, None)
    study = create_or_load(sweep, paths, worker=False, worker_offset=0)
    trial = next_trial(study, paths, n_trials=1)
    assert trial is not None
    run_trial(study, trial, sweep, paths, log=lambda _: None)
    (frozen,) = study.trials
    assert (
        frozen.state == optuna.trial.TrialState.PRUNED
        and "2 * sharpen_t <= group_size" in frozen.user_attrs["infeasible"]
    )
    assert not (tmp_path / "trials").exists()


def test_a_pruned_trial_shows_no_objective_value_and_few_trials_show_no_importances() -> None:
    """Optuna copies a pruned trial's last intermediate value into its value; the report shows it
    only as that, labelled. fANOVA importances appear from MIN_IMPORTANCE_TRIALS complete trials on;
    below, the section says why they are not shown."""
    from spogw.reports.sweep import MIN_IMPORTANCE_TRIALS, declared_space_copy, importance_section, trials_table

    sweep = load_sweep(SMALL_SWEEP)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def draw() -> tuple[optuna.Trial, dict[str, Any]]:
        trial = study.ask()
        return trial, suggest(trial, sweep.config.space, sweep.config.linear_constraints())

    trial, values = draw()
    study.tell(trial, values["group_size"] / 4)
    pruned, _ = draw()
    pruned.report(0.4, 1)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[1].value == 0.4  # what Optuna stores, and what the report used to print as the value
    table = trials_table(study).set_index("trial")
    assert table.loc[1, "state"] == "PRUNED" and pd.isna(table.loc[1, "value"])
    assert table.loc[1, "last_intermediate"] == "0.4000 at step 1 (before pruning)"
    assert table.loc[0, "value"] == study.trials[0].value and table.loc[0, "last_intermediate"] == ""
    few = importance_section(declared_space_copy(study, sweep)).markdown
    assert few.startswith("Not shown: 1 complete trial;") and "importance |" not in few
    while len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) < MIN_IMPORTANCE_TRIALS:
        trial, values = draw()
        study.tell(trial, values["group_size"] / 4 + 0.01 * values["beta"])
    enough = importance_section(declared_space_copy(study, sweep)).markdown
    assert "| parameter | importance |" in enough and f"over {MIN_IMPORTANCE_TRIALS} complete trials" in enough


def _parent_run(run_dir: Path) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweep_small").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    return parent


def test_a_sweep_that_dies_ends_its_mlflow_run_killed_or_failed(tmp_path: Path) -> None:
    """A sweep interrupted (Ctrl-C) ends its parent run KILLED, with the trial counts; resumed, the
    same run is RUNNING again, and when the sweep stops on an error (its only trial was infeasible)
    it ends FAILED. No trial runs an experiment."""
    from spogw.harness.sweeps.study import run_sweep

    sweep = load_sweep(SMALL_SWEEP, ["space.sharpen_t.low=3", "space.sharpen_t.high=4", "n_trials=1"])

    def interrupt(_: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, tmp_path, log=interrupt)
    killed = _parent_run(tmp_path)
    assert killed.info.status == "KILLED"
    assert killed.data.metrics == {
        "trials_complete": 0.0, "trials_pruned": 1.0, "trials_infeasible": 1.0, "trials_failed": 0.0,
        "trials_total": 1.0,
    }  # fmt: skip
    with pytest.raises(ValueError, match="were infeasible"):
        run_sweep(sweep, tmp_path, log=lambda _: None)
    failed = _parent_run(tmp_path)
    assert failed.info.run_id == killed.info.run_id and failed.info.status == "FAILED"


def test_a_service_that_is_down_stops_the_sweep_and_endless_failures_stop_it_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed trials are replaced by new draws; when the executor is down every draw would fail,
    so the sweep stops at the first (exit 3 from the CLI), and a failure every configuration hits
    stops it once as many trials failed as it was to complete, instead of looping forever. A worker
    checks the tracking server before it joins."""
    import spogw.harness.runner as runner
    import spogw.harness.sweeps.study as study_module
    from spogw.harness.executors.base import ExecutorUnavailable
    from spogw.harness.sweeps.study import run_sweep
    from spogw.harness.tracking import TrackingUnavailable

    sweep = load_sweep(SMALL_SWEEP, ["n_trials=2"])
    calls: list[str] = []

    def executor_down(*args: Any, **kwargs: Any) -> None:
        calls.append("down")
        raise ExecutorUnavailable("sim: 8 calls failed in a row")

    monkeypatch.setattr(runner, "run_experiment", executor_down)
    with pytest.raises(ExecutorUnavailable):
        run_sweep(sweep, tmp_path / "down", log=lambda _: None)
    assert calls == ["down"] and _parent_run(tmp_path / "down").info.status == "FAILED"

    def always_fails(*args: Any, **kwargs: Any) -> None:
        calls.append("bug")
        raise RuntimeError("every configuration hits this")

    monkeypatch.setattr(runner, "run_experiment", always_fails)
    stop = r"the last 2 trials of sweep 'sweep_small' failed, as many as it was to complete \(2\)"
    with pytest.raises(ValueError, match=stop):
        run_sweep(sweep, tmp_path / "failing", log=lambda _: None)
    assert calls.count("bug") == 2

    # the cause fixed, the same sweep resumes and completes its trials (failures are counted in a row)
    def completes(config: Any, run_dir: Path, **kwargs: Any) -> Path:
        calls.append("ok")
        return run_dir

    monkeypatch.setattr(runner, "run_experiment", completes)
    monkeypatch.setattr(study_module, "objective_value", lambda *args: 0.5)
    monkeypatch.setattr(study_module, "_log_rollouts", lambda *args: None)
    resumed = run_sweep(sweep, tmp_path / "failing", log=lambda _: None)
    assert calls.count("ok") == 2
    assert len(resumed.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2

    start = time.perf_counter()
    with pytest.raises(TrackingUnavailable):
        run_sweep(sweep, tmp_path / "worker", mlflow_uri="http://127.0.0.1:9", worker=True, log=lambda _: None)
    assert time.perf_counter() - start < 30 and not (tmp_path / "worker" / "trials").exists()


# ----------------------------------------------------------------------------------------------
# Whole sweeps


def _spogw(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "spogw.harness.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a kill reaches the worker's pool processes too
        **kwargs,
    )


def test_a_sweep_on_sqlite_runs_exactly_n_trials_and_reports(tmp_path: Path, spogw_cache: Path) -> None:
    from mlflow.tracking import MlflowClient

    process = _spogw("sweep", str(SMALL_SWEEP), "--run-dir", str(tmp_path / "sweep"))
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    study = optuna.load_study(study_name="sweep_small", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 3 and set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    for trial in study.trials:
        if "infeasible" not in trial.user_attrs:
            assert 2 * trial.params["sharpen_t"] <= trial.params["group_size"]
    report = (tmp_path / "sweep" / "report.md").read_text()
    for part in ("## Trials", "Best: trial", "## Best configuration on fresh seeds", "best_experiment.yaml"):
        assert part in report, part
    assert (tmp_path / "sweep" / "report" / "sweep_history.png").stat().st_size > 1000
    assert "data:image/png;base64," in (tmp_path / "sweep" / "report.html").read_text()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweep_small").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    trial_runs = [r for r in runs if "optuna.trial" in r.data.tags]
    assert len(trial_runs) == 3 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trial_runs)
    assert all(r.info.status == "FINISHED" for r in trial_runs)
    methods = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {t.info.run_id for t in trial_runs}]
    assert len(methods) == 3 * 2  # spogw and the baseline, one seed, nested under each trial
    # the sweep's own run ends with the sweep: FINISHED, its counts and best value, the report attached
    assert parent.info.status == "FINISHED"
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert parent.data.metrics["trials_complete"] == len(complete)
    assert parent.data.metrics["trials_pruned"] == 3 - len(complete) and parent.data.metrics["trials_failed"] == 0
    if complete:
        assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    attached = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html", "results.tex", "report"} <= attached


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    return found


@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[str, str]]:
    """A PostgreSQL server for this module on 127.0.0.1 (databases optuna and mlflow), run as the
    postgres user when the tests run as root (the server refuses root)."""
    initdb, pg_ctl, createdb = _pg_bin("initdb"), _pg_bin("pg_ctl"), _pg_bin("createdb")
    if not (initdb and pg_ctl and createdb):
        pytest.fail("PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does)")
    root = os.geteuid() == 0
    as_user = ["runuser", "-u", "postgres", "--"] if root else []
    data = Path(tempfile.mkdtemp(prefix="spogw-pg-", dir="/tmp"))
    if root:
        shutil.chown(data, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        [*as_user, initdb, "-D", str(data / "db"), "-U", "spogw", "--auth=trust"], check=True, capture_output=True
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=100"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data / "db"), "-o", options, "-l", str(data / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        for database in ("optuna", "mlflow"):
            subprocess.run(
                [*as_user, createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "spogw", database], check=True
            )
        base = f"postgresql+psycopg2://spogw@127.0.0.1:{port}"
        yield f"{base}/optuna", f"{base}/mlflow"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data / "db"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _wait_for_study(storage: str, name: str, timeout: float = 300) -> optuna.Study:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            time.sleep(0.5)
    raise TimeoutError(f"study {name} never appeared")


@pytest.mark.slow
def test_two_workers_on_postgres_finish_exactly_n_trials_and_a_killed_one_is_retried(
    tmp_path: Path, spogw_cache: Path, postgres: tuple[str, str]
) -> None:
    """Worker A starts the study, worker B joins; B is killed (SIGKILL, with its pool) in the middle
    of a trial. After the grace period that trial is FAIL and its retry runs; the study ends with
    exactly N finished trials, none RUNNING, and every trial is a nested MLflow run of the sweep."""
    from mlflow.tracking import MlflowClient

    storage, mlflow_uri = postgres
    n = 4
    common = ["--storage", storage, "--mlflow-uri", mlflow_uri, "--n-trials", str(n), "--no-rerun"]
    first = _spogw("sweep", str(SMALL_SWEEP), "--run-dir", str(tmp_path / "a"), *common)
    study = _wait_for_study(storage, "sweep_small")
    second = _spogw("sweep", str(SMALL_SWEEP), "--run-dir", str(tmp_path / "b"), "--worker", *common)
    deadline = time.monotonic() + 600
    killed = None
    while time.monotonic() < deadline and killed is None and second.poll() is None:
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if str(tmp_path / "b") in trial.user_attrs.get("run_dir", ""):
                os.killpg(second.pid, signal.SIGKILL)
                killed = trial.number
                break
        time.sleep(0.2)
    second.wait(timeout=60)
    output, _ = first.communicate(timeout=900)
    assert first.returncode == 0, output
    assert killed is not None, "worker B never ran a trial"
    trials = optuna.load_study(study_name="sweep_small", storage=storage).trials
    states = {t.number: t.state for t in trials}
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert states[killed] == optuna.trial.TrialState.FAIL
    assert optuna.trial.TrialState.RUNNING not in states.values()
    assert len(finished) == n, states
    retried = [t for t in finished if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].params == next(t.params for t in trials if t.number == killed)
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("sweep_small").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    trial_runs = {
        r.data.tags["optuna.trial"] for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert {str(t.number) for t in finished} <= trial_runs


def test_a_changed_sweep_is_refused_with_its_differences_and_force_new_starts_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sweep folder's study keeps the definition it was started with; the same folder with a
    changed range or base executor is refused before any trial runs (exit 2, the differences
    listed), more trials or another re-run are not a change, and --force-new moves the old sweep
    aside."""
    from spogw.harness.cli import main
    from spogw.harness.sweeps.config import load_sweep
    from spogw.harness.sweeps.storage import resolve_paths
    from spogw.harness.sweeps.study import _start_over, create_or_load

    run_dir = tmp_path / "sweep"
    create_or_load(load_sweep(SMALL_SWEEP), resolve_paths(run_dir, None, None), False, 0)
    for change, shown in (
        ("space.beta.high=0.9", "space.beta.high: 0.5 -> 0.9"),
        ("set.executor.profile=weak", "base_experiment.executor.profile: 'medium' -> 'weak'"),
    ):
        assert main(["sweep", str(SMALL_SWEEP), "--run-dir", str(run_dir), "--set", change]) == 2
        err = capsys.readouterr().err
        assert "was started with another sweep definition" in err and shown in err and "--force-new" in err
    assert not (run_dir / "trials").exists()
    unchanged = load_sweep(SMALL_SWEEP, ["n_trials=5", "rerun.seeds=[8]"])
    create_or_load(unchanged, resolve_paths(run_dir, None, None), False, 0)  # not a change of what trials run
    changed = load_sweep(SMALL_SWEEP, ["space.beta.high=0.9"])
    _start_over(changed, run_dir, None, print)  # what --force-new does before the study is opened
    assert not run_dir.exists() and [p.name.startswith("sweep.old-") for p in tmp_path.iterdir()] == [True]
