"""Pure tensor functions shared by the methods. No state, no model: tensors in, tensors out.

Shapes: (B, T) per token, (B, 1) or (B,) per sequence, (G, n) per group member; masks are 1 on
real tokens. The order of a GRPO loss follows TRL's: ratio -> k3 KL -> clipped policy term -> KL
mask -> + beta * KL -> aggregation.

SPOGW builds many groups from the same m sequences (C(16, 14) = 120 groups; each sequence is in
C(15, 13) = 105 of them). Materialising groups as rows would forward a sequence up to 105 times.
Instead `group_coefficients` folds every group a sequence belongs to into three per-sequence
numbers, and `grpo_loss` forwards each sequence once. This is exact, not an approximation: the
clipped term is -A * min(r, clip(r)) for A > 0 and -A * max(r, clip(r)) for A < 0, i.e. linear in A
once its sign is known, so a sum over groups is a sum of the positive and of the negative
advantages (tests check gradient equality with the materialised form).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from spogw.harness.registry import Registry

Scale = Literal["group", "none"]
KLMode = Literal["none", "standard", "masked"]
Aggregation = Literal["seq_mean", "token_mean"]

# ----------------------------------------------------------------------------------------------
# Registries: every name a method config may choose (`scale`, `policy_term`, `kl`, `loss`) is bound
# here to one pure function, and the config validates its value against these names. Adding a
# loss is one registered function below and one method file that chooses it (docs/contributing.md).

AdvantageEstimator = Callable[[torch.Tensor], torch.Tensor]
"""(G, n) member scores -> (G, n) advantages."""
PolicyTerm = Callable[[torch.Tensor, float, float], tuple[torch.Tensor, torch.Tensor]]
"""(B, T) ratio, eps_low, eps_high -> ((B, T) factor used where A > 0, (B, T) factor used where A < 0).
The per-token policy loss of a row with advantage A is -A * factor; keeping the halves apart is what
lets the deduplicated loss fold every group of a sequence into two coefficients."""
KLMask = Callable[[torch.Tensor], torch.Tensor]
"""(B, 1) or (R,) advantages -> the same shape of KL weights in {0, 1}."""


class PairLoss(Protocol):
    def __call__(
        self,
        logp_w: torch.Tensor,
        ref_w: torch.Tensor,
        logp_l: torch.Tensor,
        ref_l: torch.Tensor,
        s_w: torch.Tensor,
        s_l: torch.Tensor,
        beta: float,
    ) -> torch.Tensor:
        """(B,) losses from (B,) summed completion log-probs of chosen (w) and rejected (l) sequences
        under the policy and the reference, their (B,) scores in [0, 1], and beta."""
        ...


ADVANTAGES: Registry[AdvantageEstimator] = Registry("advantage estimator")
POLICY_TERMS: Registry[PolicyTerm] = Registry("policy term")
KL_MASKS: Registry[KLMask] = Registry("KL mask")
PAIR_LOSSES: Registry[PairLoss] = Registry("pair loss")


# ----------------------------------------------------------------------------------------------
# Groups, curation, advantages


TIE_TOLERANCE = 1e-6
"""A score within this of its group mean counts as equal to it. Scores in [0, 1] held in float32 are
rounded by up to 6e-8 (sixteen 1/3 average to 1/3 + 3e-8), while two different scores differ by far
more than this (means of a few repeats, F1 of short answers)."""


def group_advantages(
    scores: torch.Tensor, eps: float = 1e-4, scale: Scale = "group", unbiased: bool = False
) -> torch.Tensor:
    """(G, n) scores -> (G, n) advantages: (s - mean) / (std + eps) per row, in the scores' dtype.

    Computed in float64, and a score equal to its group's mean (within TIE_TOLERANCE) gets an
    advantage of exactly 0: a group of equal scores has no policy weight and, under mKL, no KL.
    The std is the population std (DESIGN.md); ``unbiased=True`` uses Bessel's correction as TRL
    1.16 does (its advantages are smaller by sqrt((n-1)/n)). ``scale="none"`` subtracts the mean
    only (Dr. GRPO). Raises ValueError for another scale."""
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")
    values = scores.to(torch.float64)
    centred = values - values.mean(dim=-1, keepdim=True)
    centred = torch.where(centred.abs() <= TIE_TOLERANCE, torch.zeros_like(centred), centred)
    if scale == "group":
        centred = centred / (values.std(dim=-1, unbiased=unbiased, keepdim=True) + eps)
    return centred.to(scores.dtype if scores.is_floating_point() else torch.float32)


@ADVANTAGES.register("group")
def group_normalised_advantages(scores: torch.Tensor) -> torch.Tensor:
    """(G, n) -> (G, n): (s - mean) / (std + 1e-4) per group (GRPO, arXiv 2402.03300)."""
    return group_advantages(scores, scale="group")


@ADVANTAGES.register("none")
def mean_centred_advantages(scores: torch.Tensor) -> torch.Tensor:
    """(G, n) -> (G, n): s - mean per group, no std scaling (Dr. GRPO, arXiv 2503.20783)."""
    return group_advantages(scores, scale="none")


def build_groups(num_samples: int, group_size: int, max_groups: int, seed: int) -> torch.Tensor:
    """LongTensor (G, group_size) of sample indices.

    All C(m, n) combinations in lexicographic order when there are at most ``max_groups``; else
    ``max_groups`` distinct combinations drawn with ``seed`` (then sorted, so the order is canonical)."""
    if not 1 <= group_size <= num_samples:
        raise ValueError(f"group size n={group_size} must be between 1 and the number of samples m={num_samples}")
    if max_groups < 1:
        raise ValueError(f"max_groups must be positive, got {max_groups}")
    total = math.comb(num_samples, group_size)
    if total <= max_groups:
        combos = list(itertools.combinations(range(num_samples), group_size))
    else:
        rng = random.Random(seed)
        chosen: set[tuple[int, ...]] = set()
        while len(chosen) < max_groups:
            chosen.add(tuple(sorted(rng.sample(range(num_samples), group_size))))
        combos = sorted(chosen)
    return torch.tensor(combos, dtype=torch.long).reshape(len(combos), group_size)


def variance_filter(scores: torch.Tensor, groups: torch.Tensor, min_std: float) -> torch.Tensor:
    """Keep the groups (rows of ``groups``, indices into the (m,) ``scores``) whose population
    score std is >= ``min_std``."""
    if groups.numel() == 0:
        return groups
    stds = scores.to(torch.float64)[groups].std(dim=-1, unbiased=False)  # float64: a tiny threshold must not underflow
    return groups[stds >= min_std]


def sharpen(scores: torch.Tensor, groups: torch.Tensor, t: int) -> torch.Tensor:
    """Within each group keep the t highest and the t lowest scores: (G, n) -> (G, 2t).

    Ties are broken by lower sample index first, in both halves: the top t are the first t by
    (score descending, index ascending); the bottom t are then taken from the remaining members
    by (score ascending, index ascending), so the halves never overlap. Rows are sorted by index."""
    if t < 1 or 2 * t > groups.shape[1]:
        raise ValueError(f"sharpening t={t} needs 1 <= t and 2t <= n={groups.shape[1]}")
    if groups.numel() == 0:
        return groups.reshape(0, 2 * t)
    by_index = torch.sort(groups, dim=-1).values
    ranking = torch.argsort(scores[by_index], dim=-1, descending=True, stable=True)
    top = torch.gather(by_index, 1, ranking[:, :t])
    rest = torch.sort(torch.gather(by_index, 1, ranking[:, t:]), dim=-1).values
    bottom = torch.gather(rest, 1, torch.argsort(scores[rest], dim=-1, stable=True)[:, :t])
    return torch.sort(torch.cat([top, bottom], dim=-1), dim=-1).values


# ----------------------------------------------------------------------------------------------
# Per-token terms


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """(B, T) Schulman's k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 >= 0."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


