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


def completion_batch(rollouts: Sequence[Rollout]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The training layout of ``rollouts``: prompts left-padded to width P, completions right-padded
    to width C, so every completion starts at column P. Returns input ids (S, P + C), attention mask
    (S, P + C), position ids (S, P + C; counted from each row's first real token, as if unpadded)
    and C. The logits of the last C + 1 positions are all a completion's log-probs need."""
    prompt_width = max(len(r.prompt_ids) for r in rollouts)
    completion_width = max(len(r.completion_ids) for r in rollouts)
    ids = torch.zeros((len(rollouts), prompt_width + completion_width), dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, rollout in enumerate(rollouts):
        first = prompt_width - len(rollout.prompt_ids)
        sequence = list(rollout.prompt_ids) + list(rollout.completion_ids)
        ids[row, first : first + len(sequence)] = torch.tensor(sequence)
        attention[row, first : first + len(sequence)] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return ids, attention, positions, completion_width


def completion_logprobs(
    model: Any, rollouts: Sequence[Rollout], temperature: float, constraint: GrammarConstraint | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, T) per-token log-probs of each rollout's completion and the (S, T) mask: one batched
    forward. log_softmax(logits / T) over the tokens the decoding ``constraint`` allowed (all
    without one): the quantity the sampler recorded.

    Memory: logits are computed only for the completion positions (``logits_to_keep``, with the
    prompts left-padded so that every completion starts at the same column), never over the prompt:
    at a 152k vocabulary the full-width float32 logits of 16 sequences of 2k tokens are ~20 GB.
    Callers bound the sequences per call (harness/config.py TrainingConfig.micro_batch_sequences).
    """
    from spogw.harness.policy.constraint import masked_log_softmax

    device = next(model.parameters()).device
    ids, attention, positions, width = completion_batch(rollouts)
    logits = model(
        input_ids=ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        logits_to_keep=width + 1,
    ).logits[:, :-1]  # (S, C, V): position P - 1 + t predicts completion token t
    logp = torch.zeros((len(rollouts), width), device=device)
    mask = torch.zeros((len(rollouts), width), device=device)
    # unbind, not logits[row]: the backward of S separate indexings writes S zero-filled (S, C, V)
    # gradients (S^2 C V work: 80% of a tiny-model step), that of one unbind stacks S rows once
    rows = logits.unbind(0)
    for row, rollout in enumerate(rollouts):
        length = len(rollout.completion_ids)
        # one row at a time in float32: the (C, V) float copy of a row, not of the batch
        row_logits = rows[row][:length].float()
        if temperature > 0:
            row_logits = row_logits / temperature
        allowed = (
            constraint.allowed_mask(rollout.prompt, rollout.completion_ids, row_logits.shape[-1])
            if constraint is not None
            else None
        )
        targets = torch.tensor(rollout.completion_ids, device=device)
        picked = masked_log_softmax(row_logits, allowed).gather(-1, targets[:, None]).squeeze(-1)
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
