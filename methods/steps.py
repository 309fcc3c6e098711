"""The update steps: an iteration's frozen rollouts -> units -> optimizer steps.

Which step trains a method is its config family's `update` ("groups" or "pairs", the UPDATES
registry); which functions a step calls are named by the config and looked up in the registries
of methods/losses.py and methods/units.py. The policy is anything with the `Policy` methods (the
in-process generator today; a sharded trainer tomorrow): the steps never see a model object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from spogw.harness.distributed import (
    Ranks,
    current_ranks,
    gather_objects,
    max_float,
    shard,
    sum_floats,
    sum_gradients,
)
from spogw.harness.registry import Registry
from spogw.harness.rollouts import Rollout, RolloutKey
from spogw.methods.losses import (
    PAIR_LOSSES,
    POLICY_TERMS,
    SequenceCoefficients,
    group_coefficients,
    grpo_loss,
)
from spogw.methods.units import UNIT_BUILDERS, GroupUnit, PairUnit, Unit, question_seed

if TYPE_CHECKING:  # pydantic stays out of the step's imports: bench/update_memory.py runs it on a bare GPU box
    from spogw.methods.config import GRPOConfig, MethodConfig, PairConfig


class Policy(Protocol):
    """What an update step needs from the generator being trained."""

    def completion_logprobs(self, rollouts: Sequence[Rollout], temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, T) per-token log-probs of the completions (with gradients) and the (S, T) mask."""
        ...

    def reference_logprobs(
        self, rollouts: Sequence[Rollout], ref: str, temperature: float
    ) -> dict[RolloutKey, torch.Tensor]:
        """(T_i,) per-token log-probs of each rollout under the reference policy ``ref``, no gradients."""
        ...

    def trainable_parameters(self) -> Iterable[torch.nn.Parameter]: ...

    def train_mode(self) -> None:
        """Put the model in training mode (LoRA dropout on)."""
        ...

    @property
    def micro_batch_sequences(self) -> int:
        """Sequences per forward/backward pass in a step (gradient accumulation); 0: a unit at once."""
        ...

    @property
    def collective_forwards(self) -> bool:
        """Whether every rank must run each forward and backward (base weights sharded with FSDP,
        harness/sharding.py): a rank with fewer micro-batches than another then runs `idle_pass`es."""
        ...


UpdateStep = Callable[
    [Policy, Sequence[Any], Any, dict[RolloutKey, torch.Tensor], torch.optim.Optimizer, float], dict[str, float]
]
UPDATES: Registry[UpdateStep] = Registry("update step")


