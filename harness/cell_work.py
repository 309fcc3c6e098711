"""One cell's work (a (method, seed) of an experiment): a static workflow's evaluation, or a trained
method's iterations of collect -> train -> evaluate, with the held-out evaluations, the executor
transfers and their MLflow metrics. harness/runner.py (one process) and harness/cluster.py (Ray
tasks) call it through `harness.runner.run_cell`, which gives it the cell's store shard."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spogw.harness import plan, sharding
from spogw.harness.config import ExecutorConfig, ExperimentConfig, MethodSpec
from spogw.harness.console import RunProgress, say
from spogw.harness.heldout import EvalTarget, evaluate_generator, evaluate_static
from spogw.harness.plan import BenchmarkSplit, phase_counts
from spogw.harness.run_folder import record_generator

if TYPE_CHECKING:
    from spogw.harness.launch import CollectionSync
    from spogw.harness.policy.sampling import SamplingParams
    from spogw.harness.store import SQLiteStore
    from spogw.harness.tracking import Tracker
    from spogw.harness.train import TrainingRun
    from spogw.harness.workflows.engine import WorkflowEngine

EvaluationHook = Callable[[str, int, int, dict[str, float]], None]
"""(method label, seed, iteration, metrics of that evaluation) -> None."""


@dataclass
class ExperimentContext:
    """What every cell of an experiment shares (not a store: each cell writes its own shard)."""

    config: ExperimentConfig
    run_dir: Path
    splits: list[BenchmarkSplit]
    tracker: Tracker
    parent_run: str | None
    progress: RunProgress
    on_evaluated: EvaluationHook | None = None
    """Called with (label, seed, iteration, metrics) after each evaluation by the method's own executor."""
    bars: bool = True
    """Progress bars inside phases (drawn only on a terminal); False with --quiet."""
    notice: Callable[[str], None] = field(default=say)
    """Says something the user must know now (a run that cannot learn): stderr and run.log."""
    launch_token: str | None = None
    """Under `accelerate launch` / torchrun: this launch's token (harness/launch.py); None: one process."""

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
    context: ExperimentContext,
    store: SQLiteStore,
    run_id: str | None,
    label: str,
    seed: int,
    iteration: int,
    transfer: str = "",
) -> dict[str, float]:
    from spogw.harness.scores import iteration_metrics

    rows = store.eval_rows(label, seed, iteration, transfer)
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
    store: SQLiteStore,
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
            store, context.config.name, spec.display_label, seed, iteration, context.config.evaluation.repeats, name
        )
        engine = _engine(executor, seed)
        try:
            await evaluate(engine, target)
        finally:
            await engine.close()
        _log_eval(context, store, run_id, spec.display_label, seed, iteration, name)


async def run_static(
    context: ExperimentContext, store: SQLiteStore, spec: MethodSpec, method: Any, seed: int, run_id: str | None
) -> None:
    from spogw.methods.static import workflow_source

    _, source = workflow_source(method.workflow)
    engine = _engine(context.config.executor_for(spec), seed)
    try:
        context.progress.phase(
            spec.display_label, seed, "evaluate", counts=phase_counts(context.splits, context.config, "evaluate")
        )
        target = EvalTarget(store, context.config.name, spec.display_label, seed, 0, context.config.evaluation.repeats)
        await evaluate_static(source, context.splits, engine, target)
    finally:
        await engine.close()
    _log_eval(context, store, run_id, spec.display_label, seed, 0)

    async def evaluate(other: WorkflowEngine, transfer: EvalTarget) -> None:
        await evaluate_static(source, context.splits, other, transfer)

    await _evaluate_transfers(context, store, spec, seed, 0, run_id, evaluate)


