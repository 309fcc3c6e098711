"""Pipelined collection against collection one slice at a time: the wall time of `collect_questions`
with a stub sampler of fixed latency per batch (a served generator's batch) and the `openai`
executor against a local stub server that answers after 200 ms, with the pipeline (the next slice
drawn while the current one runs; `collect.PIPELINE_DEPTH`) and without it (depth 0: draw, run,
write, then the next slice). The CoT workflow (one executor call per run) in isolated workers;
8 questions x 8 samples a slice, 6 slices, 32 runs in flight; the pool is warmed up first.

    python bench/collection_pipeline.py [--sampler-s 0.6] [--latency-s 0.2]

Last line: `collection_pipelined_vs_sequential: ratio=<sequential wall / pipelined wall> (...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.collect import PIPELINE_DEPTH, CollectSpec, collect_questions
from spogw.harness.evaluate import evaluate_workflow
from spogw.harness.executors.openai_api import OpenAIExecutor
from spogw.harness.executors.stub_server import StubServer
from spogw.harness.policy.sampling import Sample, SampleKey, SamplingParams
from spogw.harness.rollouts import MemoryStore
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.methods.static import workflow_source

SAMPLES = 8
QUESTIONS = 48


@dataclass
class StubSampler:
    """A generator whose every batch takes ``latency_s`` (the served model's time) and writes the CoT
    workflow: what collection sees of a vLLM-served generator, without a model."""

    latency_s: float
    served: None = None
    exact_sampler_logprobs: bool = True

    def prompt(self, domain: str, question: str) -> str:
        return question

    def sample(self, prompts: Sequence[str], keys: Sequence[SampleKey], params: SamplingParams) -> list[Sample]:
        time.sleep(self.latency_s)  # blocking, as a real sampler's batch is (collection runs it on a thread)
        text = f"<graph>\n{workflow_source('cot')[1]}\n</graph>"
        return [Sample(tuple(key), (1, 2), (3, 4), (-0.5, -0.5), text, "stop") for key in keys]


async def wall_time(depth: int, sampler_s: float, latency_s: float) -> float:
    benchmark = load_benchmark("gsm_synth", size=120)
    items = list(benchmark.items)[:QUESTIONS]
    async with StubServer(latency_s=latency_s) as server:
        executor = OpenAIExecutor("stub", server.url, max_concurrent_calls=64, cache_path=None)
        engine = WorkflowEngine(executor, concurrency=32, timeout_s=60)
        try:
            warm = list(benchmark.items)[QUESTIONS : QUESTIONS + 32]  # starts every worker process once
            await evaluate_workflow(workflow_source("cot")[1], benchmark, warm, engine, repeats=1, progress=False)
            spec = CollectSpec("bench", "spogw", 0, 0, num_samples=SAMPLES, repeats=1)
            start = time.perf_counter()
            rollouts = await collect_questions(
                StubSampler(sampler_s),  # type: ignore[arg-type]
                engine,
                benchmark,
                items,
                spec,
                SamplingParams(),
                MemoryStore(),
                depth=depth,
            )
            elapsed = time.perf_counter() - start
            assert len(rollouts) == QUESTIONS * SAMPLES and all(r.status == "ok" for r in rollouts)
        finally:
            await engine.close()
            await executor.close()
    return elapsed


async def main(sampler_s: float, latency_s: float) -> None:
    sequential = await wall_time(0, sampler_s, latency_s)
    print(f"one slice at a time:        {sequential:6.2f} s")
    pipelined = await wall_time(PIPELINE_DEPTH, sampler_s, latency_s)
    print(f"pipelined (depth {PIPELINE_DEPTH}):       {pipelined:6.2f} s")
    print(
        f"collection_pipelined_vs_sequential: ratio={sequential / pipelined:.2f} "
        f"(a={sequential:.2f}s sequential, b={pipelined:.2f}s pipelined; {QUESTIONS}x{SAMPLES} workflows, "
        f"sampler {sampler_s * 1000:.0f} ms/batch, executor {latency_s * 1000:.0f} ms/call)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampler-s", type=float, default=0.6)
    parser.add_argument("--latency-s", type=float, default=0.2)
    args = parser.parse_args()
    asyncio.run(main(args.sampler_s, args.latency_s))
