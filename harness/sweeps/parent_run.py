"""The sweep's MLflow parent run, from its start to its end.

The process that creates the study starts the run (tag ``kind=sweep``, the sweep file as params)
and keeps its id as a study user attribute, so workers on other machines nest their trials under it;
resuming the sweep from that folder sets it RUNNING again. The run ends with the sweep: FINISHED
when the sweep report is written (reports/sweep.py), FAILED when the sweep stops on an error,
KILLED when it is interrupted (Ctrl-C). Either way it gets the trial counts as metrics
(``trials_complete``, ``trials_pruned``, ``trials_infeasible`` (pruned before running),
``trials_failed``, ``trials_total``) and ``best_value`` once a trial is complete; at FINISHED also
the report as artifacts. A ``--worker`` process never ends it: the sweep goes on without it.

Where the run lives (the MLflow URI) is recorded in ``<sweep folder>/sweep_tracking.json`` so that
the report writer, given only the folder, ends it in the same store. The same URI is already in
every trial's config.resolved.yaml.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from optuna.trial import TrialState

from spogw.harness.atomic import atomic_write_text

if TYPE_CHECKING:
    import optuna

    from spogw.harness.sweeps.config import Sweep
    from spogw.harness.sweeps.storage import SweepPaths

PARENT_ATTR = "mlflow_parent_run_id"
"""The study user attribute that holds the sweep's MLflow parent run id."""
RECORD = "sweep_tracking.json"


def start_parent_run(study: optuna.Study, sweep: Sweep, paths: SweepPaths) -> str | None:
    """Start the sweep's parent run, or set a resumed sweep's run RUNNING again; record its URI."""
    from spogw.harness.tracking import Tracker

    name = sweep.config.name
    tracker = Tracker(paths.run_dir, name, paths.mlflow_uri)
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent is None:
        parent = tracker.start_parent(name, sweep.config.model_dump(mode="json"), {"kind": "sweep"})
        if parent is not None:
            study.set_user_attr(PARENT_ATTR, parent)
    elif tracker.client is not None:
        from mlflow.exceptions import MlflowException

        try:
            tracker.client.update_run(parent, status="RUNNING")
        except MlflowException as err:  # the study's run lives in another MLflow store than this one
            warnings.warn(f"sweep {name}: parent run {parent} not reopened: {err}", stacklevel=2)
    record = {"mlflow_uri": paths.mlflow_uri, "parent_run_id": parent}
    atomic_write_text(paths.run_dir / RECORD, json.dumps(record, indent=2) + "\n")
    return str(parent) if parent is not None else None


def trial_counts(study: optuna.Study) -> dict[str, float]:
    """The study's trials by state (an infeasible trial is PRUNED and is counted in both)."""
    trials = study.get_trials(deepcopy=False)
    return {
        "trials_complete": float(sum(t.state == TrialState.COMPLETE for t in trials)),
        "trials_pruned": float(sum(t.state == TrialState.PRUNED for t in trials)),
        "trials_infeasible": float(sum("infeasible" in t.user_attrs for t in trials)),
        "trials_failed": float(sum(t.state == TrialState.FAIL for t in trials)),
        "trials_total": float(len(trials)),
    }


def ending_status(error: BaseException) -> str:
    """KILLED for an interruption (Ctrl-C, a signal turned into SystemExit), FAILED for an error."""
    return "KILLED" if isinstance(error, KeyboardInterrupt | SystemExit) else "FAILED"


def end_parent_run(
    run_dir: Path,
    study: optuna.Study,
    status: str,
    artifacts: Sequence[tuple[Path, str | None]] = (),
    mlflow_uri: str | None = None,
) -> None:
    """Log the trial counts and the best value to the sweep's parent run, attach ``artifacts``
    ((path, folder in the run) pairs) and end it with ``status``. ``mlflow_uri``: where the run
    lives; None reads the sweep folder's record. No-op for a study without a parent run. Ending
    FAILED or KILLED, a tracking error is only warned about: the sweep is already stopping with its
    own error, and that one must reach the user."""
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent is None:
        return
    recorded = run_dir / RECORD
    if mlflow_uri is None and recorded.is_file():
        mlflow_uri = json.loads(recorded.read_text()).get("mlflow_uri")
    try:
        _end(run_dir, study, str(parent), status, artifacts, mlflow_uri)
    except Exception as err:
        if status == "FINISHED":
            raise
        warnings.warn(f"sweep {study.study_name}: parent run {parent} not ended as {status}: {err}", stacklevel=2)


def _end(
    run_dir: Path,
    study: optuna.Study,
    parent: str,
    status: str,
    artifacts: Sequence[tuple[Path, str | None]],
    mlflow_uri: str | None,
) -> None:
    from spogw.harness.tracking import Tracker

    tracker = Tracker(run_dir, study.study_name, mlflow_uri)
    metrics = trial_counts(study)
    if metrics["trials_complete"]:
        metrics["best_value"] = float(study.best_value)
    tracker.log_metrics(parent, metrics, 0)
    for path, folder in artifacts:
        tracker.log_artifact(parent, path, folder)
    tracker.finish(parent, status)
