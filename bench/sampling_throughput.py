"""Generator sampling throughput on the tiny preset: completion tokens per second at batch 1, 16
and 64 (grammar-constrained decoding, as the preset samples in collection), in one process.

    SPOGW_CACHE=... python bench/sampling_throughput.py

Last line: `sampling_batch_64_vs_1: ratio=... (a=<tok/s at 64>, b=<tok/s at 1>)`.
"""

from __future__ import annotations

import time

import torch

from spogw.harness.config import GeneratorConfig
from spogw.harness.policy.model import load_generator
from spogw.harness.policy.sampling import SamplingParams

QUESTIONS = [f"A shop sells {k} pens a day for {k + 3} days. How many pens does it sell?" for k in range(64)]


def tokens_per_second(generator: object, batch: int, params: SamplingParams) -> float:
    prompts = [generator.prompt("math", q) for q in QUESTIONS[:batch]]  # type: ignore[attr-defined]
    keys = [(0, 0, f"bench{batch}", k) for k in range(batch)]
    start = time.perf_counter()
    samples = generator.sample(prompts, keys, params)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - start
    return sum(len(s.completion_ids) for s in samples) / elapsed


def main() -> None:
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    generator = load_generator(GeneratorConfig(), device="cpu", progress=False)
    params = SamplingParams(1.0, 0.95, 96, ("</graph>",))
    tokens_per_second(generator, 2, params)  # warm-up: allocator, kernels, the constraint's trie
    rates = {batch: tokens_per_second(generator, batch, params) for batch in (1, 16, 64)}
    for batch, rate in rates.items():
        print(f"batch {batch:3d}: {rate:8.1f} tokens/s")
    print(f"sampling_batch_64_vs_1: ratio={rates[64] / rates[1]:.1f} (a={rates[64]:.1f} tok/s, b={rates[1]:.1f} tok/s)")


if __name__ == "__main__":
    main()
