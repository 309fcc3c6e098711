"""An experiment = methods x seeds x iterations of collect -> train -> evaluate, in one run folder.

``<run_dir>`` holds everything a run produces, and everything it needs to resume:

    config.resolved.yaml   the experiment as validated (a re-run compares against it)
    rollouts.sqlite        tables rollouts, eval_items, iterations (harness/store.py), written idempotently
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
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness import failpoints
from harness.atomic import atomic_path, atomic_write_text
from harness.config import ConfigError, ExecutorConfig, ExperimentConfig, MethodSpec, dotted_fields, executor_identity
from harness.policy.model import decoding_mode

if TYPE_CHECKING:
    from harness.benchmarks.base import Benchmark, Item
    from harness.policy.model import Generator
    from harness.policy.sampling import SamplingParams
    from harness.store import EvalRow, SQLiteStore
    from harness.tracking import Tracker
    from harness.workflows.engine import WorkflowEngine
    from reports.report import Report

RESOLVED = "config.resolved.yaml"
EvaluationHook = Callable[[str, int, int, dict[str, float]], None]
"""(method label, seed, iteration, metrics of that evaluation) -> None."""
EVAL_CHUNK = 16
"""Test items sampled in one batch. Chunks are fixed slices of the item list, and a chunk's rows
are written in one transaction, so a resumed evaluation samples exactly the batches it did before."""


# ----------------------------------------------------------------------------------------------
# What will run


@dataclass(frozen=True)
class BenchmarkSplit:
    benchmark: Benchmark
    train: Sequence[Item]
    """The questions methods collect on and train with."""
    evaluated: Sequence[Item]
    """The held-out questions of evaluation.split (the test split unless a sweep scores on validation)."""


def load_splits(config: ExperimentConfig) -> list[BenchmarkSplit]:
    """Every benchmark of the experiment, loaded and split (AFlow protocol: the split's seed)."""
    from harness.benchmarks import load_from_config

    splits = []
    for index, spec in enumerate(config.benchmarks):
        try:
            benchmark = load_from_config(spec)
        except (OSError, ValueError) as err:
            field, value = ("hub", spec.hub) if spec.hub is not None else ("path", spec.path)
            raise ConfigError(f"benchmarks.{index}.{field} = {value!r}: cannot load {spec.name}: {err}") from None
        fractions = (spec.split.test_fraction, spec.split.seed, spec.split.validation_fraction)
        train = list(benchmark.split("train", *fractions))[: spec.train_limit]
        evaluated = list(benchmark.split(config.evaluation.split, *fractions))[: spec.test_limit]
        if not evaluated:
            raise ConfigError(
                f"benchmarks.{index}: {spec.name} has no {config.evaluation.split} items after the split and test_limit"
            )
        splits.append(BenchmarkSplit(benchmark, train, evaluated))
    return splits


def method_config(spec: MethodSpec) -> Any:
    """The method's pydantic config with the experiment's overrides applied."""
    from harness.catalog import registries
    from harness.config import _resolve

    entry = registries()["methods"].entry(spec.name)
    entry.load()
    return _resolve(entry.metadata["config"]).model_validate(spec.overrides)


def grammar_calls_per_run(domain: str) -> float:
    """Mean executor calls per run over the operator grammar's structures of ``domain``: the
    dry-run's estimate for generated workflows (the real number depends on what the policy writes)."""
    from harness.workflows.grammar import all_structures, render
    from harness.workflows.structure import calls_per_run

    return statistics.fmean(calls_per_run(render(s)) for s in all_structures(domain))


@dataclass
class PlannedRun:
    label: str
    method: str
    seed: int
    iterations: int
    generator_samples: int
    workflow_runs: int
    executor_calls: float


@dataclass
class Plan:
    experiment: str
    runs: list[PlannedRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"experiment {self.experiment}: {len(self.runs)} run(s) (method x seed)"]
        width = max((len(r.label) for r in self.runs), default=5)
        lines.append(f"  {'method':<{width}}  seed  iters  generator samples  workflow runs  executor calls (estimate)")
        for r in self.runs:
            lines.append(
                f"  {r.label:<{width}}  {r.seed:>4}  {r.iterations:>5}  {r.generator_samples:>17,}  "
                f"{r.workflow_runs:>13,}  {r.executor_calls:>25,.0f}"
            )
        total_samples = sum(r.generator_samples for r in self.runs)
        total_runs = sum(r.workflow_runs for r in self.runs)
        total_calls = sum(r.executor_calls for r in self.runs)
        lines.append(
            f"  total: {total_samples:,} generator samples, {total_runs:,} workflow runs, "
            f"about {total_calls:,.0f} executor calls"
        )
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def plan_experiment(
    config: ExperimentConfig, splits: Sequence[BenchmarkSplit], methods: Sequence[MethodSpec], seeds: Sequence[int]
) -> Plan:
    from harness.workflows.structure import calls_per_run
    from methods.static import StaticConfig, workflow_source

    plan = Plan(config.name)
    repeats = config.evaluation.repeats
    test_items = sum(len(s.evaluated) for s in splits)
    generated_calls = {s.benchmark.domain: grammar_calls_per_run(s.benchmark.domain) for s in splits}
    transfers = config.transfer_executors()
    for spec in methods:
        method = method_config(spec)
        own = config.executor_for(spec)
        evaluators = 1 + sum(executor != own for executor in transfers.values())
        for seed in seeds:
            if isinstance(method, StaticConfig):
                per_run = calls_per_run(workflow_source(method.workflow)[1])
                runs = test_items * repeats * evaluators
                plan.runs.append(PlannedRun(spec.display_label, spec.name, seed, 0, 0, runs, runs * per_run))
                continue
            evaluations = config.iterations + 1 if config.evaluation.every_iteration else 2
            collections = config.iterations + int(config.evaluation.collect_final)
            samples = runs = 0
            calls = 0.0
            for split in splits:
                per_run = generated_calls[split.benchmark.domain]
                collected = collections * len(split.train) * method.num_samples
                evaluated = (evaluations + evaluators - 1) * len(split.evaluated)
                samples += collected + evaluated
                runs += (collected + evaluated) * repeats
                calls += (collected + evaluated) * repeats * per_run
            plan.runs.append(PlannedRun(spec.display_label, spec.name, seed, config.iterations, samples, runs, calls))
    plan.notes.append(
        "executor calls of generated workflows are estimated with the mean call count of the operator "
        "grammar's structures ("
        + ", ".join(f"{d}: {c:.1f}/run" for d, c in generated_calls.items())
        + "); static workflows are counted from their code"
    )
    if config.executor.name == "sim":
        plan.notes.append("executor sim: SIMULATED, no API cost")
    return plan


# ----------------------------------------------------------------------------------------------
# The run folder


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'field: old -> new' for every dotted field whose value differs."""
    flat_old, flat_new = dotted_fields(old), dotted_fields(new)
    return [
        f"{key}: {flat_old.get(key, '(absent)')!r} -> {flat_new.get(key, '(absent)')!r}"
        for key in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(key, "(absent)") != flat_new.get(key, "(absent)")
    ]


def prepare_run_dir(config: ExperimentConfig, run_dir: Path, force_new: bool) -> None:
    """Create the run folder, or check that the folder holds a run of this same experiment."""
    resolved = config.model_dump(mode="json")
    path = run_dir / RESOLVED
    if path.is_file():
        previous = yaml.safe_load(path.read_text()) or {}
        # through today's schema: a field added since the run began reads as its default; a field
        # since removed or changed fails validation and is compared as written (the difference shown)
        with contextlib.suppress(ValueError):
            previous = ExperimentConfig.model_validate(previous).model_dump(mode="json")
        differences = config_differences(previous, resolved)
        if differences and not force_new:
            raise ConfigError(
                f"{run_dir} holds a run of a different experiment configuration; fields that differ:\n  "
                + "\n  ".join(differences)
                + "\nUse another --run-dir, or --force-new to move the old run aside and start over."
            )
        if differences:
            moved = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(run_dir, moved)
            print(f"moved the previous run folder to {moved}")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(resolved, sort_keys=False))


def _done_marker(run_dir: Path, label: str, seed: int) -> Path:
    return run_dir / "done" / f"{label}.seed{seed}"


# ----------------------------------------------------------------------------------------------
# Evaluation on the held-out split


@dataclass(frozen=True)
class EvalTarget:
    """Where evaluation rows go: the store, and the fixed part of their key."""

    store: SQLiteStore
    experiment: str
    label: str
    seed: int
    iteration: int
    repeats: int
    transfer: str = ""
    """'' for the method's own executor, else the evaluation.transfer name of the executor used."""


async def _evaluate_chunk(
    sources: dict[str, str], split: BenchmarkSplit, items: Sequence[Item], engine: WorkflowEngine, target: EvalTarget
) -> None:
    from harness.evaluate import evaluate_workflow
    from harness.store import EvalRow
    from harness.workflows.structure import structure_or_empty

    runs = await evaluate_workflow(sources, split.benchmark, items, engine, target.repeats, progress=False)
    structures = {item_id: structure_or_empty(code) for item_id, code in sources.items()}
    rows = [
        EvalRow(
            experiment=target.experiment,
            method=target.label,
            seed=target.seed,
            iteration=target.iteration,
            benchmark=split.benchmark.name,
            item_id=run.item_id,
            repeat=run.repeat,
            workflow_code=sources[run.item_id],
            structure=structures[run.item_id],
            status=run.status,
            reason=run.reason,
            score=run.score,
            calls=run.calls,
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            wall_s=run.wall_s,
            transfer=target.transfer,
        )
        for run in runs
    ]
    target.store.put_eval(rows)


def _missing_chunks(items: Sequence[Item], done: set[str]) -> list[Sequence[Item]]:
    chunks = [items[i : i + EVAL_CHUNK] for i in range(0, len(items), EVAL_CHUNK)]
    return [chunk for chunk in chunks if any(item.id not in done for item in chunk)]


async def evaluate_generator(
    generator: Generator,
    splits: Sequence[BenchmarkSplit],
    engine: WorkflowEngine,
    target: EvalTarget,
    params: Any,
    shared_with: Sequence[str] = (),
) -> None:
    """One workflow sampled per test item (key (seed, iteration, 'eval:'+item, 0)), run ``repeats`` times.

    ``shared_with``: labels whose evaluation at this iteration is identical by construction (the
    untrained generator at iteration 0: the same model, keys and executor seed for every method);
    when one of them has every row, they are copied instead of recomputed."""
    from harness.workflows.extract import extract_workflow

    store, seed, iteration = target.store, target.seed, target.iteration
    for split in splits:
        name = split.benchmark.name
        done = store.eval_done(target.label, seed, iteration, name, target.transfer)
        wanted = {item.id for item in split.evaluated}
        for donor in shared_with:
            if not wanted <= done and store.eval_done(donor, seed, iteration, name) == wanted:
                store.copy_eval(donor, target.label, seed, iteration, name)
                done = store.eval_done(target.label, seed, iteration, name)
        for chunk in _missing_chunks(split.evaluated, done):
            prompts = [generator.prompt(item.domain, item.question) for item in chunk]
            keys = [(seed, iteration, f"eval:{item.id}", 0) for item in chunk]
            samples = generator.sample(prompts, keys, params)
            sources = {item.id: extract_workflow(s.text) or "" for item, s in zip(chunk, samples, strict=True)}
            await _evaluate_chunk(sources, split, chunk, engine, target)


async def evaluate_static(
    source: str, splits: Sequence[BenchmarkSplit], engine: WorkflowEngine, target: EvalTarget
) -> None:
    for split in splits:
        done = target.store.eval_done(
            target.label, target.seed, target.iteration, split.benchmark.name, target.transfer
        )
        for chunk in _missing_chunks(split.evaluated, done):
            await _evaluate_chunk({item.id: source for item in chunk}, split, chunk, engine, target)


def iteration_metrics(rows: Sequence[EvalRow]) -> dict[str, float]:
    """Mean test score per benchmark (item score = mean over its scorable repeats) and overall."""
    by_item: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if row.score is not None:
            by_item.setdefault((row.benchmark, row.item_id), []).append(row.score)
    metrics: dict[str, float] = {}
    benchmarks = sorted({b for b, _ in by_item})
    for benchmark in benchmarks:
        scores = [statistics.fmean(v) for (b, _), v in by_item.items() if b == benchmark]
        metrics[f"test_score.{benchmark}"] = statistics.fmean(scores)
    if by_item:
        metrics["test_score"] = statistics.fmean(statistics.fmean(v) for v in by_item.values())
    valid = [row.status == "ok" for row in rows]
    if valid:
        metrics["test_ok_fraction"] = sum(valid) / len(valid)
    return metrics


# ----------------------------------------------------------------------------------------------
# Running


@dataclass
class ExperimentContext:
    config: ExperimentConfig
    run_dir: Path
    splits: list[BenchmarkSplit]
    store: SQLiteStore
    tracker: Tracker
    parent_run: str | None
    progress: Callable[[str], None]
    untrained_twins: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per trained method, the trained methods whose iteration-0 evaluation (the untrained generator)
    is identical to its own: the same executor and sampling (then rows are copied, not recomputed)."""
    on_evaluated: EvaluationHook | None = None
    """Called with (label, seed, iteration, metrics) after each evaluation by the method's own executor."""
    notice: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr))
    """Says something the user must know now (a run that cannot learn), above any progress bar."""


