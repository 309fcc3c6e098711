"""Running a sweep: an Optuna study whose trials are experiments, on one process or many.

Storage: sqlite in the run folder by default; ``--storage postgresql://...`` (or any SQLAlchemy
URL) for workers on several machines; ``journal:PATH`` for an Optuna journal file. Every worker
runs the same loop:

1. fail the RUNNING trials of dead workers (no heartbeat for ``grace_s``: RDB storages); each is
   retried once, as a WAITING copy with the same parameters;
2. under a study-wide lock (PostgreSQL advisory lock, or a file lock beside a file storage), count
   the trials that are done, running or waiting; below ``n_trials``, ask for one (a WAITING retry
   first). The lock makes the cap exact across workers: N trials, never N + 1;
3. draw the parameters within the constraints (an infeasible draw is told PRUNED, never run), run
   the experiment in ``<run_dir>/trials/trial-NNNN`` with its heartbeat going, report the objective
   method's test score at each (seed, iteration) step to the pruner, and tell the objective.

A worker whose loop ends waits until no trial is running, picking up retries, so a study ends
with every trial finished. Each trial is an MLflow run nested under the sweep's parent run (whose
id the study keeps as a user attribute), with the experiment's method x seed runs nested under it.
The parent run ends FAILED or KILLED here when the starting process stops on an error or an
interruption, and FINISHED when the sweep report is written (harness/sweeps/parent_run.py).
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from spogw.harness.errors import InputError, ServiceUnavailable
from spogw.harness.sweeps.config import Sweep
from spogw.harness.sweeps.objective import objective_value
from spogw.harness.sweeps.parent_run import PARENT_ATTR, end_parent_run, ending_status, start_parent_run
from spogw.harness.sweeps.space import Infeasible, suggest
from spogw.harness.sweeps.storage import SweepPaths, first_heartbeat, heartbeat, open_storage, resolve_paths, study_lock
from spogw.harness.tracking import require_server

if TYPE_CHECKING:
    from spogw.harness.runner import Finisher

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
"""Trials that count against n_trials (a FAIL does not: its retry does)."""


def make_sampler(sweep: Sweep, worker_offset: int) -> optuna.samplers.BaseSampler:
    config = sweep.config.sampler
    seed = config.seed + worker_offset
    if config.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.n_startup_trials)


def make_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    config = sweep.config.pruner
    if config.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps)


DEFINITION_ATTR = "sweep_definition"


def refuse_changed_definition(study: optuna.Study, sweep: Sweep, paths: SweepPaths) -> None:
    """Raise ValueError listing the differences when the study was started with another definition:
    new trials would run under another configuration beside the old ones, in one study."""
    import json

    from spogw.harness.run_folder import config_differences

    stored = study.user_attrs.get(DEFINITION_ATTR)
    current = sweep.definition()
    if stored is None:
        study.set_user_attr(DEFINITION_ATTR, json.dumps(current, sort_keys=True))
        return
    differences = config_differences(json.loads(stored), current)
    if differences:
        raise InputError(
            f"{sweep.source}: study {sweep.config.name!r} in {paths.storage} was started with another sweep "
            f"definition:\n  " + "\n  ".join(differences) + "\nRun it with the sweep file it was started with, "
            "or --force-new to move the old sweep aside (another --run-dir or study name also starts afresh)."
        )


def create_or_load(sweep: Sweep, paths: SweepPaths, worker: bool, worker_offset: int) -> optuna.Study:
    storage = open_storage(paths.storage, sweep)
    sampler, pruner = make_sampler(sweep, worker_offset), make_pruner(sweep)
    name = sweep.config.name
    if worker:
        try:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            raise InputError(
                f"--worker: no study {name!r} in {paths.storage}; start it without --worker first"
            ) from None
    else:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=sweep.config.direction,
            load_if_exists=True,
        )
    refuse_changed_definition(study, sweep, paths)
    if not worker:
        start_parent_run(study, sweep, paths)
    return study


def next_trial(study: optuna.Study, paths: SweepPaths, n_trials: int) -> optuna.Trial | None:
    """A trial to run (a WAITING retry first), or None when the study has n_trials already."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    with study_lock(paths.storage, study.study_name):
        trials = study.get_trials(deepcopy=False, states=COUNTED)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if len(trials) >= n_trials and not waiting:
            return None
        with warnings.catch_warnings():  # we run the heartbeat ourselves (heartbeat()), not Study.optimize
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = study.ask()
            first_heartbeat(study, trial)
            return trial


