"""The training loop of every trainable method: iterations of collect -> update, with checkpoints.

`run_method` drives iterations. Each iteration collects with the policy of that iteration and
updates on what was collected; how the two interleave is the method's schedule (SCHEDULES):
offline collects the whole iteration with the frozen policy, then updates (ioGRPO); online
updates after every collected batch. The update itself (units, reference log-probs, optimizer
steps) is methods/steps.py: it reads only stored rollouts, so no workflow runs while a method
updates.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from spogw.harness import failpoints
from spogw.harness.collect import CollectSpec, collect_questions, mean_score
from spogw.harness.rollouts import Rollout, RolloutStore
from spogw.harness.store import GroupRow, StepRow
from spogw.methods.config import MethodConfig
from spogw.methods.steps import update_iteration
from spogw.methods.units import GroupUnit, Unit

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Benchmark, Item
    from spogw.harness.launch import CollectionSync
    from spogw.harness.policy.model import Generator
    from spogw.harness.policy.sampling import SamplingParams
    from spogw.harness.workflows.engine import WorkflowEngine


@dataclass(frozen=True)
class Task:
    """The questions of one benchmark that a method collects on (an experiment may mix benchmarks)."""

    benchmark: Benchmark
    items: Sequence[Item]


@dataclass(frozen=True)
class TrainingRun:
    """One (method, seed) training run: what `run_method` trains, on what, for how long."""

    experiment: str
    label: str
    """The method's label (rollouts, checkpoints and tracking are keyed by it)."""
    config: MethodConfig
    tasks: Sequence[Task]
    seed: int
    iterations: int
    repeats: int
    """Executions of each workflow in collection (its score is their mean)."""
    params: SamplingParams
    checkpoints: Path | None = None
    """Folder of the per-iteration training state (adapter + optimizer): iter<k>; None: no resume."""
    final_collection: bool = True
    """Collect once more after the last update (the trained policy's training score)."""
    evaluated_iterations: frozenset[int] | None = None
    """The iterations whose policy the ``evaluate`` hook of `run_method` evaluates (None: every one)."""
    untrained_twins: Mapping[str, RolloutStore] = field(default_factory=dict)
    """Label -> the store holding its rows (a twin cell's shard), for the labels whose iteration-0
    rollouts (same seed) are this run's by construction (harness.plan.collection_twins): copied
    from there where they are there."""
    sync: CollectionSync | None = None
    """Under a launcher (harness/launch.py): rank 0 publishes each collection through it; another
    rank collects nothing and reads rank 0's rollouts from ``store`` once published, and stops
    after its last update. None: one process."""


@dataclass
class IterationSummary:
    iteration: int
    train_score: float
    """Mean score of the workflows sampled this iteration (before its update)."""
    rollouts: int
    steps: list[dict[str, float]] = field(default_factory=list)
    collect_s: float = 0.0
    """Wall time of sampling and executing workflows (online: every batch's collection, summed)."""
    train_s: float = 0.0
    """Wall time of the updates (online: every batch's update, summed)."""
    valid: int = 0
    """Rollouts whose workflow ran to an answer (status ok)."""
    score_spread: bool = True
    """Whether some question's trainable rollouts scored differently (else every advantage is 0)."""
    units: list[Unit] = field(default_factory=list)
    """What the updates trained on (groups with their curation, or pairs)."""

    @property
    def updates(self) -> int:
        """Optimizer steps that changed the weights (a step whose groups were all filtered did not)."""
        return sum(int(step.get("updated", 1.0)) for step in self.steps)


def score_spread(rollouts: Sequence[Rollout]) -> bool:
    """Whether some question has trainable rollouts with different scores: without one, every group
    advantage is 0 and no pair exists, whatever the method."""
    scores: dict[str, set[float]] = {}
    for rollout in rollouts:
        if rollout.trainable and rollout.score is not None:
            scores.setdefault(rollout.query_id, set()).add(float(rollout.score))
    return any(len(distinct) > 1 for distinct in scores.values())


# ----------------------------------------------------------------------------------------------
# Schedules: how collection and updates interleave within one iteration


@dataclass
class IterationWork:
    """What one iteration's schedule did."""

    collected: list[Rollout] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    steps: list[dict[str, float]] = field(default_factory=list)
    collect_s: float = 0.0
    train_s: float = 0.0


Collector = Callable[[Task, Sequence["Item"]], Awaitable[list[Rollout]]]
Updater = Callable[[Sequence[Rollout]], tuple[list[Unit], list[dict[str, float]]]]


class Schedule(Protocol):
    async def __call__(self, run: TrainingRun, collect: Collector, update: Updater | None) -> IterationWork:
        """Collect the iteration's questions and (unless ``update`` is None: the final collection)
        update on them."""
        ...


