"""Peak memory of one GRPO update step: the full-width forward of before, against the memory-safe
step (completion-only logits, micro-batches, optionally gradient checkpointing).

A random-init Qwen2 with Qwen2.5's 151,936-token vocabulary (small hidden size: the vocabulary is
what makes the logits large), LoRA on q_proj and v_proj through peft, one question's m sequences
of prompt + completion tokens, all C(m, n) groups. Each variant runs `methods.steps.group_step` (the
real step; only the policy's log-prob function differs) in a fresh process, which reports its peak
memory: ru_maxrss on the CPU, torch.cuda.max_memory_allocated on a GPU. The script first checks
that the variants compute the same step (loss and gradient within 1e-5), then measures.

"before" is the layout the trainer used until issue 22: every sequence right-padded, logits over
all prompt + completion positions, one forward and backward for the whole unit. Needs only torch,
transformers and peft (no pydantic), so it runs on a bare GPU box:

    python bench/update_memory.py [--device cuda] [--dtype bfloat16] [--sequences 8 --prompt 256 --completion 128]

Last line: `update_memory: ratio=<before peak / after peak> (before=..., after=..., ...)`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

VOCAB = 151_936  # Qwen2.5's vocabulary
VARIANTS: dict[str, tuple[str, int, bool]] = {
    "before": ("full", 0, False),  # (layout, sequences per micro-batch (0: all), gradient checkpointing)
    "after": ("completion", 2, False),
    "after+checkpointing": ("completion", 2, True),
}


def full_width_logprobs(model: Any, rollouts: Any, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous trainer forward: right padding, float32 logits over every position."""
    device = next(model.parameters()).device
    width = max(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts)
    ids = torch.zeros((len(rollouts), width), dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, r in enumerate(rollouts):
        sequence = list(r.prompt_ids) + list(r.completion_ids)
        ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float() / temperature
    completion = max(len(r.completion_ids) for r in rollouts)
    logp = torch.zeros((len(rollouts), completion), device=device)
    mask = torch.zeros_like(logp)
    for row, r in enumerate(rollouts):
        start, length = len(r.prompt_ids), len(r.completion_ids)
        targets = torch.tensor(r.completion_ids, device=device)
        picked = torch.log_softmax(logits[row, start - 1 : start - 1 + length], -1).gather(-1, targets[:, None])
        logp[row, :length] = picked.squeeze(-1)
        mask[row, :length] = 1.0
    return logp, mask


class BenchPolicy:
    """The `Policy` an update step needs, around a peft model (methods/steps.py)."""

    collective_forwards = False  # one process, the model whole

    def __init__(self, model: Any, layout: str, micro: int) -> None:
        self.model, self.layout, self.micro_batch_sequences = model, layout, micro

    def completion_logprobs(self, rollouts: Any, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        from spogw.harness.policy.logprobs import completion_logprobs

        if self.layout == "full":
            return full_width_logprobs(self.model, rollouts, temperature)
        return completion_logprobs(self.model, rollouts, temperature)

    def reference_logprobs(self, rollouts: Any, ref: str, temperature: float) -> dict[Any, torch.Tensor]:
        raise NotImplementedError("the bench gives the step a fixed reference cache")

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        self.model.train()


def build(args: argparse.Namespace, checkpointing: bool) -> tuple[Any, Any, dict[Any, torch.Tensor]]:
    """The model (LoRA, no dropout), one question's unit with all its groups, a reference cache."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from spogw.harness.rollouts import Rollout
    from spogw.methods.losses import build_groups, group_advantages
    from spogw.methods.units import GroupUnit

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    base = Qwen2ForCausalLM(config).to(device=args.device, dtype=dtype)  # type: ignore[call-arg]
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, 0.0, 0.02)  # B = 0 would leave every other LoRA gradient zero
    if checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.2x
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # the older name, on a GPU box with an older transformers
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    generator = torch.Generator().manual_seed(1)
    rollouts = []
    for k in range(args.sequences):
        prompt_length = args.prompt - 17 * k % max(args.prompt // 4, 1)  # lengths vary, as sampled ones do
        completion_length = args.completion - 13 * k % max(args.completion // 4, 1)
        prompt = torch.randint(0, VOCAB, (prompt_length,), generator=generator).tolist()
        completion = torch.randint(0, VOCAB, (completion_length,), generator=generator).tolist()
        # near a random-init model's own log-probs (-log V): ratios near 1, a small KL, as in training
        noise = 0.1 * torch.randn(completion_length, generator=generator)
        old = (noise - torch.log(torch.tensor(float(VOCAB)))).tolist()
        rollouts.append(
            Rollout("bench", "spogw", 0, 0, "q", k, "p", "", tuple(prompt), tuple(completion), tuple(old), "ok", "",
                    float(k % 3) / 2, (), 0, 0, 0.0)
        )  # fmt: skip
    scores = torch.tensor([r.score for r in rollouts])
    groups = build_groups(len(rollouts), args.group_size, args.max_groups, 0)
    advantages = group_advantages(scores[groups])
    unit = GroupUnit("q", tuple(rollouts), groups, advantages, len(groups), len(groups), scores, scores)
    ref_cache = {r.key: torch.tensor(r.old_logp) - 0.05 for r in rollouts}
    return model, unit, ref_cache


def run_variant(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """One step of ``name`` in this process; its loss, gradient norm and peak memory."""
    from spogw.methods.steps import group_step

    layout, micro, checkpointing = VARIANTS[name]
    model, unit, ref_cache = build(args, checkpointing)
    policy = BenchPolicy(model, layout, micro)
    policy.train_mode()
    config = SimpleNamespace(
        policy_term="clip", kl="masked", aggregation="seq_mean", beta=0.1, eps_low=0.2, eps_high=0.2, max_grad_norm=1e9
    )
    params = policy.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=0.0)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    metrics = group_step(policy, [unit], config, ref_cache, optimizer, 1.0)
    gradient = torch.cat([p.grad.reshape(-1).float().cpu() for p in params if p.grad is not None])
    peak_mib = (
        torch.cuda.max_memory_allocated() / 2**20
        if args.device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "variant": name,
        "loss": metrics["loss"],
        "gradient": gradient.tolist()[:: max(len(gradient) // 4096, 1)],
        "peak_mib": peak_mib,
        "rss_before_step_mib": before_rss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=8, help="m: one question's unique sequences")
    parser.add_argument("--group-size", type=int, default=6)
    parser.add_argument("--max-groups", type=int, default=28)
    parser.add_argument("--prompt", type=int, default=256, help="longest prompt, tokens")
    parser.add_argument("--completion", type=int, default=128, help="longest completion, tokens")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the model's weights")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # a child process: one variant
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args, args.variant)))
        return
    root = Path(__file__).resolve().parents[1]
    results = {}
    for name in VARIANTS:
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--variant", name],
            capture_output=True, text=True, check=True, cwd=root,
        )  # fmt: skip
        results[name] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"{name}: loss {results[name]['loss']:.6f}, peak {results[name]['peak_mib']:.0f} MiB", flush=True)
    reference = torch.tensor(results["before"]["gradient"])
    # float32: the layouts agree to rounding; bf16: kernels round differently by shape (measured on an
    # H200: 5.9e-2 of the largest gradient entry), so only a gross error is caught there
    tolerance = 1e-5 if args.dtype == "float32" else 0.1
    for name in VARIANTS:
        other = torch.tensor(results[name]["gradient"])
        difference = float((other - reference).abs().max() / reference.abs().max().clamp(min=1e-12))
        loss_difference = abs(results[name]["loss"] - results["before"]["loss"])
        print(f"{name}: relative gradient difference {difference:.1e}, loss difference {loss_difference:.1e}")
        assert difference < tolerance and loss_difference < max(tolerance, 1e-6), f"{name} computes another step"
    before, after = results["before"]["peak_mib"], results["after"]["peak_mib"]
    checkpointed = results["after+checkpointing"]["peak_mib"]
    unit = "GPU MiB allocated" if args.device.startswith("cuda") else "MiB peak RSS"
    shape = f"{args.sequences} seqs x ({args.prompt}+{args.completion}) tokens, vocab {VOCAB}"
    shape += f", {args.device} {args.dtype}"
    print(
        f"update_memory: ratio={before / after:.1f} (before={before:.0f}, after={after:.0f} with micro-batches of 2, "
        f"after+checkpointing={checkpointed:.0f} {unit}; {shape})"
    )


if __name__ == "__main__":
    main()
