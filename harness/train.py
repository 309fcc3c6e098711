"""The one training loop every trainable method uses.

`run_method` drives iterations: collect (offline: the whole iteration with the frozen policy;
online: one batch per update) -> build units (methods/units.py) -> reference log-probs, computed
once per iteration and cached -> optimizer steps (AdamW on the LoRA parameters, gradient clipping)
-> the next iteration. The update step reads only stored rollouts: no workflow runs while a method
updates. A sequence that belongs to many groups is forwarded once per step (methods/losses.py).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness import failpoints
from harness.collect import CollectSpec, collect_questions, mean_score
from harness.rollouts import Rollout, RolloutKey, RolloutStore
from methods.config import GRPOConfig, MethodConfig, PairConfig
from methods.losses import dpo_loss, group_coefficients, grpo_loss, score_dpo_loss
from methods.units import GroupUnit, PairUnit, best_worst_pair, grpo_unit, question_seed, scoreflow_pairs

if TYPE_CHECKING:
    from harness.benchmarks.base import Benchmark, Item
    from harness.policy.constraint import GrammarConstraint
    from harness.policy.model import Generator
    from harness.policy.sampling import SamplingParams
    from harness.workflows.engine import WorkflowEngine


# ----------------------------------------------------------------------------------------------
# Forward passes


def completion_logprobs(
    model: Any, rollouts: Sequence[Rollout], temperature: float, constraint: GrammarConstraint | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, T) per-token log-probs of each rollout's completion and the (S, T) mask: one batched
    forward, right padding. log_softmax(logits / T) over the tokens the decoding ``constraint``
    allowed (all without one): the quantity the sampler recorded."""
    from harness.policy.constraint import masked_log_softmax

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


