"""Sampling workflows from the generator, with the log-probs the clipped objective needs.

The `hf` backend is a batched decode loop over a transformers causal LM with a KV cache and left
padding. Each row draws from its own `torch.Generator` seeded by its key (seed, iteration,
question, sample index), so a sample does not depend on which other samples share its batch: a
resumed collection that re-samples only what is missing gets the same completions.

Log-probs are those of the *sampling policy* as the trainer recomputes it: log_softmax(logits / T)
of the sampled token (temperature T; top-p truncation is not part of it, as in TRL), over the tokens
a decoding constraint allows when there is one (harness.policy.constraint). With T = 0 decoding is
greedy and the log-probs are those of T = 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from spogw.harness.policy.constraint import GrammarConstraint, TrieNode

SampleKey = tuple[Any, ...]
"""(seed, iteration, question id, sample index): everything a sample's randomness depends on."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ("</graph>",)


@dataclass(frozen=True)
class Sample:
    key: SampleKey
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    """Per completion token, under the sampling policy (see module docstring)."""
    text: str
    finish: Literal["stop", "eos", "length"]


def key_seed(key: SampleKey) -> int:
    """A 63-bit seed from a sample key, stable across processes and machines."""
    digest = hashlib.blake2b(repr(tuple(key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail of each row outside the smallest set with cumulative probability >= top_p. (B, V)."""
    import torch

    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(dim=-1)
    remove = cumulative - sorted_probs > top_p  # keep the token that crosses the threshold
    sorted_probs = sorted_probs.masked_fill(remove, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def _cache_keyword(model: Any) -> str:
    """The keyword the model's forward takes its KV cache by.

    transformers 5.24 calls it `cache` and deprecates `past_key_values`; 5.17 only knows
    `past_key_values` and silently swallows an unknown `cache=` into **kwargs, which decodes every
    step without its context. Read the signature of the base model's forward instead of guessing.
    """
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _hit_stop(tokenizer: Any, completion: list[int], stops: tuple[str, ...]) -> bool:
    if not stops:
        return False
    tail = tokenizer.decode(completion[-16:], skip_special_tokens=False)
    return any(stop in tail for stop in stops)


def encode_prompts(tokenizer: Any, prompts: Sequence[str], max_prompt_tokens: int | None = None) -> list[list[int]]:
    """Token ids of each prompt as the sampler and the trainer read it: no special tokens added (the
    prompt builder wrote them), cut to ``max_prompt_tokens`` when given."""
    encoded = [list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return [ids[:max_prompt_tokens] for ids in encoded] if max_prompt_tokens is not None else encoded


@dataclass(frozen=True)
class Drawn:
    """One completion drawn by `sample_ids`: its token ids, their log-probs under the sampling
    policy, and why it ended."""

    completion_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish: Literal["stop", "eos", "length"]


def sample_hf(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    keys: Sequence[SampleKey],
    params: SamplingParams,
    max_prompt_tokens: int | None = None,
    constraint: GrammarConstraint | None = None,
    stop_ids: Sequence[int] = (),
) -> list[Sample]:
    """Sample one completion per (prompt, key) with a batched KV-cache decode loop (`sample_ids`),
    the row of each key seeded by `key_seed`; with a ``constraint``, only the tokens it allows are
    ever drawn."""
    if len(prompts) != len(keys):
        raise ValueError(f"{len(prompts)} prompts but {len(keys)} keys")
    encoded = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    roots = [constraint.root(p) for p in prompts] if constraint is not None else None
    drawn = sample_ids(model, tokenizer, encoded, [key_seed(k) for k in keys], params, constraint, roots, stop_ids)
    return [
        Sample(
            key=tuple(key),
            prompt_ids=tuple(ids),
            completion_ids=d.completion_ids,
            logprobs=d.logprobs,
            text=tokenizer.decode(list(d.completion_ids), skip_special_tokens=True),
            finish=d.finish,
        )
        for key, ids, d in zip(keys, encoded, drawn, strict=True)
    ]


def sample_ids(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    seeds: Sequence[int],
    params: SamplingParams,
    constraint: GrammarConstraint | None = None,
    roots: Sequence[TrieNode | None] | None = None,
    stop_ids: Sequence[int] = (),
) -> list[Drawn]:
    """Draw one completion per token-id prompt, row r from a `torch.Generator` seeded with seeds[r],
    so a row does not depend on which other rows share its batch.

    A row ends at the first of ``stop_ids`` (every end-of-sequence id of the model's generation
    config; the tokenizer's eos when empty), kept as the completion's last token, or at the token
    that completes a stop string; nothing after it is ever kept, scored or trained on. With a
    ``constraint``, ``roots`` gives each row's trie node (GrammarConstraint.root of its prompt)."""
    import torch
    from transformers import DynamicCache

    from spogw.harness.policy.constraint import masked_log_softmax

    if len(prompt_ids) != len(seeds):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(seeds)} seeds")
    if constraint is not None and (roots is None or len(roots) != len(prompt_ids)):
        raise ValueError("a constraint needs one trie root per prompt")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows_count = len(prompt_ids)
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((rows_count, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows_count, width), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):  # left padding: every prompt ends at the same column
        input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]

    completions: list[list[int]] = [[] for _ in prompt_ids]
    logprobs: list[list[float]] = [[] for _ in prompt_ids]
    finish: list[str | None] = [None] * rows_count
    stops = frozenset(stop_ids) if stop_ids else frozenset({tokenizer.eos_token_id}) - {None}
    nodes: list[TrieNode | None] = list(roots) if constraint is not None and roots is not None else []
    cache = DynamicCache()
    cache_kw = {_cache_keyword(model): cache}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # `cache` (transformers 5.x; `past_key_values` is deprecated) is filled in place;
            # logits_to_keep=1: only the last position's logits are needed to sample.
            out = model(
                input_ids=input_ids,
                attention_mask=attention,
                position_ids=positions,
                **cache_kw,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :].float()
            next_position = positions[:, -1] + 1
            for _ in range(params.max_new_tokens):
                scaled = logits / params.temperature if params.temperature > 0 else logits
                allowed = None
                if constraint is not None:
                    allowed = torch.ones_like(scaled, dtype=torch.bool)
                    for row, node in enumerate(nodes):
                        if finish[row] is None and node is not None:
                            allowed[row] = False
                            allowed[row, constraint.allowed(node)] = True
                step_logprobs = masked_log_softmax(scaled, allowed)
                probs = _top_p_filter(step_logprobs.exp(), params.top_p).cpu()
                tokens = torch.empty(rows_count, dtype=torch.long)
                for row in range(rows_count):
                    if finish[row] is not None:
                        tokens[row] = pad_id
                        continue
                    if params.temperature > 0:
                        token = int(torch.multinomial(probs[row], 1, generator=generators[row]))
                    else:
                        token = int(torch.argmax(step_logprobs[row]))
                    tokens[row] = token
                    if constraint is not None:
                        nodes[row] = constraint.advance(nodes[row], token)
                    completions[row].append(token)
                    logprobs[row].append(float(step_logprobs[row, token]))
                    if token in stops:
                        finish[row] = "eos"
                    elif _hit_stop(tokenizer, completions[row], params.stop):
                        finish[row] = "stop"
                if all(f is not None for f in finish):
                    break
                attention = torch.cat(
                    [attention, torch.ones((rows_count, 1), dtype=attention.dtype, device=device)], dim=1
                )
                out = model(
                    input_ids=tokens[:, None].to(device),
                    attention_mask=attention,
                    position_ids=next_position[:, None],
                    **cache_kw,
                    use_cache=True,
                )
                logits = out.logits[:, -1, :].float()
                next_position = next_position + 1
    finally:
        model.train(was_training)
    return [
        Drawn(tuple(completions[row]), tuple(logprobs[row]), finish[row] or "length")  # type: ignore[arg-type]
        for row in range(rows_count)
    ]


def token_logprobs(
    model: Any,
    prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    temperature: float = 1.0,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-forced log-probs of ``completion_ids`` after ``prompt_ids``: (T,) float32.

    The same quantity the sampler records, recomputed by a full forward pass (what the trainer
    does for the current policy and the reference policy). ``allowed`` (T, V) bool: the decoding
    constraint's mask (GrammarConstraint.allowed_mask), None for free decoding."""
    import torch

    from spogw.harness.policy.constraint import masked_log_softmax

    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)], dtype=torch.long, device=device)
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1, :].float()
    if temperature > 0:
        logits = logits / temperature
    target = torch.tensor(list(completion_ids), dtype=torch.long, device=device)
    return masked_log_softmax(logits, allowed).gather(-1, target[:, None]).squeeze(-1)