def _tracked_experiment(
    sweep: Sweep, params: dict[str, Any], paths: SweepPaths, suffix: str, seeds: list[int] | None = None
) -> dict[str, Any]:
    """A sweep experiment (a trial, or the best config's re-run) named ``<sweep>.<suffix>`` and
    tracked in the sweep's MLflow experiment."""
    data = sweep.experiment_data(params, seeds)
    data.setdefault("tracking", {}).update(uri=paths.mlflow_uri, experiment_name=sweep.config.name)
    data["name"] = f"{sweep.config.name}.{suffix}"
    return data


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    sweep: Sweep,
    paths: SweepPaths,
    log: Callable[[str], None],
    finish: Finisher | None = None,
) -> None:
    """Draw, run and tell one trial (``finish``: what ends each trial's run, e.g. its report)."""
    from spogw.harness.config import ConfigError
    from spogw.harness.runner import run_experiment

    try:
        params = suggest(trial, sweep.config.space, sweep.config.linear_constraints())
    except BaseException as err:
        if not isinstance(err, Infeasible):
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr("infeasible", str(err))
        study.tell(trial, state=TrialState.PRUNED)
        log(f"trial {trial.number}: infeasible, not run ({err})")
        return
    trial_dir = paths.run_dir / "trials" / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(trial_dir))
    data = _tracked_experiment(sweep, params, paths, f"trial-{trial.number:04d}")
    objective = sweep.config.objective
    iterations = int(data.get("iterations", 3))

    def on_evaluated(label: str, seed: int, iteration: int, metrics: dict[str, float]) -> None:
        if label != objective.method or "test_score" not in metrics:
            return
        step = objective.seeds.index(seed) * (iterations + 1) + iteration
        trial.report(metrics["test_score"], step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"test score {metrics['test_score']:.3f} at seed {seed}, iteration {iteration}")

    from spogw.harness.config import validate

    log(f"trial {trial.number}: {params}")
    with heartbeat(study, trial):
        try:
            config = validate(data, f"{sweep.source} trial {trial.number}")
            run_experiment(
                config,
                trial_dir,
                progress=False,
                force_new=True,
                tracking_parent=study.user_attrs.get(PARENT_ATTR),
                tracking_tags={"optuna.trial": str(trial.number), "optuna.study": study.study_name},
                tracking_params={f"sweep.{k}": v for k, v in params.items()},
                on_evaluated=on_evaluated,
                finish=finish,
            )
            value = objective_value(trial_dir, objective)
            _log_rollouts(trial_dir, paths, sweep.config.name)
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("pruned", str(pruned))
            study.tell(trial, state=TrialState.PRUNED)
            log(f"trial {trial.number}: pruned ({pruned})")
            return
        except ServiceUnavailable:  # the executor or tracking server is down: every trial would fail
            study.tell(trial, state=TrialState.FAIL)
            raise
        except (ConfigError, ValueError, RuntimeError) as err:  # this configuration fails: the sweep goes on
            trial.set_user_attr("error", "".join(traceback.format_exception_only(err)).strip()[:2000])
            study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number}: failed ({err})")
            return
        except BaseException:  # a bug or Ctrl-C: never leave the trial RUNNING, then stop loudly
            study.tell(trial, state=TrialState.FAIL)
            raise
    study.tell(trial, value)
    log(f"trial {trial.number}: objective {value:.4f}")


def _log_rollouts(trial_dir: Path, paths: SweepPaths, experiment: str) -> None:
    """The trial's rollouts and evaluation rows (parquet) as artifacts of its MLflow run, beside the
    per-item scores and report the runner logged."""
    from spogw.harness.run_folder import export
    from spogw.harness.tracking import Tracker

    tracker = Tracker(trial_dir, experiment, paths.mlflow_uri)
    for path in export(trial_dir):
        tracker.log_artifact(tracker.parent_id, path, "tables")


