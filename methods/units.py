"""Data builders: the rollouts of one question -> training units (groups with advantages, or pairs).

Pure functions of scores and a seed. infra_error rollouts never enter a unit (a failed API call
says nothing about the workflow); invalid / timeout / runtime_error rollouts do, with score 0.
A method's config names its builder (`GRPOConfig.units` is "groups"; `PairConfig.pairs` names a
pair builder); each is registered in UNIT_BUILDERS with one signature.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from spogw.harness.registry import Registry
from spogw.harness.rollouts import Rollout
from spogw.methods.losses import ADVANTAGES, build_groups, sharpen, variance_filter

if TYPE_CHECKING:  # the config validates its names against the registries below: no runtime import back
    from spogw.methods.config import GRPOConfig


@dataclass(frozen=True)
class GroupUnit:
    """The groups of one question over its trainable rollouts (indices are positions in ``rollouts``)."""

    query_id: str
    rollouts: tuple[Rollout, ...]
    groups: torch.Tensor
    """(G, k) local indices."""
    advantages: torch.Tensor
    """(G, k)."""
    groups_built: int
    groups_kept: int
    std_before: torch.Tensor
    """(groups_built,) score std of every group before the filter (for the low-variance report)."""
    std_after: torch.Tensor
    """(G,) after filtering and sharpening."""


def question_seed(seed: int, iteration: int, index: int) -> int:
    """The seed of the group draw for the ``index``-th question (sorted by id) of an iteration's
    batch; only used when C(m, n) exceeds max_groups."""
    return hash((seed, iteration, index)) & 0x7FFFFFFF  # ints and tuples of ints hash the same in every process


def curate_groups(scores: torch.Tensor, config: GRPOConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(m,) scores -> (built, kept): the (G, n) groups drawn from the m samples (one group of all m
    when combinations is off) and the (G', k) groups left after the variance filter and sharpening."""
    m = scores.shape[0]
    if config.combinations:
        built = build_groups(m, min(config.group_size, m), config.max_groups, seed)
    else:
        built = torch.arange(m)[None]
    kept = built
    if config.min_group_std > 0:
        kept = variance_filter(scores, kept, config.min_group_std)
    if config.sharpen_t > 0 and kept.numel() and 2 * config.sharpen_t <= kept.shape[1]:
        kept = sharpen(scores, kept, config.sharpen_t)
    return built, kept


def grpo_unit(rollouts: Sequence[Rollout], config: GRPOConfig, seed: int) -> GroupUnit | None:
    """Groups, curation and advantages for one question; None if nothing trainable remains."""
    usable = tuple(sorted((r for r in rollouts if r.trainable), key=lambda r: r.sample_idx))
    if len(usable) < 2:
        return None
    scores = torch.tensor([float(r.score) for r in usable], dtype=torch.float32)  # type: ignore[arg-type]
    built, groups = curate_groups(scores, config, seed)
    std_before = scores[built].std(dim=-1, unbiased=False)
    if groups.numel() == 0:
        return GroupUnit(
            usable[0].query_id, usable, groups, groups.float(), built.shape[0], 0, std_before, torch.zeros(0)
        )
    advantages = ADVANTAGES.get(config.scale)(scores[groups])
    return GroupUnit(
        usable[0].query_id,
        usable,
        groups,
        advantages,
        built.shape[0],
        groups.shape[0],
        std_before,
        scores[groups].std(dim=-1, unbiased=False),
    )


@dataclass(frozen=True)
class PairUnit:
    chosen: Rollout
    rejected: Rollout


def best_worst_pair(rollouts: Sequence[Rollout]) -> list[PairUnit]:
    """The best and the worst trainable sample (ties: lower sample index); none if all scores tie."""
    usable = sorted((r for r in rollouts if r.trainable), key=lambda r: r.sample_idx)
    if len(usable) < 2:
        return []
    best = max(usable, key=lambda r: (r.score, -r.sample_idx))
    worst = min(usable, key=lambda r: (r.score, r.sample_idx))
    return [PairUnit(best, worst)] if best.score > worst.score else []  # type: ignore[operator]


def scoreflow_pairs(rollouts: Sequence[Rollout], count: int, seed: int) -> list[PairUnit]:
    """ScoreFlow's pairs: all pairs with different scores, ``count`` drawn with replacement with
    probability proportional to (s_w - s_l)^3 (larger score gaps are drawn more often)."""
    usable = sorted((r for r in rollouts if r.trainable), key=lambda r: r.sample_idx)
    candidates = [(a, b) for a in usable for b in usable if a.score > b.score]  # type: ignore[operator]
    if not candidates:
        return []
    weights = [(a.score - b.score) ** 3 for a, b in candidates]  # type: ignore[operator]
    drawn = random.Random(seed).choices(candidates, weights=weights, k=count)
    return [PairUnit(a, b) for a, b in drawn]


# ----------------------------------------------------------------------------------------------
# The registry: (one question's rollouts, the method config, the question's seed) -> units

Unit = GroupUnit | PairUnit
UnitBuilder = Callable[[Sequence[Rollout], Any, int], list[Unit]]
UNIT_BUILDERS: Registry[UnitBuilder] = Registry("unit builder")


@UNIT_BUILDERS.register("groups", unit="group")
def group_units(rollouts: Sequence[Rollout], config: Any, seed: int) -> list[Unit]:
    """The question's groups with their advantages (GRPO family); none when < 2 rollouts are trainable."""
    unit = grpo_unit(rollouts, config, seed)
    return [] if unit is None else [unit]


@UNIT_BUILDERS.register("best_worst", unit="pair")
def best_worst_units(rollouts: Sequence[Rollout], config: Any, seed: int) -> list[Unit]:
    """The best-vs-worst pair of the question (DPO)."""
    return list(best_worst_pair(rollouts))


@UNIT_BUILDERS.register("scoreflow", unit="pair")
def scoreflow_units(rollouts: Sequence[Rollout], config: Any, seed: int) -> list[Unit]:
    """ScoreFlow's gap-weighted pairs, ``config.pairs_per_question`` of them (arXiv 2502.04306)."""
    return list(scoreflow_pairs(rollouts, config.pairs_per_question, seed))
