"""Collection: sample workflows -> validate -> execute (repeats) -> score -> Rollout records.

Questions are collected in fixed slices of the question list (`questions_per_batch`): every
missing sample of a slice is drawn in one batch, with keys (seed, iteration, question id, sample
index) that alone decide its randomness, its executions run concurrently up to the engine's pool
size (one limit on workflow runs in flight, whatever the slices), and its rollouts are written in
one transaction. So a killed collection resumes at slice boundaries and draws the missing slices
exactly as an uninterrupted one (tests/test_training.py).

The slices are pipelined: while slice k executes, slice k + 1 is drawn (on a worker thread, so the
executions' event loop keeps running), and up to `PIPELINE_DEPTH` drawn slices wait for or are in
execution at once. The sampler does not idle while the executor works, and a slice does not wait
for the slowest run of the one before. Slices may finish out of order; each is written whole.
What the store already holds is not collected again; a slice drawn only in part (its infra_error
rows, or samples an iteration-0 twin lacked) is drawn in a smaller batch, the same samples up to
the float rounding of a different batch. The offline schedule collects a whole iteration with the
frozen policy before any update; the online schedule calls `collect_questions` for one batch per
update step.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spogw.harness.evaluate import score_outcome
from spogw.harness.rollouts import Rollout, RolloutStore
from spogw.harness.workflows.engine import RunStatus
from spogw.harness.workflows.extract import extract_workflow
from spogw.harness.workflows.structure import structure_or_empty

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Benchmark, Item
    from spogw.harness.policy.model import Generator
    from spogw.harness.policy.sampling import Sample, SamplingParams
    from spogw.harness.workflows.engine import WorkflowEngine


SEQUENCES_PER_BATCH = 64
"""Workflows sampled in one batch in collection: whole questions (all m samples of each), as many
as fit. A small generator's decode step costs its call overhead, not its arithmetic: the tiny
generator draws 192 workflows 2.2x faster in batches of 64 than in one question's 8, and a batch of
64 makes 10.7x the tokens per second of a batch of 1 (bench/sampling_throughput.py)."""


PIPELINE_DEPTH = 2
"""Slices that may still be executing while the next one is drawn (up to depth + 1 while the
collection waits for the oldest): 1 overlaps the drawing of the next slice with the execution of the
current one; more lets a slow run of one slice overlap the next slices' runs. 0: draw, execute and
write each slice before drawing the next (no overlap)."""


def batch_sequences(generator: Generator) -> int:
    """Sequences drawn in one batch: what a served generator takes in flight
    (generator.server.max_concurrent_requests), else SEQUENCES_PER_BATCH."""
    return generator.served.concurrency if generator.served is not None else SEQUENCES_PER_BATCH


def questions_per_batch(num_samples: int, sequences: int = SEQUENCES_PER_BATCH) -> int:
    """Questions whose samples are drawn in one batch: ``sequences`` // m, at least one (sequences:
    `batch_sequences` of the generator)."""
    return max(1, sequences // num_samples)


@dataclass(frozen=True)
class CollectSpec:
    experiment: str
    method: str
    seed: int
    iteration: int
    num_samples: int
    repeats: int


def _status_over_repeats(statuses: list[str]) -> str:
    if "ok" in statuses:
        return "ok"
    workflow_faults = [s for s in statuses if s != RunStatus.INFRA_ERROR.value]
    return Counter(workflow_faults).most_common(1)[0][0] if workflow_faults else RunStatus.INFRA_ERROR.value


async def _execute(
    sample: Sample,
    prompt: str,
    item: Item,
    spec: CollectSpec,
    benchmark: Benchmark,
    engine: WorkflowEngine,
    old_logp: tuple[float, ...],
    served: bool = False,
) -> Rollout:
    """``served``: record the gap between the server's log-probs and ``old_logp`` (only at T = 1:
    vLLM reports log-probs of the raw logits by default, which equal ours at T = 1 only)."""
    code = extract_workflow(sample.text)
    common: dict[str, Any] = dict(
        experiment=spec.experiment,
        method=spec.method,
        seed=spec.seed,
        iteration=spec.iteration,
        query_id=item.id,
        benchmark=benchmark.name,
        sample_idx=int(sample.key[-1]),
        prompt=prompt,
        workflow_code=code,
        prompt_ids=sample.prompt_ids,
        completion_ids=sample.completion_ids,
        old_logp=old_logp,
        sampler_logp_diff=sampler_logp_diff(sample.logprobs, old_logp) if served else None,
    )
    if code is None:
        return Rollout(
            **common,
            status="invalid",
            reason="no workflow code in the completion",
            score=0.0,
            score_repeats=(0.0,) * spec.repeats,
            executor_calls=0,
            executor_tokens=0,
            wall_s=0.0,
        )
    outcomes = await asyncio.gather(*(engine.run(code, item, repeat) for repeat in range(spec.repeats)))
    scores = [await score_outcome(benchmark, item, outcome, engine.sandbox) for outcome in outcomes]
    scorable = [s for s in scores if s is not None]
    status = _status_over_repeats([o.status.value for o in outcomes])
    structure = structure_or_empty(code) if status != "invalid" else ""
    return Rollout(
        **common,
        status=status,
        reason=next((o.reason for o in outcomes if o.reason), ""),
        score=statistics.fmean(scorable) if scorable else None,
        score_repeats=tuple(scores),
        executor_calls=sum(o.calls for o in outcomes),
        executor_tokens=sum(o.prompt_tokens + o.completion_tokens for o in outcomes),
        wall_s=sum(o.wall_s for o in outcomes),
        structure=structure,
    )


def sampler_logp_diff(served: Sequence[float], ours: Sequence[float]) -> float | None:
    """Largest |served - ours| over a completion's tokens; None when the sampler reported no log-probs."""
    if not served or len(served) != len(ours):
        return None
    return max(abs(a - b) for a, b in zip(served, ours, strict=True))


