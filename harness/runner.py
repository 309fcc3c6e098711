"""An experiment = methods x seeds x iterations of collect -> train -> evaluate, in one run folder.

This module orchestrates the (method, seed) cells; what runs is planned in harness/plan.py, the
folder is kept by harness/run_folder.py, held-out evaluation is harness/heldout.py, and a trained
cell's loop is harness/train.py.

``<run_dir>`` holds everything a run produces, and everything it needs to resume:

    config.resolved.yaml   the experiment as validated (a re-run compares against it)
    rollouts.sqlite        tables rollouts, eval_items, iterations, steps, groups (harness/store.py), idempotent
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
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spogw.harness import failpoints, plan
from spogw.harness.config import (
    ExecutorConfig,
    ExperimentConfig,
    MethodSpec,
    executor_identity,
    method_config,
)
from spogw.harness.console import RunProgress, say
from spogw.harness.heldout import EvalTarget, evaluate_generator, evaluate_static
from spogw.harness.plan import BenchmarkSplit, load_splits, phase_counts, select_methods, select_seeds
from spogw.harness.policy.model import decoding_mode
from spogw.harness.run_folder import (
    RESOLVED,
    default_run_dir,
    done_marker,
    prepare_run_dir,
    record_generator,
    run_folder_lock,
    write_item_scores,
)

if TYPE_CHECKING:
    from spogw.harness.policy.sampling import SamplingParams
    from spogw.harness.store import SQLiteStore
    from spogw.harness.tracking import Tracker
    from spogw.harness.workflows.engine import WorkflowEngine

EvaluationHook = Callable[[str, int, int, dict[str, float]], None]
"""(method label, seed, iteration, metrics of that evaluation) -> None."""
Finisher = Callable[[Path, ExperimentConfig, "Tracker", "str | None"], object]
"""(run folder, experiment, tracker, parent MLflow run id) -> None: runs once every cell is done."""


@dataclass
class ExperimentContext:
    config: ExperimentConfig
    run_dir: Path
    splits: list[BenchmarkSplit]
    store: SQLiteStore
    tracker: Tracker
    parent_run: str | None
    progress: RunProgress
    on_evaluated: EvaluationHook | None = None
    """Called with (label, seed, iteration, metrics) after each evaluation by the method's own executor."""
    bars: bool = True
    """Progress bars inside phases (drawn only on a terminal); False with --quiet."""
    notice: Callable[[str], None] = field(default=say)
    """Says something the user must know now (a run that cannot learn): stderr and run.log."""

    @functools.cached_property
    def untrained_twins(self) -> dict[str, tuple[str, ...]]:
        """Per trained method, the trained methods whose iteration-0 evaluation (the untrained
        generator) is its own: the same executor and sampling (rows are copied, not recomputed)."""
        return plan.untrained_twins(self.config)

    @functools.cached_property
    def collection_twins(self) -> dict[str, tuple[str, ...]]:
        """Per trained method, the twins whose iteration-0 rollouts are its own
        (harness.plan.collection_twins): copied from the store, not collected again."""
        return plan.collection_twins(self.config)


def no_update_notice(label: str, seed: int, summary: Any) -> str:
    """The console line for an iteration that made no update: there was nothing to learn from."""
    if summary.valid == 0:
        why = f"none of its {summary.rollouts} sampled workflows ran to an answer"
    elif not summary.score_spread:
        why = "every question's sampled workflows scored the same (every advantage is 0, no pair exists)"
    else:
        why = "no group or pair survived curation, so no update was made"
    return f"NO LEARNING SIGNAL: {label} seed {seed} iteration {summary.iteration}: {why}"


def _engine(executor: ExecutorConfig, seed: int) -> WorkflowEngine:
    from spogw.harness.executors import executor_from_config
    from spogw.harness.workflows.engine import WorkflowEngine

    return WorkflowEngine(
        executor_from_config(executor, seed),
        concurrency=executor.concurrency,
        timeout_s=executor.workflow_timeout_s,
        max_calls=executor.max_calls_per_run,
        grounding=executor.answer_grounding,
    )


def _log_eval(
    context: ExperimentContext, run_id: str | None, label: str, seed: int, iteration: int, transfer: str = ""
) -> dict[str, float]:
    from spogw.harness.scores import iteration_metrics

    rows = context.store.eval_rows(label, seed, iteration, transfer)
    metrics = iteration_metrics(rows)
    prefix = f"transfer.{transfer}." if transfer else ""
    context.tracker.log_metrics(run_id, {prefix + key: value for key, value in metrics.items()}, iteration)
    if context.on_evaluated is not None and not transfer:
        context.on_evaluated(label, seed, iteration, metrics)
    return metrics


def _sampling_params(config: ExperimentConfig, spec: MethodSpec) -> SamplingParams:
    from spogw.harness.policy.sampling import SamplingParams

    sampling = config.sampling_for(spec)
    return SamplingParams(sampling.temperature, sampling.top_p, sampling.max_new_tokens, tuple(sampling.stop))


