"""Our GRPO update step against TRL's GRPOTrainer loss + backward: the same tiny-preset model (its
LoRA adapter), the same 16 sequences of one group, the same advantages, old and reference log-probs,
beta 0.1 with the standard k3 KL, CPU, generation excluded. Both losses are checked equal first.

Ours: `completion_logprobs` + `group_coefficients` + `grpo_loss` (methods/losses.py), decoding
unconstrained here because TRL has no grammar mask. TRL: `GRPOTrainer._compute_loss` (loss_type
"grpo"), the method its `compute_loss` calls, fed the batch its generation step would produce.

    SPOGW_CACHE=... python bench/update_vs_trl.py [--repeats 5]

Last line: `update_vs_trl: ratio=<our tokens/s / TRL tokens/s> (a=..., b=...)`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from typing import Any

import torch

from spogw.harness.config import GeneratorConfig
from spogw.harness.policy.logprobs import completion_logprobs
from spogw.harness.policy.model import load_generator
from spogw.harness.policy.sampling import SamplingParams
from spogw.harness.rollouts import Rollout
from spogw.methods.losses import group_advantages, group_coefficients, grpo_loss

BETA = 0.1
PROMPT_QUESTION = "Tom has 3 boxes of 12 apples and gives away 7. How many apples are left?"


def trl_trainer(generator: Any, output_dir: str) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=16,
        num_generations=16,
        beta=BETA,
        loss_type="grpo",
        report_to=[],
        use_cpu=True,
        max_completion_length=96,
        logging_steps=1000,
        save_strategy="no",
        bf16=False,  # TRL defaults to bf16 autocast; ours runs float32 on CPU
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GRPOTrainer(
            model=generator.model,
            reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
            args=args,
            train_dataset=Dataset.from_dict({"prompt": [PROMPT_QUESTION] * 16}),
            processing_class=generator.tokenizer,
        )


def trl_inputs(
    rollouts: list[Rollout], advantages: torch.Tensor, old: torch.Tensor, ref: torch.Tensor, pad: int
) -> dict:
    """The batch TRL's generation step hands to the loss: left-padded prompts, right-padded completions."""
    prompt_width = max(len(r.prompt_ids) for r in rollouts)
    width = max(len(r.completion_ids) for r in rollouts)
    prompt_ids = torch.full((len(rollouts), prompt_width), pad)
    prompt_mask = torch.zeros((len(rollouts), prompt_width), dtype=torch.long)
    completion_ids = torch.full((len(rollouts), width), pad)
    completion_mask = torch.zeros((len(rollouts), width), dtype=torch.long)
    for row, rollout in enumerate(rollouts):
        p, c = len(rollout.prompt_ids), len(rollout.completion_ids)
        prompt_ids[row, prompt_width - p :] = torch.tensor(rollout.prompt_ids)
        prompt_mask[row, prompt_width - p :] = 1
        completion_ids[row, :c] = torch.tensor(rollout.completion_ids)
        completion_mask[row, :c] = 1
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
    }


def best_time(step: Any, model: torch.nn.Module, repeats: int) -> tuple[float, float]:
    best, value = float("inf"), 0.0
    for _ in range(repeats + 1):  # the first call warms up
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = step()
        loss.backward()
        elapsed = time.perf_counter() - start
        best, value = min(best, elapsed), float(loss.detach())
    return best, value


def main(repeats: int) -> None:
    torch.manual_seed(0)
    generator = load_generator(GeneratorConfig(decoding="free", lora={"dropout": 0.0}), device="cpu", progress=False)
    model = generator.model
    prompt = generator.prompt("math", PROMPT_QUESTION)
    samples = generator.sample([prompt] * 16, [(0, 0, "bench", k) for k in range(16)], SamplingParams(1.0, 0.95, 96))
    rollouts = [
        Rollout("b", "m", 0, 0, "q", k, prompt, s.text, s.prompt_ids, s.completion_ids, s.logprobs, "ok", "", None,
                (), 0, 0, 0.0)
        for k, s in enumerate(samples)
    ]  # fmt: skip
    scores = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(0))]
    groups = torch.arange(16)[None]
    advantages = group_advantages(scores[groups])
    model.train()
    with torch.no_grad():
        old, mask = completion_logprobs(model, rollouts, 1.0)
        old = old + 0.01 * torch.randn_like(old) * mask  # a ratio that is not 1, so clipping is exercised
        with generator.reference("base"):
            ref, _ = completion_logprobs(model, rollouts, 1.0)
    lengths = mask.sum(dim=1)
    coefficients = group_coefficients(groups, advantages, lengths, "standard", "seq_mean", 16)

    def ours() -> torch.Tensor:
        logp, token_mask = completion_logprobs(model, rollouts, 1.0)
        return grpo_loss(logp, old, ref, token_mask, coefficients, BETA)[0]

    with tempfile.TemporaryDirectory() as folder:
        trainer = trl_trainer(generator, folder)
        inputs = trl_inputs(rollouts, advantages[0], old, ref, generator.tokenizer.pad_token_id)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by its training loop; one micro-batch here

        def theirs() -> torch.Tensor:
            return trainer._compute_loss(trainer.model, inputs)

        ours_s, ours_loss = best_time(ours, model, repeats)
        trl_s, trl_loss = best_time(theirs, trainer.model, repeats)
    tokens = sum(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts)
    print(f"loss: ours {ours_loss:.6f}, TRL {trl_loss:.6f} (same batch, advantages, old and reference log-probs)")
    if abs(ours_loss - trl_loss) > 1e-4 * max(1.0, abs(trl_loss)):
        raise SystemExit("the two losses differ: the timing would compare different computations")
    print(f"ours {ours_s * 1000:.1f} ms, TRL {trl_s * 1000:.1f} ms per loss + backward ({tokens:,} tokens)")
    print(
        f"update_vs_trl: ratio={trl_s / ours_s:.2f} "
        f"(a={tokens / ours_s:,.0f} tok/s ours, b={tokens / trl_s:,.0f} tok/s TRL)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    main(parser.parse_args().repeats)