def _old_logprobs(
    generator: Generator, prompts: Sequence[str], samples: list[Sample], temperature: float
) -> list[tuple[float, ...]]:
    """The sampler's log-probs, or a teacher-forced recomputation when they are not exact.

    Measured on an H200: in bf16 the sampler and the training forward differ by up to 0.024; a
    vLLM server reports log-probs of raw logits from its own kernels. The ratio in the clipped
    objective must start at exactly 1, so recompute then."""
    import torch

    from spogw.harness.policy.sampling import token_logprobs

    if generator.exact_sampler_logprobs:
        return [s.logprobs for s in samples]
    vocab = generator.model.get_output_embeddings().weight.shape[0]

    def allowed(prompt: str, sample: Sample) -> torch.Tensor | None:
        constraint = generator.constraint
        return None if constraint is None else constraint.allowed_mask(prompt, sample.completion_ids, vocab)

    was_training = generator.model.training
    generator.model.eval()
    try:
        with torch.no_grad():
            return [
                tuple(
                    token_logprobs(
                        generator.model, s.prompt_ids, s.completion_ids, temperature, allowed(prompt, s)
                    ).tolist()
                )
                for prompt, s in zip(prompts, samples, strict=True)
            ]
    finally:
        generator.model.train(was_training)


async def collect_questions(
    generator: Generator,
    engine: WorkflowEngine,
    benchmark: Benchmark,
    items: Sequence[Item],
    spec: CollectSpec,
    params: SamplingParams,
    store: RolloutStore,
    progress: bool = False,
    shared_with: Mapping[str, RolloutStore] | None = None,
    depth: int = PIPELINE_DEPTH,
) -> list[Rollout]:
    """Collect the missing (question, sample) pairs of ``items``; return all of the iteration's rollouts
    for these questions, from the store.

    ``shared_with``: method -> the store holding its rows (a twin cell's shard), for the methods
    whose rollouts of this seed and iteration are this method's by construction
    (harness.plan.collection_twins: iteration 0 of offline twins); the ones they hold are copied
    (`copy_twin_rollouts`) instead of being sampled and executed again. ``depth``: see
    `PIPELINE_DEPTH`."""
    from tqdm.auto import tqdm

    if shared_with:
        copy_twin_rollouts(store, spec, [item.id for item in items], shared_with)
    have = store.keys(spec.experiment, spec.method, spec.seed, spec.iteration)
    bar = tqdm(
        total=len(items),
        desc=f"collect {spec.method} s{spec.seed} it{spec.iteration}",
        unit="q",
        disable=None if progress else True,
        leave=False,
    )
    per_batch = questions_per_batch(spec.num_samples, batch_sequences(generator))
    served = generator.served is not None and params.temperature == 1.0

    async def draw(batch: Sequence[Item]) -> tuple[list[Any], list[str], list[Sample], list[Any]] | None:
        rows = [
            (item, k)
            for item in batch
            for k in range(spec.num_samples)
            if (spec.experiment, spec.method, spec.seed, spec.iteration, item.id, k) not in have
        ]
        if not rows:
            return None
        prompts = {item.id: generator.prompt(item.domain, item.question) for item in batch}
        row_prompts = [prompts[item.id] for item, _ in rows]
        keys = [(spec.seed, spec.iteration, item.id, k) for item, k in rows]
        # a worker thread: the runs of the slices already drawn go on meanwhile
        samples = await asyncio.to_thread(generator.sample, row_prompts, keys, params)
        old = await asyncio.to_thread(_old_logprobs, generator, row_prompts, samples, params.temperature)
        return rows, row_prompts, samples, old

    async def execute(drawn: tuple[list[Any], list[str], list[Sample], list[Any]] | None, size: int) -> None:
        if drawn is not None:
            rows, row_prompts, samples, old = drawn
            rollouts = await asyncio.gather(
                *(
                    _execute(sample, prompt, item, spec, benchmark, engine, lp, served)
                    for (item, _), prompt, sample, lp in zip(rows, row_prompts, samples, old, strict=True)
                )
            )
            store.put(list(rollouts))
        bar.update(size)

    pending: list[asyncio.Task[None]] = []
    try:
        for first in range(0, len(items), per_batch):
            batch = items[first : first + per_batch]
            drawn = await draw(batch)
            pending.append(asyncio.create_task(execute(drawn, len(batch))))
            while len(pending) > max(depth, 0) or (pending and pending[0].done()):
                await pending.pop(0)  # the oldest first: a failure surfaces in order
        while pending:
            await pending.pop(0)
    except asyncio.CancelledError:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise
    except Exception:
        # the slices drawn before the failure (a generator server gone) still run and are written
        await asyncio.gather(*pending, return_exceptions=True)
        raise
    bar.close()
    wanted = {item.id for item in items}
    return [r for r in store.get(spec.experiment, spec.method, spec.seed, spec.iteration) if r.query_id in wanted]


