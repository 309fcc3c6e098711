"""The learning check of the methods issue: on the tiny preset with the SIMULATED executor, three
SPOGW iterations raise the mean training score of the sampled workflows over iteration 0 on at
least 2 of 3 seeds. Simulator numbers, printed for the record; not an LLM result."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.config import GeneratorConfig
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.policy.model import load_generator
from spogw.harness.policy.sampling import SamplingParams
from spogw.harness.rollouts import MemoryStore
from spogw.harness.train import IterationSummary, Task, TrainingRun, run_method
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.methods.spogw import SPOGWConfig

QUESTIONS = 48
"""gsm_synth training questions per iteration: with fewer, the per-iteration mean moves by +-0.02
from sampling noise alone, the size of one iteration's gain."""

CONFIG = SPOGWConfig(
    num_samples=16, group_size=14, max_groups=28, sharpen_t=2, learning_rate=5e-3, epochs=8, questions_per_step=4
)
"""The paper's m=16, n=14 with 28 of the 120 groups drawn per question, t=2, and the learning rate and
epochs that a million-parameter LoRA needs (docs/methods.md, "The learning check")."""


def spogw_train_scores(seed: int) -> tuple[list[float], list[float]]:
    """Mean training score and fraction of runnable workflows per iteration 0..3 for one seed."""
    generator = load_generator(GeneratorConfig(name="tiny"), device="cpu", progress=False)
    assert generator.constraint is not None, "the tiny preset decodes in the grammar by default"
    benchmark = load_benchmark("gsm_synth")
    items = benchmark.split("train", 0.8, seed=0)[:QUESTIONS]
    store = MemoryStore()

    async def go() -> list[IterationSummary]:
        engine = WorkflowEngine(SimExecutor("medium", seed=seed), concurrency=4, timeout_s=60)
        try:
            run = TrainingRun(
                experiment="learning-check",
                label="spogw",
                config=CONFIG,
                tasks=[Task(benchmark, items)],
                seed=seed,
                iterations=3,
                repeats=1,
                params=SamplingParams(1.0, 0.95, 96),
            )
            return await run_method(generator, engine, store, run)
        finally:
            await engine.close()

    summaries = asyncio.run(go())
    ok = []
    for summary in summaries:
        rollouts = store.get("learning-check", "spogw", seed, summary.iteration)
        ok.append(sum(r.status == "ok" for r in rollouts) / len(rollouts))
    return [s.train_score for s in summaries], ok


@pytest.mark.slow
def test_three_spogw_iterations_raise_the_training_score_on_two_of_three_seeds(standard_tiny: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the documented learning check ran with two threads (float sums depend on it)
    try:
        improved = 0
        for done, seed in enumerate((0, 1, 2)):
            if improved >= 2 or improved + (3 - done) < 2:
                break  # the verdict on "2 of 3" is decided: the third seed runs only when the first two split
            scores, ok = spogw_train_scores(seed)
            assert len(scores) == 4, "iterations 0..3 (the last is the final collection)"
            print(
                f"seed {seed}: train score "
                + " -> ".join(f"{s:.3f}" for s in scores)
                + "; workflows that run: "
                + " -> ".join(f"{f:.2f}" for f in ok)
                + " (SIMULATED executor)"
            )
            assert min(ok) == 1.0, "grammar decoding only writes workflows that run"
            improved += scores[3] > scores[0]
        assert improved >= 2
    finally:
        torch.set_num_threads(before)  # the worker goes on with its own thread count
