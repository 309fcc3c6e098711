"""Teacher-forced log-probs of stored rollouts under the generator: the one forward pass that both
the update steps (methods/steps.py, with gradients) and the reference cache (without) use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from spogw.harness.rollouts import Rollout, RolloutKey

if TYPE_CHECKING:
    from spogw.harness.policy.constraint import GrammarConstraint
    from spogw.harness.policy.model import Generator


def completion_logprobs(
    model: Any, rollouts: Sequence[Rollout], temperature: float, constraint: GrammarConstraint | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, T) per-token log-probs of each rollout's completion and the (S, T) mask: one batched
    forward, right padding. log_softmax(logits / T) over the tokens the decoding ``constraint``
    allowed (all without one): the quantity the sampler recorded."""
    from spogw.harness.policy.constraint import masked_log_softmax

    device = next(model.parameters()).device
    width = max(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts)
    completion_width = max(len(r.completion_ids) for r in rollouts)
    ids = torch.zeros((len(rollouts), width), dtype=torch.long)
    attention = torch.zeros((len(rollouts), width), dtype=torch.long)
    for row, rollout in enumerate(rollouts):
        sequence = list(rollout.prompt_ids) + list(rollout.completion_ids)
        ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
    if temperature > 0:
        logits = logits / temperature
    logp = torch.zeros((len(rollouts), completion_width), device=device)
    mask = torch.zeros((len(rollouts), completion_width), device=device)
    for row, rollout in enumerate(rollouts):
        start, length = len(rollout.prompt_ids), len(rollout.completion_ids)
        targets = torch.tensor(rollout.completion_ids, device=device)
        allowed = (
            constraint.allowed_mask(rollout.prompt, rollout.completion_ids, logits.shape[-1])
            if constraint is not None
            else None
        )
        log_probs = masked_log_softmax(logits[row, start - 1 : start - 1 + length], allowed)
        picked = log_probs.gather(-1, targets[:, None]).squeeze(-1)
        logp[row, :length] = picked
        mask[row, :length] = 1.0
    return logp, mask


def reference_logprobs(
    generator: Generator, rollouts: Sequence[Rollout], ref: str, temperature: float, batch: int = 16
) -> dict[RolloutKey, torch.Tensor]:
    """Per-token reference log-probs (T_i,) of each rollout, computed once per iteration (no grad)."""
    cache: dict[RolloutKey, torch.Tensor] = {}
    with torch.no_grad(), generator.reference(ref):
        for start in range(0, len(rollouts), batch):
            chunk = rollouts[start : start + batch]
            logp, _ = completion_logprobs(generator.model, chunk, temperature, generator.constraint)
            for row, rollout in enumerate(chunk):
                cache[rollout.key] = logp[row, : len(rollout.completion_ids)].cpu()
    return cache
