"""Held-out evaluation of a method's policy at one iteration: one workflow per test item (sampled
from the generator, or a static file), run `repeats` times, stored in chunks so a resumed
evaluation redoes exactly what is missing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Item
    from spogw.harness.plan import BenchmarkSplit
    from spogw.harness.policy.model import Generator
    from spogw.harness.store import SQLiteStore
    from spogw.harness.workflows.engine import WorkflowEngine

EVAL_CHUNK = 64
"""Test items sampled in one batch (64 rows decode 2.2x faster per workflow than 8 on the tiny
generator; harness/collect.py SEQUENCES_PER_BATCH). Chunks are fixed slices of the item list, and a chunk's rows
are written in one transaction, so a resumed evaluation samples exactly the batches it did before."""


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
    from spogw.harness.evaluate import EvalKey, evaluate_workflow

    key = EvalKey(target.experiment, target.label, target.seed, target.iteration, target.transfer)
    rows = await evaluate_workflow(sources, split.benchmark, items, engine, target.repeats, key=key, progress=False)
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
    shared_with: Mapping[str, SQLiteStore] | None = None,
) -> None:
    """One workflow sampled per test item (key (seed, iteration, 'eval:'+item, 0)), run ``repeats`` times.

    ``shared_with``: label -> the store holding its rows (a twin cell's shard, or this store), for
    the labels whose evaluation at this iteration is identical by construction (the untrained
    generator at iteration 0: the same model, keys and executor seed for every method); when one of
    them has every row of a benchmark, its rows are copied instead of recomputed."""
    import dataclasses

    from spogw.harness.workflows.extract import extract_workflow

    store, seed, iteration = target.store, target.seed, target.iteration
    for split in splits:
        name = split.benchmark.name
        done = store.eval_done(target.label, seed, iteration, name, target.transfer)
        wanted = {item.id for item in split.evaluated}
        for donor, holder in (shared_with or {}).items():
            if not wanted <= done and holder.eval_done(donor, seed, iteration, name) == wanted:
                rows = holder.eval_rows(donor, seed, iteration, benchmark=name)
                store.put_eval([dataclasses.replace(row, method=target.label) for row in rows])
                done = store.eval_done(target.label, seed, iteration, name)
        for chunk in _missing_chunks(split.evaluated, done):
            prompts = [generator.prompt(item.domain, item.question) for item in chunk]
            keys = [(seed, iteration, f"eval:{item.id}", 0) for item in chunk]
            samples = await asyncio.to_thread(generator.sample, prompts, keys, params)  # the loop keeps running
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