def untrained_twins(config: ExperimentConfig) -> dict[str, tuple[str, ...]]:
    """Trained method label -> the other trained labels with the same executor and sampling."""
    from methods.static import StaticConfig

    trained = [spec for spec in config.methods if not isinstance(method_config(spec), StaticConfig)]

    def setting(spec: MethodSpec) -> tuple[ExecutorConfig, Any]:
        return config.executor_for(spec), config.sampling_for(spec)

    return {
        spec.display_label: tuple(
            other.display_label for other in trained if other is not spec and setting(other) == setting(spec)
        )
        for spec in trained
    }


GENERATOR_FILE = "generator.json"


def record_generator(run_dir: Path, generator: Any, config: Any) -> None:
    """What the generator is (identity, prompt format, decoding, stop ids), for the report's first
    lines; written once per run folder."""
    path = run_dir / GENERATOR_FILE
    if path.exists():
        return
    facts = {
        "name": config.name,
        "identity": generator.identity,
        "prompt_format": generator.prompt_format,
        "decoding": decoding_mode(config),
        "backend": config.backend,
        "stop_ids": list(generator.stop_ids),
    }
    atomic_write_text(path, json.dumps(facts, indent=2) + "\n")


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
    from harness.executors import executor_from_config
    from harness.workflows.engine import WorkflowEngine

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
    rows = context.store.eval_rows(label, seed, iteration, transfer)
    metrics = iteration_metrics(rows)
    prefix = f"transfer.{transfer}." if transfer else ""
    context.tracker.log_metrics(run_id, {prefix + key: value for key, value in metrics.items()}, iteration)
    if context.on_evaluated is not None and not transfer:
        context.on_evaluated(label, seed, iteration, metrics)
    return metrics