async def _evaluate_transfers(
    context: ExperimentContext,
    spec: MethodSpec,
    seed: int,
    iteration: int,
    run_id: str | None,
    evaluate: Callable[[WorkflowEngine, EvalTarget], Awaitable[None]],
) -> None:
    """The final workflows of ``spec``, unchanged, run by every evaluation.transfer executor other
    than its own (executor transfer, open question 1)."""
    own = context.config.executor_for(spec)
    for name, executor in context.config.transfer_executors().items():
        if executor == own:
            continue
        counts = phase_counts(context.splits, context.config, "evaluate")
        context.progress.phase(spec.display_label, seed, f"transfer to {name}", counts=counts)
        target = EvalTarget(
            context.store,
            context.config.name,
            spec.display_label,
            seed,
            iteration,
            context.config.evaluation.repeats,
            name,
        )
        engine = _engine(executor, seed)
        try:
            await evaluate(engine, target)
        finally:
            await engine.close()
        _log_eval(context, run_id, spec.display_label, seed, iteration, name)


async def _run_static(context: ExperimentContext, spec: MethodSpec, method: Any, seed: int, run_id: str | None) -> None:
    from spogw.methods.static import workflow_source

    _, source = workflow_source(method.workflow)
    engine = _engine(context.config.executor_for(spec), seed)
    try:
        context.progress.phase(
            spec.display_label, seed, "evaluate", counts=phase_counts(context.splits, context.config, "evaluate")
        )
        target = EvalTarget(
            context.store, context.config.name, spec.display_label, seed, 0, context.config.evaluation.repeats
        )
        await evaluate_static(source, context.splits, engine, target)
    finally:
        await engine.close()
    _log_eval(context, run_id, spec.display_label, seed, 0)

    async def evaluate(other: WorkflowEngine, transfer: EvalTarget) -> None:
        await evaluate_static(source, context.splits, other, transfer)

    await _evaluate_transfers(context, spec, seed, 0, run_id, evaluate)