async def offline_schedule(run: TrainingRun, collect: Collector, update: Updater | None) -> IterationWork:
    """ioGRPO: the whole iteration is collected with one frozen policy, then the updates run."""
    work = IterationWork()
    start = time.perf_counter()
    for task in run.tasks:
        work.collected += await collect(task, task.items)
    work.collect_s = time.perf_counter() - start
    if update is not None:
        start = time.perf_counter()
        work.units, work.steps = update(work.collected)
        work.train_s = time.perf_counter() - start
    return work


async def online_schedule(run: TrainingRun, collect: Collector, update: Updater | None) -> IterationWork:
    """GRPO as in DeepSeekMath: one update after every batch of ``units_per_step`` questions, each
    batch collected with the policy as the previous update left it."""
    if update is None:
        return await offline_schedule(run, collect, None)
    work = IterationWork()
    size = run.config.units_per_step
    for task in run.tasks:
        items = list(task.items)
        for first in range(0, len(items), size):
            start = time.perf_counter()
            rollouts = await collect(task, items[first : first + size])
            work.collect_s += time.perf_counter() - start
            work.collected += rollouts
            start = time.perf_counter()
            units, steps = update(rollouts)
            work.train_s += time.perf_counter() - start
            work.units += units
            work.steps += steps
    return work


SCHEDULES: dict[str, Schedule] = {"offline": offline_schedule, "online": online_schedule}


# ----------------------------------------------------------------------------------------------
# Iterations


def iteration_seed(seed: int, iteration: int) -> int:
    """The torch seed set before an iteration's updates (LoRA dropout): a resumed iteration draws
    the same numbers as an uninterrupted one."""
    return (seed * 1_000_003 + iteration * 7_919 + 17) % (2**31 - 1)


def latest_checkpoint(directory: Path | None, iterations: int) -> tuple[int, Path | None]:
    """The highest iteration k whose start-of-iteration state is saved as ``directory/iter<k>``."""
    if directory is None:
        return 0, None
    for k in range(iterations, 0, -1):
        candidate = directory / f"iter{k}"
        if candidate.is_dir():
            return k, candidate
    return 0, None


def make_optimizer(generator: Generator, config: MethodConfig) -> torch.optim.Optimizer:
    """AdamW on the LoRA parameters, no weight decay (the adapter starts at zero: decay would pull
    it back towards the base model, a second, unconfigured regulariser beside the KL term)."""
    return torch.optim.AdamW(generator.trainable_parameters(), lr=config.learning_rate, weight_decay=0.0)