def _sampling_params(config: ExperimentConfig, spec: MethodSpec) -> SamplingParams:
    from harness.policy.sampling import SamplingParams

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
        context.progress(f"{spec.display_label} s{seed}: transfer to {name}")
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
    from methods.static import workflow_source

    _, source = workflow_source(method.workflow)
    engine = _engine(context.config.executor_for(spec), seed)
    try:
        context.progress(f"{spec.display_label} s{seed}: evaluate")
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
    from harness.policy.model import load_generator
    from harness.store import IterationRow
    from harness.train import Task, run_method

    config = context.config
    label = spec.display_label
    generator = load_generator(config.generator, progress=False)
    record_generator(context.run_dir, generator, config.generator)
    params = _sampling_params(config, spec)
    engine = _engine(config.executor_for(spec), seed)
    checkpoints = context.run_dir / "checkpoints" / label / f"seed{seed}"
    checkpoints.mkdir(parents=True, exist_ok=True)

    async def evaluate(iteration: int) -> None:
        if not (config.evaluation.every_iteration or iteration in (0, config.iterations)):
            return
        target = EvalTarget(context.store, config.name, label, seed, iteration, config.evaluation.repeats)
        shared = context.untrained_twins.get(label, ()) if iteration == 0 else ()
        await evaluate_generator(generator, context.splits, engine, target, params, shared_with=shared)
        _log_eval(context, run_id, label, seed, iteration)

    def on_iteration(summary: Any) -> None:
        metrics = {
            "train_score": summary.train_score,
            "rollouts": summary.rollouts,
            "collect_s": summary.collect_s,
            "train_s": summary.train_s,
        }
        context.tracker.log_metrics(run_id, metrics, summary.iteration)
        context.store.put_iteration(
            IterationRow(
                label,
                seed,
                summary.iteration,
                summary.train_score,
                summary.rollouts,
                summary.collect_s,
                summary.train_s,
                summary.updates,
            )
        )
        if summary.iteration < config.iterations and not (summary.updates and summary.score_spread):
            context.notice(no_update_notice(label, seed, summary))
        for index, step in enumerate(summary.steps):
            context.tracker.log_metrics(
                run_id, {f"step.{k}": v for k, v in step.items()}, summary.iteration * 100_000 + index
            )

    try:
        await run_method(
            generator,
            method,
            engine,
            [Task(s.benchmark, s.train) for s in context.splits],
            config.iterations,
            seed,
            params,
            context.store,
            config.name,
            label,
            config.evaluation.repeats,
            on_iteration=on_iteration,
            checkpoints=checkpoints,
            evaluate=evaluate,
            final_collection=config.evaluation.collect_final,
            on_phase=lambda iteration, phase: context.progress(f"{label} s{seed} it{iteration}: {phase}"),
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
) -> Path:
    """Run (or resume) every method x seed of ``config`` in ``run_dir``; returns the run folder.

    ``tracking_parent``: an MLflow run to nest the experiment's parent run under (a sweep's), with
    extra ``tracking_tags`` and ``tracking_params``. ``on_evaluated(label, seed, iteration, metrics)``
    is called after each held-out evaluation by the method's own executor; an exception it raises
    (a sweep's pruning) stops the run, and its MLflow runs are marked KILLED."""
    from tqdm.auto import tqdm

    from harness.store import SQLiteStore
    from harness.tracking import Tracker
    from methods.static import StaticConfig

    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config.name)
    selected = select_methods(config, methods)
    chosen_seeds = select_seeds(config, seeds)
    splits = load_splits(config)
    prepare_run_dir(config, run_dir, force_new)
    store = SQLiteStore(run_dir / "rollouts.sqlite")
    tracker = Tracker(run_dir, config.tracking.experiment_name or config.name, config.tracking.uri)
    simulated = {"simulated": str(config.executor.name == "sim").lower()}
    identity = {
        "executor": executor_identity(config.executor),
        "generator": config.generator.model or config.generator.name,
        "decoding": decoding_mode(config.generator),
    }
    parent = tracker.start_parent(
        config.name,
        {**config.model_dump(mode="json"), **(tracking_params or {})},
        {**simulated, **identity, **(tracking_tags or {})},
        nested_under=tracking_parent,
    )
    tracker.log_artifact(parent, run_dir / RESOLVED)

    todo = [(spec, seed) for spec in selected for seed in chosen_seeds]
    bar = tqdm(total=len(todo), desc=config.name, unit="run", disable=None if progress else True)
    context = ExperimentContext(
        config,
        run_dir,
        splits,
        store,
        tracker,
        parent,
        lambda text: bar.set_postfix_str(text),
        untrained_twins(config),
        on_evaluated,
    )
    run_id: str | None = None
    try:
        for spec, seed in todo:
            marker = _done_marker(run_dir, spec.display_label, seed)
            if marker.exists():
                bar.update(1)
                continue
            method = method_config(spec)
            run_id = tracker.start_child(
                parent,
                spec.display_label,
                seed,
                {"method": spec.name, **method.model_dump(mode="json")},
                {**simulated, **identity, "executor": executor_identity(config.executor_for(spec))},
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
            bar.update(1)
        bar.close()
        from reports.report import log_report

        report = finish_run(run_dir, store, config)
        tracker.log_artifact(parent, run_dir / "item_scores.parquet")
        log_report(report, tracker, parent)
        tracker.finish(parent)
    except BaseException:
        # a stopped run (error, pruning, Ctrl-C) must not stay RUNNING in MLflow; re-running resumes it
        tracker.finish(run_id, "KILLED")
        tracker.finish(parent, "KILLED")
        raise
    finally:
        store.close()
    return run_dir


def default_run_dir(name: str) -> Path:
    """Where an experiment (or sweep) named ``name`` runs when no folder is given."""
    return Path("runs") / name


def select_methods(config: ExperimentConfig, labels: Sequence[str] | None) -> list[MethodSpec]:
    if not labels:
        return list(config.methods)
    known = {m.display_label: m for m in config.methods}
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ConfigError(f"--methods {','.join(unknown)}: not a method label of {config.name} ({', '.join(known)})")
    return [known[label] for label in labels]


def select_seeds(config: ExperimentConfig, seeds: Sequence[int] | None) -> list[int]:
    if not seeds:
        return list(config.seeds)
    unknown = [s for s in seeds if s not in config.seeds]
    if unknown:
        raise ConfigError(f"--seeds {unknown}: not seeds of {config.name} ({config.seeds})")
    return list(seeds)


def finish_run(run_dir: Path, store: SQLiteStore, config: ExperimentConfig) -> Report:
    """Per-item scores parquet and the report, from the store (so they always reflect every run)."""
    from reports.report import write_report
    from reports.summary import item_score_frame

    frame = item_score_frame(store.table("eval_items"))
    _write_parquet_atomic(frame, run_dir / "item_scores.parquet")
    return write_report(run_dir, config)


def _write_parquet_atomic(frame: Any, path: Path) -> None:
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)


def export(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Both tables of ``<run_dir>/rollouts.sqlite`` as parquet files (for pandas, polars, DuckDB)."""
    from harness.store import TABLES, SQLiteStore

    database = run_dir / "rollouts.sqlite"
    if not database.is_file():
        raise FileNotFoundError(f"{run_dir}: no rollouts.sqlite (is this a run folder?)")
    out_dir = out_dir or run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with SQLiteStore(database) as store:
        for table in TABLES:
            path = out_dir / f"{table}.parquet"
            _write_parquet_atomic(store.table(table), path)
            written.append(path)
    return written