async def _run_trainable(
    context: ExperimentContext, spec: MethodSpec, method: Any, seed: int, run_id: str | None
) -> None:
    from spogw.harness.policy.model import load_generator
    from spogw.harness.store import IterationRow
    from spogw.harness.train import IterationSummary, Task, TrainingRun, group_rows, run_method, step_rows

    config = context.config
    label = spec.display_label
    generator = load_generator(config.generator, progress=False, adapter_dir=context.run_dir / "served_adapters")
    record_generator(context.run_dir, generator, config.generator)
    params = _sampling_params(config, spec)
    engine = _engine(config.executor_for(spec), seed)
    checkpoints = context.run_dir / "checkpoints" / label / f"seed{seed}"
    checkpoints.mkdir(parents=True, exist_ok=True)

    async def evaluate(iteration: int) -> None:
        target = EvalTarget(context.store, config.name, label, seed, iteration, config.evaluation.repeats)
        shared = context.untrained_twins.get(label, ()) if iteration == 0 else ()
        await evaluate_generator(generator, context.splits, engine, target, params, shared_with=shared)
        _log_eval(context, run_id, label, seed, iteration)

    def on_iteration(summary: IterationSummary) -> None:
        metrics = {
            "train_score": summary.train_score,
            "rollouts": summary.rollouts,
            "collect_s": summary.collect_s,
            "train_s": summary.train_s,
        }
        context.tracker.log_metrics(run_id, metrics, summary.iteration)
        first_step = context.store.steps_before(label, seed, summary.iteration)
        steps = step_rows(label, seed, summary, first_step)
        row = IterationRow(
            label,
            seed,
            summary.iteration,
            summary.train_score,
            summary.rollouts,
            summary.collect_s,
            summary.train_s,
            summary.updates,
        )
        context.store.put_iteration(row, steps, group_rows(label, seed, summary))
        if summary.iteration < config.iterations and not (summary.updates and summary.score_spread):
            context.notice(no_update_notice(label, seed, summary))
        for step_row, step in zip(steps, summary.steps, strict=True):  # the x axis: optimizer steps so far
            context.tracker.log_metrics(run_id, {f"step.{k}": v for k, v in step.items()}, step_row.step)

    run = TrainingRun(
        experiment=config.name,
        label=label,
        config=method,
        tasks=[Task(s.benchmark, s.train) for s in context.splits],
        seed=seed,
        iterations=config.iterations,
        repeats=config.evaluation.repeats,
        params=params,
        checkpoints=checkpoints,
        final_collection=config.evaluation.collect_final,
        evaluated_iterations=None if config.evaluation.every_iteration else frozenset({0, config.iterations}),
        untrained_twins=context.collection_twins.get(label, ()),
    )
    try:
        await run_method(
            generator,
            engine,
            context.store,
            run,
            evaluate=evaluate,
            on_iteration=on_iteration,
            on_phase=lambda iteration, phase: context.progress.phase(
                label, seed, phase, iteration, config.iterations, phase_counts(context.splits, config, phase, method)
            ),
            progress=context.bars,
        )
    finally:
        await engine.close()

    async def evaluate_final(other: WorkflowEngine, transfer: EvalTarget) -> None:
        await evaluate_generator(generator, context.splits, other, transfer, params)

    await _evaluate_transfers(context, spec, seed, config.iterations, run_id, evaluate_final)
    final = checkpoints / f"iter{config.iterations}"
    if final.is_dir():
        context.tracker.log_artifact(run_id, final, "adapter")


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
) -> Path:
    """Run (or resume) every method x seed of ``config`` in ``run_dir``; returns the run folder.

    When every cell is done, item_scores.parquet is written and ``finish(run_dir, config, tracker,
    parent_run_id)`` runs (the composition root passes the report writer, reports.report.finish_report:
    the harness itself never imports the reports).

    ``tracking_parent``: an MLflow run to nest the experiment's parent run under (a sweep's), with
    extra ``tracking_tags`` and ``tracking_params``. ``on_evaluated(label, seed, iteration, metrics)``
    is called after each held-out evaluation by the method's own executor; an exception it raises
    (a sweep's pruning) stops the run, and its MLflow runs are marked KILLED."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config.name)
    with run_folder_lock(run_dir):  # one process per run folder: a second one is told who holds it
        return _run_cells(
            config, run_dir, methods, seeds, force_new, progress, tracking_parent, tracking_tags, tracking_params,
            on_evaluated, finish,
        )  # fmt: skip


def _run_cells(
    config: ExperimentConfig,
    run_dir: Path,
    methods: Sequence[str] | None,
    seeds: Sequence[int] | None,
    force_new: bool,
    progress: bool,
    tracking_parent: str | None,
    tracking_tags: dict[str, str] | None,
    tracking_params: dict[str, Any] | None,
    on_evaluated: EvaluationHook | None,
    finish: Finisher | None,
) -> Path:
    from spogw.harness.store import SQLiteStore
    from spogw.harness.tracking import Tracker, require_server, tracking_uri
    from spogw.methods.static import StaticConfig

    selected = select_methods(config, methods)
    chosen_seeds = select_seeds(config, seeds)
    splits = load_splits(config)
    require_server(tracking_uri(config.tracking.uri, run_dir))  # a dead server fails now, not after minutes
    prepare_run_dir(config, run_dir, force_new)
    store = SQLiteStore(run_dir / "rollouts.sqlite")
    tracker = Tracker(run_dir, config.tracking.experiment_name or config.name, config.tracking.uri)
    simulation = config.simulation()  # decided once: base executor, method overrides, transfer executors
    identity = {
        "executor": executor_identity(config.executor),
        "generator": config.generator.model or config.generator.name,
        "decoding": decoding_mode(config.generator),
    }
    parent = tracker.start_parent(
        config.name,
        {**config.model_dump(mode="json"), **(tracking_params or {})},
        {"simulated": simulation.tag, **identity, **(tracking_tags or {})},
        nested_under=tracking_parent,
    )
    tracker.log_artifact(parent, run_dir / RESOLVED)

    todo = [(spec, seed) for spec in selected for seed in chosen_seeds]
    bar = RunProgress(config.name, len(todo), run_dir, enabled=progress)
    context = ExperimentContext(config, run_dir, splits, store, tracker, parent, bar, on_evaluated, bars=progress)
    run_id: str | None = None
    try:
        for spec, seed in todo:
            marker = done_marker(run_dir, spec.display_label, seed)
            if marker.exists():
                bar.skipped()
                continue
            method = method_config(spec)
            run_id = tracker.start_child(
                parent,
                spec.display_label,
                seed,
                {"method": spec.name, **method.model_dump(mode="json")},
                {
                    "simulated": str(simulation.methods[spec.display_label]).lower(),
                    **identity,
                    "executor": executor_identity(config.executor_for(spec)),
                },
            )
            if isinstance(method, StaticConfig):
                asyncio.run(_run_static(context, spec, method, seed, run_id))
            else:
                asyncio.run(_run_trainable(context, spec, method, seed, run_id))
            tracker.finish(run_id)
            run_id = None
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            failpoints.hit("run.method_done")
            bar.finished(spec.display_label, seed)
        bar.close_bar()
        bar.note("every cell done; writing item_scores.parquet and the report")
        write_item_scores(run_dir, store)
        tracker.log_artifact(parent, run_dir / "item_scores.parquet")
        if finish is not None:
            finish(run_dir, config, tracker, parent)
        tracker.finish(parent)
    except BaseException:
        # a stopped run (error, pruning, Ctrl-C) must not stay RUNNING in MLflow; re-running resumes it
        tracker.finish(run_id, "KILLED")
        tracker.finish(parent, "KILLED")
        raise
    finally:
        bar.close()
        store.close()
    return run_dir