async def run_search_cell(
    context: ExperimentContext, store: SQLiteStore, spec: MethodSpec, method: Any, seed: int, run_id: str | None
) -> None:
    """A search method (methods/aflow.py): per benchmark, the search on its search split (resumed from
    the shard's search_rounds), then the chosen workflow evaluated on the test split like a static
    one (iteration 0), and by every transfer executor."""
    from spogw.harness.optimizers import optimizer_from_config
    from spogw.harness.search import SearchKey, run_search
    from spogw.methods.static import workflow_source

    config, label = context.config, spec.display_label
    _, seed_code = workflow_source(method.seed_workflow)
    engine = _engine(config.executor_for(spec), seed)
    optimizer = optimizer_from_config(config.optimizer, seed)
    if optimizer.simulated and config.executor_for(spec).name != "sim":
        context.notice(
            f"SIMULATED OPTIMIZER: {label} seed {seed} searches with the SIMULATED optimizer (optimizer.name: sim) "
            "on an LLM executor: its proposals are simulated; set an optimizer: section for an LLM optimizer"
        )
    chosen: dict[str, str] = {}
    try:
        for split in context.splits:
            name = split.benchmark.name
            items = split.search_items(method)
            counts = f"{len(items)} items x {method.validation_repeats} repeats, up to {method.rounds} rounds"
            context.progress.phase(label, seed, f"search {name}", counts=counts)

            def on_round(row: Any, name: str = name) -> None:
                metrics = {f"search.{name}.score": row.score} if row.score is not None else {}
                metrics[f"search.{name}.proposals"] = float(row.attempt + 1)
                context.tracker.log_metrics(run_id, metrics, row.round)
                what = f"score {row.score:.3f}" if row.score is not None else f"{row.status}: {row.reason}"
                context.progress.note(f"{label} seed {seed} {name} search round {row.round}.{row.attempt}: {what}")

            key = SearchKey(config.name, label, seed)
            result = await run_search(
                seed_code, split.benchmark, items, engine, optimizer, store, key, method, on_round
            )
            chosen[name] = result.code
            context.tracker.log_metrics(run_id, {f"search.{name}.best": result.score}, result.best)
            context.progress.note(
                f"{label} seed {seed} {name}: round {result.best} chosen (search score {result.score:.3f}, "
                f"{len(result.rows)} proposals, stopped by {result.stopped})"
            )
        context.progress.phase(label, seed, "evaluate", counts=phase_counts(context.splits, config, "evaluate"))
        target = EvalTarget(store, config.name, label, seed, 0, config.evaluation.repeats)
        for split in context.splits:
            await evaluate_static(chosen[split.benchmark.name], [split], engine, target)
    finally:
        await optimizer.close()
        await engine.close()
    _log_eval(context, store, run_id, label, seed, 0)

    async def evaluate(other: WorkflowEngine, transfer: EvalTarget) -> None:
        for split in context.splits:
            await evaluate_static(chosen[split.benchmark.name], [split], other, transfer)

    await _evaluate_transfers(context, store, spec, seed, 0, run_id, evaluate)


async def run_trainable(
    context: ExperimentContext,
    store: SQLiteStore,
    twins: dict[str, SQLiteStore],
    spec: MethodSpec,
    method: Any,
    seed: int,
    run_id: str | None,
) -> None:
    """``twins``: label -> the store holding that twin cell's rows (harness/cells.py)."""
    from spogw.harness.policy.model import load_generator
    from spogw.harness.store import IterationRow
    from spogw.harness.train import IterationSummary, group_rows, run_method, step_rows

    config = context.config
    label = spec.display_label
    run = training_run(context, spec, method, seed, twins)
    ranks = sharding.launch_ranks(config.generator, run.sync, context.notice)
    generator = load_generator(
        config.generator, progress=False, adapter_dir=context.run_dir / "served_adapters", sharded_over=ranks
    )
    if ranks is not None and run.sync is not None:
        sharding.mirror_lone_forwards(generator, run.sync)
        context.notice(f"{label} seed {seed}: {sharding.describe(generator.model, ranks)}")
    record_generator(context.run_dir, generator, config.generator)
    params = _sampling_params(config, spec)
    engine = _engine(config.executor_for(spec), seed)

    async def evaluate(iteration: int) -> None:
        target = EvalTarget(store, config.name, label, seed, iteration, config.evaluation.repeats)
        shared = {t: twins[t] for t in context.untrained_twins.get(label, ()) if t in twins} if iteration == 0 else {}
        await evaluate_generator(generator, context.splits, engine, target, params, shared_with=shared)
        _log_eval(context, store, run_id, label, seed, iteration)

    def on_iteration(summary: IterationSummary) -> None:
        metrics = {
            "train_score": summary.train_score,
            "rollouts": summary.rollouts,
            "collect_s": summary.collect_s,
            "train_s": summary.train_s,
        }
        context.tracker.log_metrics(run_id, metrics, summary.iteration)
        first_step = store.steps_before(label, seed, summary.iteration)
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
        store.put_iteration(row, steps, group_rows(label, seed, summary))
        if summary.iteration < config.iterations and not (summary.updates and summary.score_spread):
            context.notice(no_update_notice(label, seed, summary))
        for step_row, step in zip(steps, summary.steps, strict=True):  # the x axis: optimizer steps so far
            context.tracker.log_metrics(run_id, {f"step.{k}": v for k, v in step.items()}, step_row.step)

    def on_phase(iteration: int, phase: str) -> None:
        counts = phase_counts(context.splits, config, phase, method)
        context.progress.phase(label, seed, phase, iteration, config.iterations, counts)

    async def evaluate_final(other: WorkflowEngine, transfer: EvalTarget) -> None:
        await evaluate_generator(generator, context.splits, other, transfer, params)

    try:
        try:
            await run_method(
                generator,
                engine,
                store,
                run,
                evaluate=evaluate,
                on_iteration=on_iteration,
                on_phase=on_phase,
                progress=context.bars,
            )
        finally:
            await engine.close()
        await _evaluate_transfers(context, store, spec, seed, config.iterations, run_id, evaluate_final)
    finally:
        if run.sync is not None:  # after the transfers: a sharded model's other ranks mirror their forwards
            run.sync.ended()  # the other ranks stop waiting
    final = run.checkpoints / f"iter{config.iterations}" if run.checkpoints is not None else None
    if final is not None and final.is_dir():
        context.tracker.log_artifact(run_id, final, "adapter")