def copy_twin_rollouts(
    store: RolloutStore, spec: CollectSpec, query_ids: Sequence[str], twins: Mapping[str, RolloutStore]
) -> int:
    """Copy into ``spec.method`` the rollouts of ``query_ids`` (samples 0 .. m - 1) that a twin
    (method -> the store holding its rows) holds and it lacks, under its own method name; returns
    how many. An infra_error row is not copied (it says nothing about the workflow: it is collected
    again)."""
    import dataclasses

    wanted = set(query_ids)
    have = store.keys(spec.experiment, spec.method, spec.seed, spec.iteration)
    copied: list[Rollout] = []
    for twin, holder in twins.items():
        for rollout in holder.get(spec.experiment, twin, spec.seed, spec.iteration):
            if rollout.query_id not in wanted or rollout.sample_idx >= spec.num_samples:
                continue
            if rollout.status == RunStatus.INFRA_ERROR.value:
                continue
            mine = dataclasses.replace(rollout, method=spec.method)
            if mine.key not in have:
                copied.append(mine)
                have.add(mine.key)
    if copied:
        store.put(copied)
    return len(copied)


def mean_score(rollouts: Sequence[Rollout]) -> float:
    scores = [r.score for r in rollouts if r.score is not None]
    return statistics.fmean(scores) if scores else float("nan")
