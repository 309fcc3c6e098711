"""Throughput of the openai executor against a local stub server that answers after a fixed latency.

Sequential calls (one in flight) against bounded concurrency 8, 32 and 128, in one process, same
server; prints calls/s per level and the ratio to sequential. The last line is the figure issue 3
asks for (concurrency 32 vs 1; target >= 20x at 200 ms latency).

    python bench/executor_throughput.py [--latency-s 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from spogw.harness.benchmarks.base import Item
from spogw.harness.executors.base import CallInfo
from spogw.harness.executors.openai_api import OpenAIExecutor
from spogw.harness.executors.stub_server import StubServer

ITEM = Item("bench", "math", "What is 6 * 7?", "42")


async def calls_per_second(url: str, concurrency: int, calls: int) -> float:
    executor = OpenAIExecutor("stub", url, max_concurrent_calls=concurrency, cache_path=None)
    start = time.perf_counter()
    # distinct occurrences: no two calls are the same request
    await asyncio.gather(*(executor.complete("What is 6 * 7?", CallInfo("Custom", ITEM, 0, k)) for k in range(calls)))
    elapsed = time.perf_counter() - start
    await executor.close()
    return calls / elapsed


async def main(latency_s: float) -> None:
    async with StubServer(latency_s=latency_s) as server:
        sequential = await calls_per_second(server.url, 1, 10)
        print(f"concurrency   1: {sequential:7.2f} calls/s")
        results = {}
        for concurrency in (8, 32, 128):
            results[concurrency] = await calls_per_second(server.url, concurrency, 4 * concurrency)
            print(
                f"concurrency {concurrency:3d}: {results[concurrency]:7.2f} calls/s "
                f"({results[concurrency] / sequential:.1f}x sequential)"
            )
    print(
        f"executor_concurrency_32_vs_1: ratio={results[32] / sequential:.1f} "
        f"(a={results[32]:.2f} calls/s, b={sequential:.2f} calls/s, latency {latency_s * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-s", type=float, default=0.2)
    asyncio.run(main(parser.parse_args().latency_s))
