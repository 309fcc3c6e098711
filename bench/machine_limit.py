"""How close the training step comes to the machine: achieved FLOP/s of the forward + backward of one
update's batch on the tiny preset (16 completions' log-probs under the grammar mask; the loss terms
themselves cost next to nothing), counted as 6 x parameters x tokens / time, divided by the FLOP/s of
a large float32 matmul on the same machine, in the same run. With LoRA the frozen weights get no
weight gradient, so the true count is nearer 4 x parameters x tokens: the ratio is an upper bound.

    SPOGW_CACHE=... python bench/machine_limit.py

Last line: `training_step_vs_matmul: ratio=... (a=<step GFLOP/s>, b=<matmul GFLOP/s>)`.
"""

from __future__ import annotations

import time

import torch

from spogw.harness.config import GeneratorConfig
from spogw.harness.policy.logprobs import completion_logprobs
from spogw.harness.policy.model import load_generator
from spogw.harness.policy.sampling import SamplingParams
from spogw.harness.rollouts import Rollout


def matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def step_flops(repeats: int = 5) -> tuple[float, int, int]:
    generator = load_generator(GeneratorConfig(), device="cpu", progress=False)
    model = generator.model
    prompt = generator.prompt("math", "Tom has 3 boxes of 12 apples and gives away 7. How many are left?")
    samples = generator.sample([prompt] * 16, [(0, 0, "bench", k) for k in range(16)], SamplingParams(1.0, 0.95, 96))
    rollouts = [
        Rollout("b", "m", 0, 0, "q", k, prompt, s.text, s.prompt_ids, s.completion_ids, s.logprobs, "ok", "", 1.0,
                (1.0,), 0, 0, 0.0)
        for k, s in enumerate(samples)
    ]  # fmt: skip
    tokens = sum(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts)
    parameters = sum(p.numel() for p in model.parameters())
    model.train()
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        logp, mask = completion_logprobs(model, rollouts, 1.0, generator.constraint)
        (-(logp * mask).sum() / mask.sum()).backward()
        best = min(best, time.perf_counter() - start)
    return 6 * parameters * tokens / best, parameters, tokens


def main() -> None:
    step, parameters, tokens = step_flops()
    peak = matmul_flops()
    print(f"training step: {parameters:,} parameters x {tokens:,} tokens, {step / 1e9:.2f} GFLOP/s")
    print(f"float32 matmul 2048^3: {peak / 1e9:.2f} GFLOP/s ({torch.get_num_threads()} threads)")
    print(f"training_step_vs_matmul: ratio={step / peak:.3f} (a={step / 1e9:.2f} GFLOP/s, b={peak / 1e9:.2f} GFLOP/s)")


if __name__ == "__main__":
    main()