@POLICY_TERMS.register("clip")
def clipped_term(ratio: torch.Tensor, eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped ratio (arXiv 1707.06347), split by the advantage's sign: min(r, clip(r)) where
    A > 0 and max(r, clip(r)) where A < 0, so that -A * factor = -min(r A, clip(r) A)."""
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    return torch.minimum(ratio, clipped), torch.maximum(ratio, clipped)


@POLICY_TERMS.register("unclipped")
def unclipped_term(ratio: torch.Tensor, eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain importance-weighted policy gradient: the ratio r on both halves (the clipping
    ablation; eps_low and eps_high are ignored)."""
    return ratio, ratio


@KL_MASKS.register("none")
def no_kl(advantages: torch.Tensor) -> torch.Tensor:
    """No KL penalty anywhere."""
    return torch.zeros_like(advantages)


@KL_MASKS.register("standard")
def kl_everywhere(advantages: torch.Tensor) -> torch.Tensor:
    """The KL penalty on every sequence (GRPO, arXiv 2402.03300)."""
    return torch.ones_like(advantages)


@KL_MASKS.register("masked")
def kl_where_advantage_positive(advantages: torch.Tensor) -> torch.Tensor:
    """The KL penalty only where A > 0 (SPOGW's mKL, arXiv 2510.04089)."""
    return (advantages > 0).to(advantages.dtype)


def kl_mask(advantages: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, 1) weight of each sequence's KL term by the registered mask ``mode`` (KL_MASKS): none -> 0,
    standard -> 1, masked -> 1[A > 0] (mKL). Raises RegistryError for an unregistered mode."""
    return KL_MASKS.get(mode)(advantages)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: Aggregation) -> torch.Tensor:
    """Scalar from (B, T) losses: seq_mean = mean over sequences of each one's token mean (the
    paper's and TRL's "grpo" form); token_mean = sum over all tokens / number of tokens (DAPO)."""
    mask = mask.to(per_token.dtype)
    if mode == "seq_mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if mode == "token_mean":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    raise ValueError(f"aggregation must be seq_mean or token_mean, got {mode!r}")


def grpo_loss_rows(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    beta: float,
    kl: str,
    aggregation: Aggregation = "seq_mean",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    policy_term: PolicyTerm = clipped_term,
) -> torch.Tensor:
    """The GRPO loss over explicit rows (one row per group member): the textbook form that TRL
    computes, used as the reference for `grpo_loss` and for small online groups."""
    upper, lower = policy_term(torch.exp(logp - old_logp), eps_low, eps_high)
    per_token = -torch.where(advantages > 0, advantages * upper, advantages * lower)
    if beta != 0.0 and kl != "none":
        per_token = per_token + beta * k3_kl(logp, ref_logp) * kl_mask(advantages, kl)
    return aggregate(per_token, mask, aggregation)


# ----------------------------------------------------------------------------------------------
# Deduplicated GRPO: one forward per sequence, every group folded into per-sequence coefficients


@dataclass(frozen=True)
class SequenceCoefficients:
    """Per-sequence weights (S,) such that the deduplicated loss equals the materialised one."""

    positive: torch.Tensor
    """Sum over (group, member) rows of this sequence with A > 0 of A * row weight."""
    negative: torch.Tensor
    """Same for A < 0 (a non-positive number)."""
    kl: torch.Tensor
    """Sum over rows of kl_mask(A) * row weight."""
    rows: int
    """How many rows the materialised form would have (groups x members)."""

    def to(self, device: torch.device | str) -> SequenceCoefficients:
        return SequenceCoefficients(self.positive.to(device), self.negative.to(device), self.kl.to(device), self.rows)

    def select(self, index: slice | torch.Tensor) -> SequenceCoefficients:
        """The coefficients of the sequences ``index`` (a micro-batch, or one rank's share of it: a
        slice or a (k,) index tensor): the loss is a sum over sequences, so the parts' losses add up
        to the whole one."""
        return SequenceCoefficients(self.positive[index], self.negative[index], self.kl[index], self.rows)


def group_coefficients(
    groups: torch.Tensor,
    advantages: torch.Tensor,
    lengths: torch.Tensor,
    kl: str,
    aggregation: Aggregation,
    num_sequences: int,
) -> SequenceCoefficients:
    """Fold groups (G, k) of sequence indices with their advantages (G, k) into per-sequence
    coefficients. ``lengths`` (S,) are the sequences' token counts.

    A materialised row (group g, member i, sequence s) enters the aggregated loss with weight
    w = 1 / (rows * T_s) for seq_mean (mean over rows of each row's token mean), or
    w = 1 / (sum of T over all rows) for token_mean; the per-token loss of that row is
    -A c(r) + beta * kl_mask(A) * k3, with c = min(r, clip(r)) if A > 0 and max(r, clip(r)) if A < 0.
    """
    flat_seq = groups.reshape(-1)
    flat_adv = advantages.reshape(-1).to(torch.float64)
    lengths = lengths.to(torch.float64)
    rows = flat_seq.numel()
    if aggregation == "seq_mean":
        weight = 1.0 / (rows * lengths[flat_seq].clamp(min=1.0))
    elif aggregation == "token_mean":
        weight = torch.full_like(flat_adv, 1.0 / float(lengths[flat_seq].sum().clamp(min=1.0)))
    else:
        raise ValueError(f"aggregation must be seq_mean or token_mean, got {aggregation!r}")
    zeros = torch.zeros(num_sequences, dtype=torch.float64)
    positive = zeros.index_add(0, flat_seq, torch.where(flat_adv > 0, flat_adv, 0.0) * weight)
    negative = zeros.index_add(0, flat_seq, torch.where(flat_adv < 0, flat_adv, 0.0) * weight)
    kl_weight = zeros.index_add(0, flat_seq, kl_mask(flat_adv, kl) * weight)
    return SequenceCoefficients(positive.float(), negative.float(), kl_weight.float(), rows)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    coefficients: SequenceCoefficients,
    beta: float,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    policy_term: PolicyTerm = clipped_term,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Deduplicated GRPO loss over S unique sequences (S, T), each forwarded once.

    Equal (value and gradient) to `grpo_loss_rows` over the materialised rows with the same
    ``policy_term``. Returns the scalar loss and detached metrics (policy term, KL term, clip
    fraction: the share of active tokens whose ratio is outside [1 - eps_low, 1 + eps_high], and its
    two counts, clipped_tokens and active_tokens, which micro-batches add up)."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    upper, lower = policy_term(ratio, eps_low, eps_high)  # the factors where A > 0 and where A < 0
    policy = -(coefficients.positive[:, None] * upper + coefficients.negative[:, None] * lower)
    policy_value = (policy * mask).sum()
    kl_term = torch.zeros((), dtype=logp.dtype)
    if beta != 0.0:
        kl_term = beta * (coefficients.kl[:, None] * k3_kl(logp, ref_logp) * mask).sum()
    loss = policy_value + kl_term
    active = (coefficients.positive != 0) | (coefficients.negative != 0)
    is_clipped = ((ratio < 1.0 - eps_low) | (ratio > 1.0 + eps_high)).to(logp.dtype) * mask * active[:, None]
    active_tokens = (mask * active[:, None]).sum()
    metrics = {
        "policy_term": policy_value.detach(),
        "kl_term": kl_term.detach(),
        "clip_fraction": (is_clipped.sum() / active_tokens.clamp(min=1.0)).detach(),
        "clipped_tokens": is_clipped.sum().detach(),
        "active_tokens": active_tokens.detach(),
    }
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# Pairwise losses (on summed sequence log-probs, (B,))


def dpo_loss(
    logp_w: torch.Tensor, ref_w: torch.Tensor, logp_l: torch.Tensor, ref_l: torch.Tensor, beta: float
) -> torch.Tensor:
    """(B,) sigmoid DPO: -log sigmoid(beta [(logp_w - ref_w) - (logp_l - ref_l)])."""
    return -torch.nn.functional.logsigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l)))


@PAIR_LOSSES.register("dpo")
def sigmoid_dpo(
    logp_w: torch.Tensor,
    ref_w: torch.Tensor,
    logp_l: torch.Tensor,
    ref_l: torch.Tensor,
    s_w: torch.Tensor,
    s_l: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """(B,) DPO (arXiv 2305.18290); the scores are not used."""
    return dpo_loss(logp_w, ref_w, logp_l, ref_l, beta)


@PAIR_LOSSES.register("score_dpo")
def score_dpo_loss(
    logp_w: torch.Tensor,
    ref_w: torch.Tensor,
    logp_l: torch.Tensor,
    ref_l: torch.Tensor,
    s_w: torch.Tensor,
    s_l: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """(B,) ScoreFlow's Score-DPO (arXiv 2502.04306):
    -log sigmoid(beta [s_w (logp_w - ref_w) - (1 - s_l)(logp_l - ref_l)])."""
    return -torch.nn.functional.logsigmoid(beta * (s_w * (logp_w - ref_w) - (1.0 - s_l) * (logp_l - ref_l)))


@PAIR_LOSSES.register("ipo", beta_positive=True)
def ipo_loss(
    logp_w: torch.Tensor,
    ref_w: torch.Tensor,
    logp_l: torch.Tensor,
    ref_l: torch.Tensor,
    s_w: torch.Tensor,
    s_l: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """(B,) IPO (Azar et al., arXiv 2310.12036, eq. 17): (h - 1 / (2 beta))^2 with the log-ratio
    difference h = (logp_w - ref_w) - (logp_l - ref_l) of summed completion log-probs, as
    published; beta is the paper's tau. The scores are not used. TRL 1.16 divides each sequence's
    log-ratio by its token count first; with one token per completion the two agree."""
    if beta <= 0:
        raise ValueError(f"IPO needs beta > 0 (its target margin is 1 / (2 beta)), got {beta}")
    h = (logp_w - ref_w) - (logp_l - ref_l)
    return (h - 1.0 / (2.0 * beta)) ** 2
