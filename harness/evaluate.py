"""Evaluation of one workflow on a benchmark: every (item, repeat) run, scored, as `EvalRow`s (the
one record of an evaluation, from the engine to the store, the parquet files and the reports)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spogw.harness.atomic import atomic_path
from spogw.harness.benchmarks.base import Benchmark, Item
from spogw.harness.store import EvalRow
from spogw.harness.workflows.engine import RunOutcome, RunStatus, WorkflowEngine
from spogw.harness.workflows.sandbox import Sandbox


async def score_outcome(benchmark: Benchmark, item: Item, outcome: RunOutcome, sandbox: Sandbox) -> float | None:
    """The score of one run: the benchmark's scorer for ok, 0 for the workflow's own failures
    (invalid, timeout, runtime_error), None for infra_error (it says nothing about the workflow)."""
    if outcome.status is RunStatus.OK:
        return await benchmark.score(item, outcome.answer, sandbox)
    if outcome.status is RunStatus.INFRA_ERROR:
        return None
    return 0.0


@dataclass(frozen=True)
class EvalKey:
    """Whose evaluation the rows are: the fixed part of every row's key (empty for a standalone
    `spogw eval`)."""

    experiment: str = ""
    method: str = ""
    seed: int = 0
    iteration: int = 0
    transfer: str = ""


async def evaluate_workflow(
    source: str | Mapping[str, str],
    benchmark: Benchmark,
    items: Sequence[Item],
    engine: WorkflowEngine,
    repeats: int,
    *,
    key: EvalKey = EvalKey(),
    progress: bool = True,
    description: str = "eval",
) -> list[EvalRow]:
    """Run ``source`` on every item ``repeats`` times (concurrently, up to the engine's pool size),
    one scored `EvalRow` per run (score None for infra_error). ``source`` is one workflow for all
    items, or a mapping item id -> that item's workflow (what a generator wrote for it)."""
    from tqdm.auto import tqdm

    from spogw.harness.workflows.structure import structure_or_empty

    code = {item.id: source if isinstance(source, str) else source[item.id] for item in items}
    structures = {text: structure_or_empty(text) for text in set(code.values())}
    jobs = [(item, repeat) for item in items for repeat in range(repeats)]
    bar = tqdm(total=len(jobs), desc=description, unit="run", disable=None if progress else True, leave=False)

    async def one(item: Item, repeat: int) -> EvalRow:
        outcome = await engine.run(code[item.id], item, repeat)
        score = await score_outcome(benchmark, item, outcome, engine.sandbox)
        bar.update(1)
        return EvalRow(
            experiment=key.experiment,
            method=key.method,
            seed=key.seed,
            iteration=key.iteration,
            benchmark=benchmark.name,
            item_id=item.id,
            repeat=repeat,
            workflow_code=code[item.id],
            structure=structures[code[item.id]],
            status=outcome.status.value,
            reason=outcome.reason,
            score=score,
            calls=outcome.calls,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            wall_s=outcome.wall_s,
            transfer=key.transfer,
            cost_usd=outcome.cost_usd,
            answer=outcome.answer,
        )

    try:
        return list(await asyncio.gather(*(one(item, repeat) for item, repeat in jobs)))
    finally:
        bar.close()


def status_counts(runs: Sequence[EvalRow]) -> dict[str, int]:
    counts = Counter(run.status for run in runs)
    return {status.value: counts.get(status.value, 0) for status in RunStatus}


def write_parquet(rows: Sequence[EvalRow], path: Path, metadata: dict[str, Any]) -> Path:
    """Write rows atomically (temporary file, fsync, rename): a crash never leaves a torn file."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame([asdict(row) for row in rows])
    for key, value in metadata.items():
        frame[key] = value
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return path