async def run_method(
    generator: Generator,
    engine: WorkflowEngine | None,
    store: RolloutStore,
    run: TrainingRun,
    *,
    evaluate: Callable[[int], Awaitable[None]] | None = None,
    on_iteration: Callable[[IterationSummary], None] | None = None,
    on_phase: Callable[[int, str], None] | None = None,
    progress: bool = False,
) -> list[IterationSummary]:
    """``run.iterations`` rounds of collect -> update; with ``run.final_collection`` one more
    collection measures the result. Summary k holds the mean score of the workflows sampled at
    iteration k (k = 0: the untrained generator; k = iterations: after the last update).

    With ``run.checkpoints`` (a folder), the state after each update round (adapter and optimizer)
    is saved as ``iter<k+1>`` and a re-run starts from the latest one; the rollouts already in the
    store are not collected again. Hooks: ``evaluate(k)`` runs at the start of iteration k
    (held-out evaluation of the policy of iteration k); ``on_iteration`` gets each summary before
    its checkpoint is written; ``on_phase(k, phase)`` names what starts. Summaries are returned for
    the iterations this call ran."""
    from spogw.harness.distributed import current_ranks, on_main
    from spogw.harness.policy.checkpoints import load_training_state, save_adapter

    config = run.config
    optimizer = make_optimizer(generator, config)
    following = run.sync is not None and not run.sync.ranks.main  # a rank other than 0 of a launch
    if following and run.sync is not None:  # rank 0 says where the cell starts (harness/launch.py)
        start_iteration = await asyncio.to_thread(run.sync.wait_start)
        saved = run.checkpoints / f"iter{start_iteration}" if start_iteration and run.checkpoints else None
    else:
        start_iteration, saved = latest_checkpoint(run.checkpoints, run.iterations)
    if saved is not None:
        load_training_state(generator.model, optimizer, saved, generator.identity)
    if run.sync is not None and not following:
        run.sync.started(start_iteration)
    schedule = SCHEDULES[getattr(config, "schedule", "offline")]
    summaries = []
    for iteration in range(start_iteration, run.iterations + 1):
        if evaluate is not None and (run.evaluated_iterations is None or iteration in run.evaluated_iterations):
            if on_phase is not None:
                on_phase(iteration, "evaluate")
            await evaluate(iteration)
        last = iteration == run.iterations
        if last and (following or not run.final_collection):
            break
        spec = CollectSpec(run.experiment, run.label, run.seed, iteration, config.num_samples, run.repeats)
        torch.manual_seed(iteration_seed(run.seed, iteration))
        if config.ref == "previous_iteration" and not last:  # at iteration 0 this is the untrained adapter
            with tempfile.TemporaryDirectory() as folder:
                previous = save_adapter(generator.model, Path(folder) / "previous", generator.identity)
                generator.load_reference(previous)

        twins = run.untrained_twins if iteration == 0 else {}
        batches = itertools.count()  # the iteration's collections, in the schedule's order on every rank

        async def collect(
            task: Task,
            items: Sequence[Item],
            spec: CollectSpec = spec,
            twins: Mapping[str, RolloutStore] = twins,
            batches: Iterator[int] = batches,
        ) -> list[Rollout]:
            batch = next(batches)
            if following and run.sync is not None:  # rank 0's rollouts, once they are in the store
                await asyncio.to_thread(run.sync.wait, spec.iteration, batch)
                wanted = {item.id for item in items}
                rows = store.get(spec.experiment, spec.method, spec.seed, spec.iteration)
                return [r for r in rows if r.query_id in wanted]
            if engine is None:
                raise ValueError("run_method: an engine is needed to collect (only a follower of a launch has none)")
            rollouts = await collect_questions(
                generator, engine, task.benchmark, items, spec, run.params, store, progress, shared_with=twins
            )
            if run.sync is not None:
                run.sync.published(spec.iteration, batch)
            return rollouts

        def update(
            rollouts: Sequence[Rollout], iteration: int = iteration
        ) -> tuple[list[Unit], list[dict[str, float]]]:
            if on_phase is not None and schedule is offline_schedule:
                on_phase(iteration, "train")
            with generator.all_ranks():  # every rank of a launch runs the update's forwards
                return update_iteration(
                    generator,
                    rollouts,
                    config,
                    run.seed,
                    iteration,
                    optimizer,
                    run.params.temperature,
                    on_step=lambda: failpoints.hit("train.step"),
                )

        if on_phase is not None:
            on_phase(iteration, "collect+train" if schedule is online_schedule and not last else "collect")
        work = await schedule(run, collect, None if last else update)
        summary = IterationSummary(
            iteration,
            mean_score(work.collected),
            len(work.collected),
            work.steps,
            work.collect_s,
            work.train_s,
            sum(r.status == "ok" for r in work.collected),
            score_spread(work.collected),
            work.units,
        )
        summaries.append(summary)
        if on_iteration is not None:  # before the checkpoint: a kill between the two repeats the iteration
            on_iteration(summary)
        if run.checkpoints is not None and not last:
            checkpoint = run.checkpoints / f"iter{iteration + 1}"
            # written once (rank 0 of a data-parallel launch, harness/distributed.py), atomically
            on_main(
                functools.partial(
                    save_adapter, generator.model, checkpoint, generator.identity, optimizer, iteration=iteration + 1
                ),
                current_ranks(),
            )
    return summaries


def step_rows(label: str, seed: int, summary: IterationSummary, first_step: int) -> list[StepRow]:
    """The iteration's optimizer steps as store rows, numbered from ``first_step``."""
    import json

    return [
        StepRow(
            label,
            seed,
            summary.iteration,
            first_step + index,
            json.dumps({k: v for k, v in step.items() if k != "tokens_per_s"}, sort_keys=True),
            float(step.get("tokens_per_s", 0.0)),
        )
        for index, step in enumerate(summary.steps)
    ]


def group_rows(label: str, seed: int, summary: IterationSummary) -> list[GroupRow]:
    """The groups the iteration's updates were built from (GRPO family; pairs have none): the std
    of every group drawn, and the members and std of every group kept after curation."""
    import json

    rows: list[GroupRow] = []
    for unit in summary.units:
        if not isinstance(unit, GroupUnit):
            continue
        for index, std in enumerate(unit.std_before.tolist()):
            rows.append(GroupRow(label, seed, summary.iteration, unit.query_id, "built", index, "", std))
        for index, (group, std) in enumerate(zip(unit.groups.tolist(), unit.std_after.tolist(), strict=True)):
            members = json.dumps([unit.rollouts[i].sample_idx for i in group])
            rows.append(GroupRow(label, seed, summary.iteration, unit.query_id, "kept", index, members, std))
    return rows