def _padded(values: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    out = torch.zeros((len(values), width))
    for row, seq in enumerate(values):
        out[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.float32)
    return out


def micro_batches(count: int, size: int) -> list[slice]:
    """[0, count) in consecutive slices of at most ``size`` (0: one slice)."""
    size = size or count
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def idle_passes(count: int, size: int, ranks: Ranks) -> int:
    """How many more micro-batch passes than its own the rank with the most runs over ``count``
    items sharded round robin (`shard`) in slices of ``size``: what ``ranks.rank`` must add when
    every forward is a collective."""
    shares = [len(shard(count, Ranks(r, ranks.world))) for r in range(ranks.world)]
    passes = [len(micro_batches(share, size)) if share else 0 for share in shares]
    return max(passes) - passes[ranks.rank]


def idle_pass(policy: Policy, rollouts: Sequence[Rollout], temperature: float) -> None:
    """A forward and backward that add nothing to any gradient (the loss times 0): the shortest
    of the step's sequences, so that this rank joins the all-gathers of another rank's pass."""
    shortest = min(rollouts, key=lambda r: len(r.prompt_ids) + len(r.completion_ids))
    logp, mask = policy.completion_logprobs([shortest], temperature)
    ((logp * mask).sum() * 0.0).backward()


def step_coefficients(units: Sequence[GroupUnit], config: GRPOConfig) -> tuple[list[Rollout], SequenceCoefficients]:
    """The step's sequences (every unit's unique rollouts, units in order) and their coefficients,
    each unit's scaled by 1 / len(units): the deduplicated loss is linear in the coefficients, so the
    step's loss (the mean of the units' losses) is one sum over all its sequences."""
    rollouts: list[Rollout] = []
    parts: list[SequenceCoefficients] = []
    for unit in units:
        lengths = torch.tensor([len(r.completion_ids) for r in unit.rollouts])
        parts.append(
            group_coefficients(unit.groups, unit.advantages, lengths, config.kl, config.aggregation, len(unit.rollouts))
        )
        rollouts += unit.rollouts
    if not parts:
        empty = torch.zeros(0)
        return rollouts, SequenceCoefficients(empty, empty, empty, 0)
    share = 1.0 / len(units)
    return rollouts, SequenceCoefficients(
        torch.cat([p.positive for p in parts]) * share,
        torch.cat([p.negative for p in parts]) * share,
        torch.cat([p.kl for p in parts]) * share,
        sum(p.rows for p in parts),
    )


@UPDATES.register("groups")
def group_step(
    policy: Policy,
    units: Sequence[GroupUnit],
    config: GRPOConfig,
    ref_cache: dict[RolloutKey, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    temperature: float,
) -> dict[str, float]:
    """One optimizer step on the groups of ``units`` (a few questions): each question's unique
    sequences are forwarded once, and the step's loss is the mean of the questions' losses.

    The deduplicated loss is a sum over sequences (`step_coefficients`), so the step's sequences of
    all its questions are one list, forwarded in micro-batches of ``policy.micro_batch_sequences``
    (0: as many as the step's largest question has; gradients accumulate): the loss and gradient
    equal the one-pass step and the mean of the questions' own losses up to float rounding
    (tests/test_training.py). With several ranks (harness/distributed.py) each forwards its share
    of the sequences and the gradients and metrics are summed across ranks."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    term = POLICY_TERMS.get(config.policy_term)
    totals = {"loss": 0.0, "policy_term": 0.0, "kl_term": 0.0, "mean_abs_advantage": 0.0, "grad_norm": 0.0}
    clipped = active_tokens = 0.0
    tokens = 0
    active = [u for u in units if u.groups_kept > 0]
    rollouts, coefficients = step_coefficients(active, config)
    ranks = current_ranks()
    mine = shard(len(rollouts), ranks)
    # 0: at most one question's sequences per pass, the peak memory a step always had (a step of 4
    # questions x 16 samples at a 152k vocabulary would otherwise hold 4x the logits at once)
    size = policy.micro_batch_sequences or max((len(u.rollouts) for u in active), default=0)
    for part in micro_batches(len(mine), size) if mine else []:
        index = mine[part]
        chunk = [rollouts[i] for i in index]
        logp, mask = policy.completion_logprobs(chunk, temperature)
        width = logp.shape[1]
        old = _padded([r.old_logp for r in chunk], width).to(logp.device)
        ref = _padded([ref_cache[r.key].tolist() for r in chunk], width).to(logp.device)
        loss, metrics = grpo_loss(
            logp,
            old,
            ref,
            mask,
            coefficients.select(torch.tensor(index)).to(logp.device),
            config.beta,
            config.eps_low,
            config.eps_high,
            term,
        )
        loss.backward()
        totals["loss"] += loss.item()
        totals["policy_term"] += float(metrics["policy_term"])
        totals["kl_term"] += float(metrics["kl_term"])
        clipped += float(metrics["clipped_tokens"])
        active_tokens += float(metrics["active_tokens"])
        tokens += int(mask.sum())
    for _ in range(idle_passes(len(rollouts), size, ranks) if policy.collective_forwards and active else 0):
        idle_pass(policy, rollouts, temperature)
    parameters = list(policy.trainable_parameters())
    if active:  # every rank has the same units, so every rank reduces or none does
        sum_gradients(parameters, ranks)
        sums = [totals["loss"], totals["policy_term"], totals["kl_term"], clipped, active_tokens, float(tokens)]
        summed = sum_floats(sums, ranks, parameters[0].device if parameters else "cpu")
        totals["loss"], totals["policy_term"], totals["kl_term"], clipped, active_tokens = summed[:5]
        tokens = int(summed[5])
    for unit in active:
        totals["mean_abs_advantage"] += float(unit.advantages.abs().mean()) / len(active)
    totals["clip_fraction"] = clipped / max(active_tokens, 1.0)
    if active:
        # the norm before clipping, as TRL and verl log it: the cells' check across ranks is on its scale
        totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm))
        optimizer.step()
    totals["updated"] = float(bool(active))  # a batch whose groups were all filtered changes nothing
    built = sum(u.groups_built for u in units)
    totals["groups_kept_fraction"] = sum(u.groups_kept for u in units) / built if built else 0.0
    # the step's tokens on every rank over the slowest rank's time: the same number on each rank
    elapsed = max_float(time.perf_counter() - start, ranks, parameters[0].device if parameters else "cpu")
    totals["tokens_per_s"] = tokens / max(elapsed, 1e-9)
    return totals


@UPDATES.register("pairs")
def pair_step(
    policy: Policy,
    pairs: Sequence[PairUnit],
    config: PairConfig,
    ref_cache: dict[RolloutKey, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    temperature: float,
) -> dict[str, float]:
    """One optimizer step of the config's pair loss (PAIR_LOSSES) on summed completion log-probs,
    the mean over ``pairs``; in micro-batches of ``policy.micro_batch_sequences`` // 2 pairs (each
    pair's two sequences together), whose losses add up to the mean. A micro-batch forwards each of
    its distinct sequences once (ScoreFlow draws pairs with replacement from a question's few
    samples, so a step's 2 x 8 sides are often 5 sequences), in one pass. With several ranks
    (harness/distributed.py) each computes its share of the pairs and the gradients are summed."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    total_loss, margins, tokens = 0.0, [], 0
    loss_fn = PAIR_LOSSES.get(config.loss)
    sequences = policy.micro_batch_sequences
    pairs_per_pass = max(1, sequences // 2) if sequences else 0
    ranks = current_ranks()
    mine = shard(len(pairs), ranks)
    for part in micro_batches(len(mine), pairs_per_pass) if mine else []:
        chosen = [pairs[i].chosen for i in mine[part]]
        rejected = [pairs[i].rejected for i in mine[part]]
        distinct = list({r.key: r for r in chosen + rejected}.values())
        position = {r.key: index for index, r in enumerate(distinct)}
        logp, mask = policy.completion_logprobs(distinct, temperature)
        sums = (logp * mask).sum(-1)  # (U,)
        sum_c = sums[[position[r.key] for r in chosen]]
        sum_r = sums[[position[r.key] for r in rejected]]
        ref_c = torch.stack([ref_cache[r.key].sum() for r in chosen]).to(sum_c.device)
        ref_r = torch.stack([ref_cache[r.key].sum() for r in rejected]).to(sum_c.device)
        s_w = torch.tensor([float(r.score or 0.0) for r in chosen], device=sum_c.device)
        s_l = torch.tensor([float(r.score or 0.0) for r in rejected], device=sum_c.device)
        loss = loss_fn(sum_c, ref_c, sum_r, ref_r, s_w, s_l, config.beta).sum() / len(pairs)
        loss.backward()
        total_loss += loss.item()
        margins.append(((sum_c - ref_c) - (sum_r - ref_r)).detach())
        tokens += int(mask.sum())
    for _ in range(idle_passes(len(pairs), pairs_per_pass, ranks) if policy.collective_forwards and pairs else 0):
        idle_pass(policy, [p.chosen for p in pairs], temperature)
    parameters = list(policy.trainable_parameters())
    sum_gradients(parameters, ranks)
    margin = torch.cat(margins) if margins else torch.zeros(0)
    device = parameters[0].device if parameters else "cpu"
    total_loss, margin_sum, tokens_sum = sum_floats([total_loss, float(margin.sum()), float(tokens)], ranks, device)
    tokens = int(tokens_sum)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm))  # before clipping
    optimizer.step()
    elapsed = max_float(time.perf_counter() - start, ranks, device)  # the slowest rank's: the same on every rank
    return {
        "loss": total_loss,
        "grad_norm": grad_norm,
        "reward_margin": margin_sum / len(pairs),
        "pairs": float(len(pairs)),
        "tokens_per_s": tokens / max(elapsed, 1e-9),
    }


def build_units(rollouts: Sequence[Rollout], config: MethodConfig, seed: int, iteration: int) -> list[Unit]:
    """Every question's units, questions in id order, each with its own seed (question_seed)."""
    by_question: dict[str, list[Rollout]] = {}
    for rollout in rollouts:
        by_question.setdefault(rollout.query_id, []).append(rollout)
    builder = UNIT_BUILDERS.get(config.unit_builder)
    units: list[Unit] = []
    for index, (_, question_rollouts) in enumerate(sorted(by_question.items())):
        units += builder(question_rollouts, config, question_seed(seed, iteration, index))
    return units


def unit_rollouts(unit: Unit) -> tuple[Rollout, ...]:
    return unit.rollouts if isinstance(unit, GroupUnit) else (unit.chosen, unit.rejected)


def reference_cache(
    policy: Policy, rollouts: Sequence[Rollout], ref: str, temperature: float
) -> dict[RolloutKey, torch.Tensor]:
    """(T_i,) log-probs of each of ``rollouts`` under the reference policy ``ref`` (no gradients),
    computed once per iteration. With several ranks (harness/distributed.py) each computes its
    round-robin share and the shares are gathered, so every rank holds the whole cache for a
    1/N of the forwards. Each rank's list is padded to the largest share (its first rollout again,
    dropped after): under FSDP every rank then runs as many forwards."""
    ranks = current_ranks()
    if ranks.world == 1 or not rollouts:
        return policy.reference_logprobs(rollouts, ref, temperature)
    mine = [rollouts[i] for i in shard(len(rollouts), ranks)]
    largest = len(shard(len(rollouts), Ranks(0, ranks.world)))  # rank 0's share is never smaller
    padded = mine + [mine[0] if mine else rollouts[0]] * (largest - len(mine))
    computed = policy.reference_logprobs(padded, ref, temperature)
    merged: dict[RolloutKey, torch.Tensor] = {}
    for part in gather_objects({r.key: computed[r.key] for r in mine}, ranks):
        merged.update(part)
    return {r.key: merged[r.key] for r in rollouts}


def update_iteration(
    policy: Policy,
    rollouts: Sequence[Rollout],
    config: MethodConfig,
    seed: int,
    iteration: int,
    optimizer: torch.optim.Optimizer,
    temperature: float,
    on_step: Callable[[], None] | None = None,
) -> tuple[list[Unit], list[dict[str, float]]]:
    """Epochs of updates on an iteration's frozen rollouts (reference log-probs computed once).
    Returns the units trained on and one metrics dict per optimizer step; ``on_step`` runs after
    each step."""
    units = build_units(rollouts, config, seed, iteration)
    if not units:
        return units, []
    unique = list({r.key: r for u in units for r in unit_rollouts(u)}.values())
    ref_cache = reference_cache(policy, unique, config.ref, temperature)
    policy.train_mode()
    step = UPDATES.get(config.update)
    size = config.units_per_step
    steps = []
    for _ in range(config.epochs):
        for start in range(0, len(units), size):
            steps.append(step(policy, units[start : start + size], config, ref_cache, optimizer, temperature))
            if on_step is not None:
                on_step()
    return units, steps