def _padded(values: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    out = torch.zeros((len(values), width))
    for row, seq in enumerate(values):
        out[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.float32)
    return out


def reference_logprobs(
    generator: Generator, rollouts: Sequence[Rollout], ref: str, temperature: float, batch: int = 16
) -> dict[RolloutKey, torch.Tensor]:
    """Per-token reference log-probs of each rollout, computed once per iteration (no grad)."""
    cache: dict[RolloutKey, torch.Tensor] = {}
    with torch.no_grad(), generator.reference(ref):
        for start in range(0, len(rollouts), batch):
            chunk = rollouts[start : start + batch]
            logp, _ = completion_logprobs(generator.model, chunk, temperature, generator.constraint)
            for row, rollout in enumerate(chunk):
                cache[rollout.key] = logp[row, : len(rollout.completion_ids)].cpu()
    return cache


# ----------------------------------------------------------------------------------------------
# Update steps


def grpo_step(
    generator: Generator,
    units: Sequence[GroupUnit],
    config: GRPOConfig,
    ref_cache: dict[RolloutKey, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    temperature: float,
) -> dict[str, float]:
    """One optimizer step on the groups of ``units`` (a few questions): each question's unique
    sequences are forwarded once; the step's loss is the mean of the questions' losses."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    totals = {"loss": 0.0, "policy_term": 0.0, "kl_term": 0.0, "clip_fraction": 0.0, "mean_abs_advantage": 0.0}
    tokens = 0
    active = [u for u in units if u.groups_kept > 0]
    for unit in active:
        rollouts = unit.rollouts
        logp, mask = completion_logprobs(generator.model, rollouts, temperature, generator.constraint)
        width = logp.shape[1]
        old = _padded([r.old_logp for r in rollouts], width).to(logp.device)
        ref = _padded([ref_cache[r.key].tolist() for r in rollouts], width).to(logp.device)
        lengths = torch.tensor([len(r.completion_ids) for r in rollouts])
        coefficients = group_coefficients(
            unit.groups, unit.advantages, lengths, config.kl, config.aggregation, len(rollouts)
        )
        loss, metrics = grpo_loss(
            logp, old, ref, mask, coefficients.to(logp.device), config.beta, config.eps_low, config.eps_high
        )
        (loss / len(active)).backward()
        totals["loss"] += loss.item() / len(active)
        totals["policy_term"] += float(metrics["policy_term"]) / len(active)
        totals["kl_term"] += float(metrics["kl_term"]) / len(active)
        totals["clip_fraction"] += float(metrics["clip_fraction"]) / len(active)
        totals["mean_abs_advantage"] += float(unit.advantages.abs().mean()) / len(active)
        tokens += int(mask.sum())
    if active:
        torch.nn.utils.clip_grad_norm_(generator.trainable_parameters(), config.max_grad_norm)
        optimizer.step()
    totals["updated"] = float(bool(active))  # a batch whose groups were all filtered changes nothing
    built = sum(u.groups_built for u in units)
    totals["groups_kept_fraction"] = sum(u.groups_kept for u in units) / built if built else 0.0
    totals["tokens_per_s"] = tokens / max(time.perf_counter() - start, 1e-9)
    return totals


def pair_step(
    generator: Generator,
    pairs: Sequence[PairUnit],
    config: PairConfig,
    ref_cache: dict[RolloutKey, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    temperature: float,
) -> dict[str, float]:
    """One optimizer step of (Score-)DPO on summed completion log-probs."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    chosen = [p.chosen for p in pairs]
    rejected = [p.rejected for p in pairs]
    logp_c, mask_c = completion_logprobs(generator.model, chosen, temperature, generator.constraint)
    logp_r, mask_r = completion_logprobs(generator.model, rejected, temperature, generator.constraint)
    sum_c, sum_r = (logp_c * mask_c).sum(-1), (logp_r * mask_r).sum(-1)
    ref_c = torch.stack([ref_cache[r.key].sum() for r in chosen]).to(sum_c.device)
    ref_r = torch.stack([ref_cache[r.key].sum() for r in rejected]).to(sum_c.device)
    if config.loss == "dpo":
        losses = dpo_loss(sum_c, ref_c, sum_r, ref_r, config.beta)
    else:
        s_w = torch.tensor([float(r.score) for r in chosen], device=sum_c.device)  # type: ignore[arg-type]
        s_l = torch.tensor([float(r.score) for r in rejected], device=sum_c.device)  # type: ignore[arg-type]
        losses = score_dpo_loss(sum_c, ref_c, sum_r, ref_r, s_w, s_l, config.beta)
    loss = losses.mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(generator.trainable_parameters(), config.max_grad_norm)
    optimizer.step()
    margin = ((sum_c - ref_c) - (sum_r - ref_r)).detach()
    tokens = int(mask_c.sum() + mask_r.sum())
    return {
        "loss": loss.item(),
        "reward_margin": float(margin.mean()),
        "pairs": float(len(pairs)),
        "tokens_per_s": tokens / max(time.perf_counter() - start, 1e-9),
    }


# ----------------------------------------------------------------------------------------------
# Iterations


@dataclass
class IterationSummary:
    iteration: int
    train_score: float
    """Mean score of the workflows sampled this iteration (before its update)."""
    rollouts: int
    steps: list[dict[str, float]] = field(default_factory=list)
    collect_s: float = 0.0
    train_s: float = 0.0
    valid: int = 0
    """Rollouts whose workflow ran to an answer (status ok)."""
    score_spread: bool = True
    """Whether some question's trainable rollouts scored differently (else every advantage is 0)."""

    @property
    def updates(self) -> int:
        """Optimizer steps that changed the weights (a step whose groups were all filtered did not)."""
        return sum(int(step.get("updated", 1.0)) for step in self.steps)


def score_spread(rollouts: Sequence[Rollout]) -> bool:
    """Whether some question has trainable rollouts with different scores: without one, every group
    advantage is 0 and no pair exists, whatever the method."""
    scores: dict[str, set[float]] = {}
    for rollout in rollouts:
        if rollout.trainable:
            scores.setdefault(rollout.query_id, set()).add(float(rollout.score))  # type: ignore[arg-type]
    return any(len(distinct) > 1 for distinct in scores.values())


def _batches(sequence: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [sequence[i : i + size] for i in range(0, len(sequence), size)]


def build_units(rollouts: Sequence[Rollout], config: MethodConfig, seed: int, iteration: int) -> list[Any]:
    by_question: dict[str, list[Rollout]] = {}
    for rollout in rollouts:
        by_question.setdefault(rollout.query_id, []).append(rollout)
    units: list[Any] = []
    for index, (query_id, question_rollouts) in enumerate(sorted(by_question.items())):
        unit_seed = question_seed(seed, iteration, index)
        if isinstance(config, GRPOConfig):
            unit = grpo_unit(question_rollouts, config, unit_seed)
            if unit is not None:
                units.append(unit)
        elif isinstance(config, PairConfig):
            pairs = (
                best_worst_pair(question_rollouts)
                if config.pairs == "best_worst"
                else scoreflow_pairs(question_rollouts, config.pairs_per_question, unit_seed)
            )
            units.extend(pairs)
        else:
            raise TypeError(f"no data builder for {type(config).__name__}; query {query_id}")
    return units


def train_iteration(
    generator: Generator,
    rollouts: Sequence[Rollout],
    config: MethodConfig,
    seed: int,
    iteration: int,
    optimizer: torch.optim.Optimizer,
    temperature: float,
) -> list[dict[str, float]]:
    """Epochs of updates on an iteration's frozen rollouts (reference log-probs cached once)."""
    units = build_units(rollouts, config, seed, iteration)
    if not units:
        return []
    members = [r for u in units for r in (u.rollouts if isinstance(u, GroupUnit) else (u.chosen, u.rejected))]
    unique = list({r.key: r for r in members}.values())
    ref_cache = reference_logprobs(generator, unique, config.ref, temperature)
    generator.model.train()
    steps = []
    for _ in range(config.epochs):
        if isinstance(config, GRPOConfig):
            for batch in _batches(units, config.questions_per_step):
                steps.append(grpo_step(generator, batch, config, ref_cache, optimizer, temperature))
                failpoints.hit("train.step")
        else:
            for batch in _batches(units, config.pairs_per_step):
                steps.append(pair_step(generator, batch, config, ref_cache, optimizer, temperature))  # type: ignore[arg-type]
                failpoints.hit("train.step")
    return steps


@dataclass(frozen=True)
class Task:
    """The questions of one benchmark that a method collects on (an experiment may mix benchmarks)."""

    benchmark: Benchmark
    items: Sequence[Item]


def iteration_seed(seed: int, iteration: int) -> int:
    """The torch seed set before an iteration's updates (LoRA dropout): a resumed iteration draws
    the same numbers as an uninterrupted one."""
    return (seed * 1_000_003 + iteration * 7_919 + 17) % (2**31 - 1)


def latest_checkpoint(directory: Path | None, iterations: int) -> tuple[int, Path | None]:
    """The highest iteration k whose start-of-iteration state is saved as ``directory/iter<k>``."""
    if directory is None:
        return 0, None
    for k in range(iterations, 0, -1):
        candidate = directory / f"iter{k}"
        if candidate.is_dir():
            return k, candidate
    return 0, None


async def _collect(
    generator: Generator,
    engine: WorkflowEngine,
    tasks: Sequence[Task],
    spec: CollectSpec,
    params: SamplingParams,
    store: RolloutStore,
    progress: bool,
) -> list[Rollout]:
    rollouts: list[Rollout] = []
    for task in tasks:
        rollouts += await collect_questions(
            generator, engine, task.benchmark, task.items, spec, params, store, progress
        )
    return rollouts


async def run_method(
    generator: Generator,
    config: MethodConfig,
    engine: WorkflowEngine,
    tasks: Sequence[Task],
    iterations: int,
    seed: int,
    params: SamplingParams,
    store: RolloutStore,
    experiment: str,
    label: str,
    repeats: int,
    progress: bool = False,
    on_iteration: Callable[[IterationSummary], None] | None = None,
    checkpoints: Path | None = None,
    evaluate: Callable[[int], Awaitable[None]] | None = None,
    final_collection: bool = True,
    on_phase: Callable[[int, str], None] | None = None,
) -> list[IterationSummary]:
    """``iterations`` rounds of collect -> update; with ``final_collection`` one more collection
    measures the result. Summary k holds the mean score of the workflows sampled at iteration k
    (k = 0: the untrained generator; k = iterations: after the last update).

    With ``checkpoints`` (a folder), the state after each update round (adapter and optimizer) is
    saved as ``iter<k+1>`` and a re-run starts from the latest one; the rollouts already in the store
    are not collected again. ``evaluate(k)`` runs at the start of iteration k (held-out evaluation
    of the policy of iteration k). Summaries are returned for the iterations this call ran."""
    from harness.policy.checkpoints import load_training_state, save_adapter

    optimizer = torch.optim.AdamW(generator.trainable_parameters(), lr=config.learning_rate, weight_decay=0.0)
    start_iteration, saved = latest_checkpoint(checkpoints, iterations)
    if saved is not None:
        load_training_state(generator.model, optimizer, saved, generator.identity)
    summaries = []
    for iteration in range(start_iteration, iterations + 1):
        if evaluate is not None:
            if on_phase is not None:
                on_phase(iteration, "evaluate")
            await evaluate(iteration)
        last = iteration == iterations
        if last and not final_collection:
            break
        spec = CollectSpec(experiment, label, seed, iteration, config.num_samples, repeats)
        start = time.perf_counter()
        torch.manual_seed(iteration_seed(seed, iteration))
        online = isinstance(config, GRPOConfig) and config.schedule == "online" and not last
        steps: list[dict[str, float]] = []
        collected: list[Rollout] = []
        if config.ref == "previous_iteration" and not last:  # at iteration 0 this is the untrained adapter
            with tempfile.TemporaryDirectory() as folder:
                previous = save_adapter(generator.model, Path(folder) / "previous", generator.identity)
                generator.load_reference(previous)
        if on_phase is not None:
            on_phase(iteration, "collect+train" if online else "collect")
        if online:
            for task in tasks:
                for batch in _batches(list(task.items), config.questions_per_step):  # type: ignore[union-attr]
                    rollouts = await collect_questions(
                        generator, engine, task.benchmark, batch, spec, params, store, progress
                    )
                    collected += rollouts
                    steps += train_iteration(
                        generator, rollouts, config, seed, iteration, optimizer, params.temperature
                    )
            collect_s, train_s = time.perf_counter() - start, 0.0
        else:
            collected = await _collect(generator, engine, tasks, spec, params, store, progress)
            collect_s = time.perf_counter() - start
            if not last:
                if on_phase is not None:
                    on_phase(iteration, "train")
                steps = train_iteration(generator, collected, config, seed, iteration, optimizer, params.temperature)
            train_s = time.perf_counter() - start - collect_s
        valid = sum(r.status == "ok" for r in collected)
        summary = IterationSummary(
            iteration, mean_score(collected), len(collected), steps, collect_s, train_s, valid, score_spread(collected)
        )
        summaries.append(summary)
        if on_iteration is not None:  # before the checkpoint: a kill between the two repeats the iteration
            on_iteration(summary)
        if checkpoints is not None and not last:
            save_adapter(
                generator.model,
                checkpoints / f"iter{iteration + 1}",
                generator.identity,
                optimizer,
                iteration=iteration + 1,
            )
    return summaries
