"""Collection throughput: workflows executed per second through the whole harness path (isolated
worker process, operator calls, scoring), with the `sim` executor (pure harness overhead: the
simulator answers instantly) and with the `openai` executor against a local stub server that
answers after 200 ms, at concurrency 1, 8, 32 and 128 (worker processes and requests in flight).
The CoT workflow (one executor call per run) on gsm_synth items; pools are warmed up first.

    python bench/collection_throughput.py [--latency-s 0.2]

Last line: `collection_openai_32_vs_1: ratio=... (a=<runs/s at 32>, b=<runs/s at 1>)`.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.evaluate import evaluate_workflow
from spogw.harness.executors.openai_api import OpenAIExecutor
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.executors.stub_server import StubServer
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.methods.static import workflow_source


async def runs_per_second(executor: object, concurrency: int, runs: int) -> float:
    benchmark = load_benchmark("gsm_synth", size=max(runs, concurrency))
    _, source = workflow_source("cot")
    engine = WorkflowEngine(executor, concurrency=concurrency, timeout_s=60)  # type: ignore[arg-type]
    try:
        warm = list(benchmark.items)[:concurrency]  # starts every worker process once
        await evaluate_workflow(source, benchmark, warm, engine, repeats=1, progress=False)
        items = list(benchmark.items)[:runs]
        start = time.perf_counter()
        done = await evaluate_workflow(source, benchmark, items, engine, repeats=1, progress=False)
        elapsed = time.perf_counter() - start
    finally:
        await engine.close()
    return len(done) / elapsed


async def main(latency_s: float) -> None:
    sim = await runs_per_second(SimExecutor(seed=0), 4, 200)
    print(f"sim executor, concurrency 4: {sim:7.1f} workflows/s (harness overhead only)")
    rates = {}
    async with StubServer(latency_s=latency_s) as server:
        for concurrency in (1, 8, 32, 128):
            executor = OpenAIExecutor("stub", server.url, max_concurrent_calls=concurrency, cache_path=None)
            rates[concurrency] = await runs_per_second(executor, concurrency, max(20, 4 * concurrency))
            await executor.close()
            print(
                f"openai executor, {latency_s * 1000:.0f} ms, concurrency {concurrency:3d}: "
                f"{rates[concurrency]:7.1f} workflows/s"
            )
    print(
        f"collection_openai_32_vs_1: ratio={rates[32] / rates[1]:.1f} "
        f"(a={rates[32]:.1f} runs/s, b={rates[1]:.1f} runs/s; sim {sim:.1f} runs/s; 128: {rates[128]:.1f} runs/s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-s", type=float, default=0.2)
    asyncio.run(main(parser.parse_args().latency_s))