def cell_sync(context: ExperimentContext, label: str, seed: int) -> CollectionSync | None:
    """What rank 0 of a launch announces to the other ranks about this cell (harness/launch.py);
    None in one process."""
    from spogw.harness.cells import Cell
    from spogw.harness.distributed import current_ranks
    from spogw.harness.launch import CollectionSync

    if context.launch_token is None:
        return None
    return CollectionSync(Cell(label, seed).folder(context.run_dir), context.launch_token, current_ranks())


def training_run(
    context: ExperimentContext, spec: MethodSpec, method: Any, seed: int, twins: dict[str, SQLiteStore]
) -> TrainingRun:
    """The cell's TrainingRun (every rank of a launch builds the same one; rank 0's syncs)."""
    from spogw.harness.train import Task, TrainingRun

    config, label = context.config, spec.display_label
    checkpoints = context.run_dir / "checkpoints" / label / f"seed{seed}"
    checkpoints.mkdir(parents=True, exist_ok=True)
    sync = cell_sync(context, label, seed)
    return TrainingRun(
        experiment=config.name,
        label=label,
        config=method,
        tasks=[Task(s.benchmark, s.train) for s in context.splits],
        seed=seed,
        iterations=config.iterations,
        repeats=config.evaluation.repeats,
        params=_sampling_params(config, spec),
        checkpoints=checkpoints,
        final_collection=config.evaluation.collect_final,
        evaluated_iterations=None if config.evaluation.every_iteration else frozenset({0, config.iterations}),
        untrained_twins={t: twins[t] for t in context.collection_twins.get(label, ()) if t in twins},
        sync=sync,
    )


async def follow_trainable(context: ExperimentContext, spec: MethodSpec, method: Any, seed: int) -> None:
    """A rank other than 0 of a launch (harness/launch.py): the cell's update steps with rank 0,
    on the rollouts rank 0 collects into the cell's shard (read here, never written). Returns when
    rank 0 ends the cell (also at once when it was done before this launch)."""
    import asyncio

    from spogw.harness.cells import Cell
    from spogw.harness.launch import LaunchEnded
    from spogw.harness.policy.model import load_generator
    from spogw.harness.store import SQLiteStore
    from spogw.harness.train import run_method

    run = training_run(context, spec, method, seed, {})
    assert run.sync is not None, "a follower has its launch's token"
    ranks = sharding.launch_ranks(context.config.generator, run.sync, context.notice)
    generator = None
    if ranks is not None:  # sharded: loaded while rank 0 loads its own (its first forward waits for ours)
        generator = load_generator(context.config.generator, progress=False, sharded_over=ranks)
        sharding.mirror_lone_forwards(generator, run.sync)
    try:
        await asyncio.to_thread(run.sync.wait_start)  # rank 0 opened the cell: its shard exists
        if generator is None:  # not loaded for a cell rank 0 found done
            generator = load_generator(context.config.generator, progress=False)
        with SQLiteStore(Cell(spec.display_label, seed).shard(context.run_dir), read_only=True) as store:
            await run_method(generator, None, store, run)
        if run.sync.mirror is not None:  # rank 0's final evaluations forward the sharded model too
            await asyncio.to_thread(run.sync.mirror_until_ended)
    except LaunchEnded:
        return
