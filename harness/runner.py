"""An experiment = methods x seeds x iterations of collect -> train -> evaluate, in one run folder.

This module orchestrates the (method, seed) cells; what runs is planned in harness/plan.py, the
folder is kept by harness/run_folder.py, a cell's work is harness/cell_work.py (held-out evaluation
harness/heldout.py, a trained cell's loop harness/train.py), its store shard harness/cells.py, and
harness/cluster.py runs the same cells as Ray tasks.

``<run_dir>`` holds everything a run produces, and everything it needs to resume:

    config.resolved.yaml   the experiment as validated (a re-run compares against it)
    rollouts.sqlite        tables rollouts, eval_items, iterations, steps, groups (harness/store.py), idempotent:
                           the union of the cells' shards, cells/<label>.seed<k>/rollouts.sqlite (harness/cells.py)
    checkpoints/<label>/seed<k>/iter<i>/   adapter + optimizer state at the start of iteration i
    done/<label>.seed<k>   marker: this method x seed is complete
    mlflow.db, mlartifacts/, tracking.json   MLflow (harness/tracking.py)
    item_scores.parquet    per (method, seed, iteration, benchmark, item): mean test score
    report.md, report.html the report (reports/report.py; results.tex, figures in report/)

Re-running the same command continues where a killed run stopped: finished runs are skipped, a
half-collected iteration collects only what is missing (the rollout store is keyed), training
restarts from the latest checkpoint with the same random state, and evaluation chunks already
stored are not run again. Every draw is keyed (sampling by (seed, iteration, question, sample),
the simulator by its call), so a resumed run writes the same rows an uninterrupted one would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spogw.harness import failpoints
from spogw.harness.cell_work import (
    EvaluationHook,
    ExperimentContext,
    cell_sync,
    run_search_cell,
    run_static,
    run_trainable,
)
from spogw.harness.config import ExperimentConfig, MethodSpec, executor_identity, method_config
from spogw.harness.console import RunProgress
from spogw.harness.plan import load_splits, select_methods, select_seeds
from spogw.harness.policy.model import decoding_mode
from spogw.harness.run_folder import (
    RESOLVED,
    default_run_dir,
    done_marker,
    prepare_run_dir,
    run_folder_lock,
    write_item_scores,
)

if TYPE_CHECKING:
    from spogw.harness.tracking import Tracker

__all__ = ["EvaluationHook", "ExperimentContext", "Finisher", "experiment_session", "finish_experiment", "follow_cell",
           "open_experiment", "run_cell", "run_experiment"]  # fmt: skip

Finisher = Callable[[Path, ExperimentConfig, "Tracker", "str | None"], object]
"""(run folder, experiment, tracker, parent MLflow run id) -> None: runs once every cell is done."""


def run_experiment(
    config: ExperimentConfig,
    run_dir: Path | None = None,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    force_new: bool = False,
    progress: bool = True,
    tracking_parent: str | None = None,
    tracking_tags: dict[str, str] | None = None,
    tracking_params: dict[str, Any] | None = None,
    on_evaluated: EvaluationHook | None = None,
    finish: Finisher | None = None,
    launch_token: str | None = None,
) -> Path:
    """Run (or resume) every method x seed of ``config`` in ``run_dir``; returns the run folder.

    When every cell is done, item_scores.parquet is written and ``finish(run_dir, config, tracker,
    parent_run_id)`` runs (the composition root passes the report writer, reports.report.finish_report:
    the harness itself never imports the reports).

    ``tracking_parent``: an MLflow run to nest the experiment's parent run under (a sweep's), with
    extra ``tracking_tags`` and ``tracking_params``. ``on_evaluated(label, seed, iteration, metrics)``
    is called after each held-out evaluation by the method's own executor; an exception it raises
    (a sweep's pruning) stops the run, and its MLflow runs are marked KILLED. ``launch_token``: rank 0
    of `accelerate launch` / torchrun, the launch's token (harness/launch.py)."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config.name)
    todo = [(spec, seed) for spec in select_methods(config, methods) for seed in select_seeds(config, seeds)]
    with run_folder_lock(run_dir):  # one process per run folder: a second one is told who holds it
        context = open_experiment(config, run_dir, len(todo), force_new, progress, tracking_parent, tracking_tags,
                                  tracking_params, on_evaluated)  # fmt: skip
        context.launch_token = launch_token
        with experiment_session(context):  # every cell in turn here; harness/cluster.py: as Ray tasks
            for spec, seed in todo:
                if done_marker(run_dir, spec.display_label, seed).exists():
                    context.progress.skipped()
                    sync = cell_sync(context, spec.display_label, seed)
                    if sync is not None:  # the other ranks of a launch stop waiting for it
                        sync.ended()
                    continue
                run_cell(context, spec, seed)
                context.progress.finished(spec.display_label, seed)
            finish_experiment(context, finish)
    return run_dir


@contextlib.contextmanager
def experiment_session(context: ExperimentContext) -> Iterator[None]:
    """Around a driver's work on its cells: a stopped run (an error, a sweep's pruning, Ctrl-C) must
    not stay RUNNING in MLflow (re-running resumes it), and the progress bar and run.log close."""
    try:
        yield
    except BaseException:
        context.tracker.finish(context.parent_run, "KILLED")
        raise
    finally:
        context.progress.close()


def open_experiment(
    config: ExperimentConfig,
    run_dir: Path,
    cells: int,
    force_new: bool = False,
    progress: bool = True,
    tracking_parent: str | None = None,
    tracking_tags: dict[str, str] | None = None,
    tracking_params: dict[str, Any] | None = None,
    on_evaluated: EvaluationHook | None = None,
) -> ExperimentContext:
    """Check the experiment's data and tracking server, prepare the run folder and start (or find)
    the experiment's parent MLflow run: what runs once, before any of its ``cells``."""
    from spogw.harness.cells import UNION
    from spogw.harness.store import SQLiteStore
    from spogw.harness.tracking import Tracker, require_server, tracking_uri

    splits = load_splits(config)
    require_server(tracking_uri(config.tracking.uri, run_dir))  # a dead server fails now, not after minutes
    prepare_run_dir(config, run_dir, force_new)
    SQLiteStore(run_dir / UNION).close()  # a damaged union is refused now, before any cell's work
    tracker = Tracker(run_dir, config.tracking.experiment_name or config.name, config.tracking.uri)
    parent = tracker.start_parent(
        config.name,
        {**config.model_dump(mode="json"), **(tracking_params or {})},
        {"simulated": config.simulation().tag, **_identity(config), **(tracking_tags or {})},
        nested_under=tracking_parent,
    )
    tracker.log_artifact(parent, run_dir / RESOLVED)
    bar = RunProgress(config.name, cells, run_dir, enabled=progress)
    return ExperimentContext(config, run_dir, splits, tracker, parent, bar, on_evaluated, bars=progress)


def _identity(config: ExperimentConfig) -> dict[str, str]:
    return {
        "executor": executor_identity(config.executor),
        "generator": config.generator.model or config.generator.name,
        "decoding": decoding_mode(config.generator),
    }


def run_cell(context: ExperimentContext, spec: MethodSpec, seed: int, merge: bool = True) -> None:
    """Run (or resume) one cell in this process: its shard written under the cell's lock, its nested
    MLflow run, its done marker. ``merge``: its shard is merged into the run folder's union however
    it stops (a Ray task leaves that to the driver: one host writes the union, also on NFS)."""
    from spogw.harness import cells
    from spogw.methods.config import method_kind
    from spogw.methods.static import StaticConfig

    config, run_dir = context.config, context.run_dir
    cell = cells.Cell(spec.display_label, seed)
    method = method_config(spec)
    run_id: str | None = None
    with cells.cell_lock(run_dir, cell):
        if done_marker(run_dir, cell.label, seed).exists():
            return  # a retried task whose first run finished (killed after its marker)
        store = cells.open_shard(run_dir, cell)
        labels = {*context.untrained_twins.get(cell.label, ()), *context.collection_twins.get(cell.label, ())}
        twins = cells.twin_shards(run_dir, sorted(labels), seed)
        try:
            run_id = context.tracker.start_child(
                context.parent_run,
                spec.display_label,
                seed,
                {"method": spec.name, **method.model_dump(mode="json")},
                {
                    "simulated": str(config.simulation().methods[spec.display_label]).lower(),
                    **_identity(config),
                    "executor": executor_identity(config.executor_for(spec)),
                },
            )
            if isinstance(method, StaticConfig):
                asyncio.run(run_static(context, store, spec, method, seed, run_id))
            elif method_kind(method) == "search":
                asyncio.run(run_search_cell(context, store, spec, method, seed, run_id))
            else:
                asyncio.run(run_trainable(context, store, twins, spec, method, seed, run_id))
            context.tracker.finish(run_id)
            run_id = None
            marker = done_marker(run_dir, spec.display_label, seed)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            failpoints.hit("run.method_done")
        except BaseException:
            context.tracker.finish(run_id, "KILLED")
            raise
        finally:
            cells.close_all(twins)
            store.close()
            if merge:
                cells.merge(run_dir, [cell])


def finish_experiment(context: ExperimentContext, finish: Finisher | None) -> None:
    """Every cell is done: the union merged from every shard, item_scores.parquet, ``finish`` (the
    report), the parent MLflow run finished."""
    from spogw.harness import cells
    from spogw.harness.store import SQLiteStore

    bar, run_dir = context.progress, context.run_dir
    bar.close_bar()
    bar.note("every cell done; writing item_scores.parquet and the report")
    with SQLiteStore(cells.merge(run_dir)) as store:
        write_item_scores(run_dir, store)
    context.tracker.log_artifact(context.parent_run, run_dir / "item_scores.parquet")
    if finish is not None:
        finish(run_dir, context.config, context.tracker, context.parent_run)
    context.tracker.finish(context.parent_run)


def follow_cell(config: ExperimentConfig, run_dir: Path | None, spec: MethodSpec, seed: int, token: str) -> None:
    """A rank other than 0 of `accelerate launch` / torchrun (harness/launch.py): join the update
    steps of the cell rank 0 runs; nothing tracked. Rank 0 decides everything (where the cell
    starts, or that it was done already) and says so through the cell's sync files."""
    from spogw.harness.cell_work import follow_trainable
    from spogw.harness.tracking import Tracker

    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config.name)
    tracker = Tracker(run_dir, config.name, config.tracking.uri, enabled=False)
    progress = RunProgress(config.name, 1, None, enabled=False)
    context = ExperimentContext(config, run_dir, load_splits(config), tracker, None, progress, bars=False)
    context.launch_token = token
    asyncio.run(follow_trainable(context, spec, method_config(spec), seed))
