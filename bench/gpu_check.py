"""GPU check of the generator path (run once on a lent GPU machine; prints one JSON line per check).

bf16 random-init Qwen2 (about 300M parameters at the default size) + LoRA through
harness.policy.model.attach_lora, sampling through harness.policy.sampling.sample_hf, sampled vs
teacher-forced log-probs, one LoRA training step (backward + AdamW), the base-reference forward,
grammar-constrained sampling, the in-process `hf` executor, and peak GPU memory. Needs only torch,
transformers and peft (no pydantic).

    python bench/gpu_check.py --tokenizer DIR [--hidden 1024 --layers 16] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace
from typing import Any


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True, help="a tiny-generator folder (tokenizer.json)")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()

    from pathlib import Path

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from spogw.harness.policy.model import Generator, attach_lora
    from spogw.harness.policy.sampling import SamplingParams, token_logprobs
    from spogw.harness.policy.tiny import load_tokenizer

    device = args.device
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    if device.startswith("cuda"):
        report(check="device", name=torch.cuda.get_device_name(0), torch=torch.__version__)
        torch.cuda.reset_peak_memory_stats()
    tokenizer = load_tokenizer(Path(args.tokenizer))
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 256),
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    base = Qwen2ForCausalLM(config).to(device=device, dtype=dtype)
    lora = SimpleNamespace(lora=SimpleNamespace(r=8, alpha=16, dropout=0.01, target_modules=["q_proj", "v_proj"]))
    model = attach_lora(base, lora)
    generator = Generator(model, tokenizer, "gpu-check", "compact", 96)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report(check="model", parameters=total, trainable=trainable, dtype=str(dtype))

    prompts = [
        generator.prompt("math", f"Ava has {k} apples and buys {k + 3} more. How many now?") for k in range(args.batch)
    ]
    keys = [(0, 0, "gpu", k) for k in range(args.batch)]
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=args.new_tokens, stop=())
    generator.sample(prompts[:2], keys[:2], SamplingParams(1.0, 0.95, 4, ()))  # warm-up (kernels, allocator)
    start = time.perf_counter()
    samples = generator.sample(prompts, keys, params)
    elapsed = time.perf_counter() - start
    tokens = sum(len(s.completion_ids) for s in samples)
    subset = generator.sample(prompts[:4], keys[:4], params)
    same_batch = generator.sample(prompts, keys, params)
    report(
        check="sampling",
        batch=args.batch,
        tokens=tokens,
        seconds=round(elapsed, 3),
        tokens_per_s=round(tokens / elapsed, 1),
        same_batch_reproducible=[s.completion_ids for s in same_batch] == [s.completion_ids for s in samples],
        subset_reproducible=[s.completion_ids for s in subset] == [s.completion_ids for s in samples[:4]],
    )

    model.eval()
    worst = 0.0
    with torch.no_grad():
        for sample in samples[:4]:
            forced = token_logprobs(model, sample.prompt_ids, sample.completion_ids, 1.0)
            worst = max(worst, float((forced.cpu() - torch.tensor(sample.logprobs)).abs().max()))
    report(check="logprob_agreement", max_abs_diff=worst, note="bf16 forward passes of different shapes")

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen_before = next(p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad)
    width = max(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    ids = torch.full((len(samples), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        seq = list(sample.prompt_ids) + list(sample.completion_ids)
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    loss = -(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()
    loss.backward()
    optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    step_s = time.perf_counter() - start
    changed = all(
        not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n
    )
    frozen_same = torch.equal(frozen_before, next(p for n, p in model.named_parameters() if not p.requires_grad))
    report(
        check="train_step",
        tokens=int(mask.sum()),
        seconds=round(step_s, 3),
        tokens_per_s=round(int(mask.sum()) / step_s, 1),
        loss=loss.item(),
        lora_b_changed=changed,
        base_frozen=frozen_same,
    )

    constrained_checks(generator, prompts, keys, device)
    generator.model.train()
    executor_check(config, tokenizer, device, args.dtype)

    with torch.no_grad(), generator.reference("base"):
        reference = token_logprobs(model, samples[0].prompt_ids, samples[0].completion_ids)
    report(check="reference_base", finite=bool(torch.isfinite(reference).all()), training_restored=model.training)
    if device.startswith("cuda"):
        report(check="memory", peak_allocated_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3))


def constrained_checks(generator: Any, prompts: list[str], keys: list[Any], device: str) -> None:
    """Grammar-constrained sampling on the device: every sample is a grammar workflow, and the
    masked teacher-forced log-probs match the sampler's."""
    import dataclasses

    import torch

    from spogw.harness.policy.constraint import GrammarConstraint
    from spogw.harness.policy.sampling import SamplingParams, token_logprobs
    from spogw.harness.workflows.extract import extract_workflow
    from spogw.harness.workflows.grammar import all_structures, render

    constraint = GrammarConstraint(generator.tokenizer)
    constrained = dataclasses.replace(generator, constraint=constraint)
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=96)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    samples = constrained.sample(prompts, keys, params)
    elapsed = time.perf_counter() - start
    grammar = {render(s).strip() for s in all_structures("math")}
    valid = sum((extract_workflow(s.text) or "").strip() in grammar for s in samples)
    vocab = generator.model.get_output_embeddings().weight.shape[0]
    worst = 0.0
    generator.model.eval()
    with torch.no_grad():
        for prompt, sample in zip(prompts[:4], samples[:4], strict=True):
            allowed = constraint.allowed_mask(prompt, sample.completion_ids, vocab)
            forced = token_logprobs(generator.model, sample.prompt_ids, sample.completion_ids, 1.0, allowed)
            worst = max(worst, float((forced.cpu() - torch.tensor(sample.logprobs)).abs().max()))
    tokens = sum(len(s.completion_ids) for s in samples)
    report(
        check="constrained_sampling",
        samples=len(samples),
        grammar_workflows=valid,
        tokens=tokens,
        tokens_per_s=round(tokens / elapsed, 1),
        logprob_max_abs_diff=worst,
    )


def executor_check(config: Any, tokenizer: Any, device: str, dtype: str) -> None:
    """The in-process `hf` executor on the device (a fresh random model of the same shape, saved as
    a plain folder): concurrent calls batched, tokens counted."""
    import asyncio
    import tempfile

    from transformers import Qwen2ForCausalLM

    from spogw.harness.benchmarks.base import Item
    from spogw.harness.executors.base import CallInfo
    from spogw.harness.executors.local_model import HFExecutor

    with tempfile.TemporaryDirectory() as folder:
        Qwen2ForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        executor = HFExecutor(folder, device=device, dtype=dtype, max_tokens=32, max_batch=8, batch_wait_s=0.05)
        item = Item("gpu", "math", "What is 6 * 7?", "42")

        async def go() -> list[Any]:
            calls = [
                executor.complete(f"Question {k}: what is {k} * 7?", CallInfo("Custom", item, 0, k)) for k in range(16)
            ]
            out = await asyncio.gather(*calls)
            await executor.close()
            return out

        start = time.perf_counter()
        completions = asyncio.run(go())
        elapsed = time.perf_counter() - start
    report(
        check="hf_executor",
        calls=executor.stats.calls,
        batches=executor.stats.network_calls,
        completion_tokens=sum(c.completion_tokens for c in completions),
        seconds=round(elapsed, 3),
    )


if __name__ == "__main__":
    main()
