"""Group deduplication: SPOGW's update on m = 16 samples and all C(16, 14) = 120 groups of 14.

The harness forwards each of the 16 sequences once and folds every (group, member) row into
per-sequence coefficients (methods/losses.py: group_coefficients + grpo_loss); the textbook form
materialises the 120 x 14 = 1,680 rows and forwards each (grpo_loss_rows, as TRL would). Both run
here, side by side, on the same tiny-preset generator, sequences, scores and LoRA weights: the
script checks that loss and gradients agree, then times forward + backward of each.

    SPOGW_CACHE=... python bench/group_dedup.py [--repeats 3] [--row-batch 120]

Last line: `group_dedup: ratio=<materialised time / dedup time> (dedup=..., materialised=...)`.
"""

from __future__ import annotations

import argparse
import time

import torch

from spogw.harness.config import GeneratorConfig
from spogw.harness.policy.logprobs import completion_logprobs
from spogw.harness.policy.model import load_generator
from spogw.harness.policy.sampling import SamplingParams
from spogw.harness.rollouts import Rollout
from spogw.methods.losses import build_groups, group_advantages, group_coefficients, grpo_loss, grpo_loss_rows

QUESTION = "Tom has 3 boxes with 12 apples each. He gives away 7 apples. How many apples are left?"
BETA, KL = 0.1, "standard"


def sampled_rollouts(generator: object, m: int) -> list[Rollout]:
    prompt = generator.prompt("math", QUESTION)  # type: ignore[attr-defined]
    params = SamplingParams(1.0, 0.95, 96, ("</graph>",))
    samples = generator.sample([prompt] * m, [(0, 0, "bench", k) for k in range(m)], params)  # type: ignore[attr-defined]
    return [
        Rollout("bench", "spogw", 0, 0, "q", k, prompt, s.text, tuple(s.prompt_ids), tuple(s.completion_ids),
                tuple(s.logprobs), "ok", "", None, (), 0, 0, 0.0)
        for k, s in enumerate(samples)
    ]  # fmt: skip


def lora_grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad and p.grad is not None])


def dedup_step(generator: object, rollouts: list[Rollout], groups: torch.Tensor, advantages: torch.Tensor,
               old: torch.Tensor, ref: torch.Tensor) -> tuple[float, int]:  # fmt: skip
    """One forward of the m unique sequences; every group folded into coefficients."""
    model = generator.model  # type: ignore[attr-defined]
    logp, mask = completion_logprobs(model, rollouts, 1.0, generator.constraint)  # type: ignore[attr-defined]
    lengths = mask.sum(dim=1)
    coefficients = group_coefficients(groups, advantages, lengths, KL, "seq_mean", len(rollouts))
    loss, _ = grpo_loss(logp, old, ref, mask, coefficients, BETA)
    loss.backward()
    return float(loss.detach()), sum(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts)


def materialised_step(generator: object, rollouts: list[Rollout], groups: torch.Tensor, advantages: torch.Tensor,
                      old: torch.Tensor, ref: torch.Tensor, row_batch: int) -> tuple[float, int]:  # fmt: skip
    """Every (group, member) as its own row, forwarded in batches of ``row_batch`` rows; the
    seq_mean loss over all rows is accumulated batch by batch (same value and gradient)."""
    model = generator.model  # type: ignore[attr-defined]
    members = groups.reshape(-1).tolist()
    row_advantages = advantages.reshape(-1)
    total, tokens = 0.0, 0
    for start in range(0, len(members), row_batch):
        index = members[start : start + row_batch]
        rows = [rollouts[i] for i in index]
        logp, mask = completion_logprobs(model, rows, 1.0, generator.constraint)  # type: ignore[attr-defined]
        width = logp.shape[1]
        part = grpo_loss_rows(
            logp, old[index, :width], ref[index, :width], mask,
            row_advantages[start : start + len(index), None], BETA, KL,
        )  # fmt: skip
        weighted = part * len(index) / len(members)
        weighted.backward()
        total += float(weighted.detach())
        tokens += sum(len(r.prompt_ids) + len(r.completion_ids) for r in rows)
    return total, tokens


def timed(step: object, model: torch.nn.Module, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main(repeats: int, row_batch: int) -> None:
    torch.manual_seed(0)
    generator = load_generator(GeneratorConfig(lora={"dropout": 0.0}), device="cpu", progress=False)
    model = generator.model
    model.train()
    m, n = 16, 14
    rollouts = sampled_rollouts(generator, m)
    scores = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (m,), generator=torch.Generator().manual_seed(0))]
    groups = build_groups(m, n, max_groups=120, seed=0)
    advantages = group_advantages(scores[groups])
    with torch.no_grad():
        old, _ = completion_logprobs(model, rollouts, 1.0, generator.constraint)
        with generator.reference("base"):
            ref, _ = completion_logprobs(model, rollouts, 1.0, generator.constraint)
    # the same loss and gradient, first
    model.zero_grad(set_to_none=True)
    dedup_loss, dedup_tokens = dedup_step(generator, rollouts, groups, advantages, old, ref)
    dedup_grad = lora_grads(model).clone()
    model.zero_grad(set_to_none=True)
    rows_loss, rows_tokens = materialised_step(generator, rollouts, groups, advantages, old, ref, row_batch)
    rows_grad = lora_grads(model)
    gap = float((dedup_grad - rows_grad).abs().max())
    scale = float(rows_grad.abs().max())
    print(f"groups {groups.shape[0]} x {n} members = {groups.numel()} rows over {m} unique sequences")
    print(
        f"loss: dedup {dedup_loss:.6f}, materialised {rows_loss:.6f}; "
        f"max |grad difference| {gap:.2e} (max |grad| {scale:.2e})"
    )
    if abs(dedup_loss - rows_loss) > 1e-4 * max(1.0, abs(rows_loss)) or gap > 1e-3 * max(scale, 1e-8):
        raise SystemExit("the two forms disagree: the timing would compare different computations")
    dedup_s = timed(lambda: dedup_step(generator, rollouts, groups, advantages, old, ref), model, repeats)
    rows_s = timed(lambda: materialised_step(generator, rollouts, groups, advantages, old, ref, row_batch), model, 1)
    print(f"forwarded tokens: dedup {dedup_tokens:,}, materialised {rows_tokens:,} ({rows_tokens / dedup_tokens:.1f}x)")
    print(f"group_dedup: ratio={rows_s / dedup_s:.1f} (dedup={dedup_s:.3f}s, materialised={rows_s:.3f}s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of the dedup step (best is kept)")
    parser.add_argument("--row-batch", type=int, default=120, help="rows per forward in the materialised form")
    arguments = parser.parse_args()
    main(arguments.repeats, arguments.row_batch)