def run_sweep(
    sweep: Sweep,
    run_dir: Path,
    storage: str | None = None,
    mlflow_uri: str | None = None,
    n_trials: int | None = None,
    worker: bool = False,
    log: Callable[[str], None] = print,
    finish: Finisher | None = None,
    force_new: bool = False,
) -> optuna.Study:
    """Run trials until the study holds ``n_trials`` (default: the sweep's) finished ones;
    ``finish`` ends each trial's run (the CLI passes the report writer). A study started with
    another definition is refused (ValueError) unless ``force_new``: then the old sweep folder is
    moved aside and the old study deleted from its storage."""
    if force_new and not worker:
        _start_over(sweep, run_dir, storage, log)
    paths = resolve_paths(run_dir, storage, mlflow_uri)
    require_server(paths.mlflow_uri)  # workers too: a dead server fails now, not after a trial's work
    total = n_trials or sweep.config.n_trials
    offset = (os.getpid() % 997) * 7919 if worker else 0  # workers must not draw the same random startup points
    study = create_or_load(sweep, paths, worker, offset)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    announced: set[int] = set()
    try:
        while True:
            trial = next_trial(study, paths, total)
            if trial is not None:
                run_trial(study, trial, sweep, paths, log, finish)
                refuse_endless_failures(study, sweep, total)
                continue
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                refuse_all_infeasible(study, sweep)
                return study
            waited = sorted({t.number for t in running} - announced)
            if waited:  # a log line per trial waited on, so a sweep that waits long says what for
                announced.update(waited)
                log(
                    f"waiting for trial(s) {waited} of another worker (a dead worker's trial fails "
                    f"{sweep.config.grace_s} s after its last heartbeat and is retried)"
                )
            time.sleep(max(1, sweep.config.heartbeat_s))  # another worker's trial: wait for it, or for its retry
    except BaseException as err:
        if not worker:  # the sweep dies with its starting process; a worker's end is not the sweep's
            end_parent_run(paths.run_dir, study, ending_status(err), mlflow_uri=paths.mlflow_uri)
        raise


def _start_over(sweep: Sweep, run_dir: Path, storage: str | None, log: Callable[[str], None]) -> None:
    if storage is not None:  # a shared server: the old study goes; its trials' folders move with run_dir
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=sweep.config.name, storage=storage)
            log(f"deleted study {sweep.config.name!r} from {storage}")
    if run_dir.exists():
        from spogw.harness.run_folder import move_aside

        log(f"moved the previous sweep folder to {move_aside(run_dir)}")


def refuse_endless_failures(study: optuna.Study, sweep: Sweep, total: int) -> None:
    """Raise InputError once as many trials in a row failed as the sweep was to complete: failed
    trials are not counted (another draw replaces each), so a failure every configuration hits
    would loop forever. In a row: since the last trial that completed or was pruned, so a sweep
    stopped this way resumes once the cause is fixed, and configurations that fail now and then
    never stop it. The message gives the last trial's error."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    failed: list[optuna.trial.FrozenTrial] = []
    for trial in reversed(trials):
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            break
        if trial.state == TrialState.FAIL and "error" in trial.user_attrs:
            failed.append(trial)
    if len(failed) < total:
        return
    last = failed[0]
    raise InputError(
        f"{sweep.source}: the last {len(failed)} trials of sweep {sweep.config.name!r} failed, as many as it was "
        f"to complete ({total}); the sweep stops. Last error (trial {last.number}): {last.user_attrs['error']}"
    )


def refuse_all_infeasible(study: optuna.Study, sweep: Sweep) -> None:
    """Raise ValueError when every finished trial of the study was infeasible: the constraints
    leave no point of the space, and a sweep that ran nothing must not look like a success."""
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    if not finished or any("infeasible" not in t.user_attrs for t in finished):
        return
    constraints = "; ".join(sweep.config.constraints) or "(none)"
    raise InputError(
        f"{sweep.source}: all {len(finished)} trials of sweep {sweep.config.name!r} were infeasible, none ran "
        f"(constraints: {constraints}; first reason: {finished[0].user_attrs['infeasible']}). "
        "Widen the parameter ranges or relax the constraints."
    )


def rerun_best(
    sweep: Sweep, study: optuna.Study, run_dir: Path, mlflow_uri: str | None = None, finish: Finisher | None = None
) -> Path | None:
    """The best trial's configuration on the sweep's fresh seeds, in ``<run_dir>/best`` (resumable),
    evaluated on rerun.split; None when there is no completed trial or no re-run seed."""
    from spogw.harness.config import validate
    from spogw.harness.runner import run_experiment

    seeds = sweep.config.rerun.seeds
    if not seeds or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    data = _tracked_experiment(sweep, best.params, resolve_paths(run_dir, None, mlflow_uri), "best", seeds)
    data.setdefault("evaluation", {})["split"] = sweep.config.rerun.split
    config = validate(data, f"{sweep.source} (best trial {best.number})")
    try:
        return run_experiment(
            config,
            run_dir / "best",
            progress=False,
            tracking_parent=study.user_attrs.get(PARENT_ATTR),
            tracking_tags={"optuna.best_trial": str(best.number)},
            tracking_params={f"sweep.{k}": v for k, v in best.params.items()},
            finish=finish,
        )
    except BaseException as err:
        end_parent_run(run_dir, study, ending_status(err), mlflow_uri=mlflow_uri)
        raise
