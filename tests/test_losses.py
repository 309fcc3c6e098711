"""methods/losses.py against hand-computed values, invariants (hypothesis) and TRL's own loss code."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spogw.methods.losses import (
    aggregate,
    build_groups,
    clipped_term,
    dpo_loss,
    group_advantages,
    group_coefficients,
    grpo_loss,
    grpo_loss_rows,
    k3_kl,
    kl_mask,
    score_dpo_loss,
    sharpen,
    variance_filter,
)

scores_strategy = st.lists(st.sampled_from([0.0, 1 / 3, 2 / 3, 1.0, 0.5, 0.25]), min_size=2, max_size=10)


# --- hand-computed values ---------------------------------------------------------------------


def test_group_advantages_hand_computed() -> None:
    # scores 1, 0, 0, 1: mean 0.5, population std 0.5 -> +-0.5 / (0.5 + 1e-4)
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    assert torch.allclose(adv, torch.tensor([[1, -1, -1, 1]]) * 0.5 / 0.5001)
    # scores 0, 1, 2: mean 1, population std sqrt(2/3)
    adv = group_advantages(torch.tensor([[0.0, 1.0, 2.0]]), eps=0.0)
    assert torch.allclose(adv, torch.tensor([[-1.0, 0.0, 1.0]]) / math.sqrt(2 / 3))
    assert torch.allclose(
        group_advantages(torch.tensor([[0.0, 1.0, 2.0]]), eps=0.0, unbiased=True), torch.tensor([[-1.0, 0.0, 1.0]])
    )
    assert torch.equal(
        group_advantages(torch.tensor([[0.0, 1.0, 2.0]]), scale="none"), torch.tensor([[-1.0, 0.0, 1.0]])
    )
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(1, 2), scale="batch")  # type: ignore[arg-type]


def test_build_groups_all_combinations_in_lexicographic_order() -> None:
    groups = build_groups(4, 2, max_groups=10, seed=0)
    assert groups.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert build_groups(16, 14, max_groups=120, seed=0).shape == (120, 14)  # the paper's C(16, 14)


def test_build_groups_draws_distinct_combinations_with_the_seed() -> None:
    drawn = build_groups(16, 8, max_groups=50, seed=3)
    assert drawn.shape == (50, 8)
    assert len({tuple(row) for row in drawn.tolist()}) == 50
    assert all(row == sorted(row) and len(set(row)) == 8 for row in drawn.tolist())
    assert torch.equal(drawn, build_groups(16, 8, max_groups=50, seed=3))
    assert not torch.equal(drawn, build_groups(16, 8, max_groups=50, seed=4))
    with pytest.raises(ValueError, match="group size"):
        build_groups(4, 5, 10, 0)


def test_variance_filter_hand_computed() -> None:
    scores = torch.tensor([0.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([[0, 1], [0, 2], [2, 3]])
    assert variance_filter(scores, groups, min_std=0.1).tolist() == [[0, 2]]  # only the mixed group has std 0.5
    assert variance_filter(scores, groups, min_std=0.0).tolist() == groups.tolist()


def test_sharpen_hand_computed_with_ties() -> None:
    scores = torch.tensor([0.5, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    # top 2: score 1 -> indices 4, 5 (lower index first among 4, 5, 6); bottom 2: score 0 -> 1, 2
    assert sharpen(scores, torch.tensor([[0, 1, 2, 3, 4, 5, 6]]), 2).tolist() == [[1, 2, 4, 5]]
    assert sharpen(scores, torch.tensor([[6, 5, 0, 3]]), 1).tolist() == [[3, 5]]
    with pytest.raises(ValueError, match="2t <= n"):
        sharpen(scores, torch.tensor([[0, 1, 2]]), 2)


def test_k3_kl_hand_computed() -> None:
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -1.0]])
    expected = torch.tensor([[0.0, math.exp(1.0) - 1.0 - 1.0]])
    assert torch.allclose(k3_kl(logp, ref), expected)


def test_clipped_term_hand_computed() -> None:
    ratio = torch.tensor([[1.5, 0.5, 1.0]])
    upper, lower = clipped_term(ratio, 0.2, 0.2)
    assert torch.allclose(-2.0 * upper, torch.tensor([[-2.0 * 1.2, -2.0 * 0.5, -2.0]]))  # min(rA, clip(r)A), A=2
    assert torch.allclose(1.0 * lower, torch.tensor([[1.5, 0.8, 1.0]]))  # -A * max(r, clip(r)), A=-1
    asym_upper, _ = clipped_term(ratio, 0.2, 0.28)
    assert torch.allclose(-asym_upper[0, 0], torch.tensor(-1.28))


def test_kl_mask_modes() -> None:
    adv = torch.tensor([[1.0], [-0.5], [0.0]])
    assert kl_mask(adv, "none").tolist() == [[0.0], [0.0], [0.0]]
    assert kl_mask(adv, "standard").tolist() == [[1.0], [1.0], [1.0]]
    assert kl_mask(adv, "masked").tolist() == [[1.0], [0.0], [0.0]]


def test_aggregate_modes_hand_computed() -> None:
    per_token = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.isclose(aggregate(per_token, mask, "seq_mean"), torch.tensor((2.0 + 2.0) / 2))
    assert torch.isclose(aggregate(per_token, mask, "token_mean"), torch.tensor(6.0 / 3))


def test_dpo_and_score_dpo_hand_computed() -> None:
    one = torch.tensor([1.0])
    zero = torch.tensor([0.0])
    # margin beta * ((1 - 0) - (0 - 0)) = 0.1 -> -log sigmoid(0.1)
    assert torch.isclose(dpo_loss(one, zero, zero, zero, 0.1), torch.tensor([-math.log(1 / (1 + math.exp(-0.1)))]))
    # score-DPO: beta [s_w * 1 - (1 - s_l) * (-2)] with s_w = 0.5, s_l = 0.25 -> 0.1 * (0.5 + 1.5) = 0.2
    value = score_dpo_loss(one, zero, torch.tensor([-2.0]), zero, torch.tensor([0.5]), torch.tensor([0.25]), 0.1)
    assert torch.isclose(value, torch.tensor([-math.log(1 / (1 + math.exp(-0.2)))]))
    # with s_w = 1 and s_l = 0 it is plain DPO
    a, b, c, d = torch.randn(4, 5)
    assert torch.allclose(score_dpo_loss(a, b, c, d, torch.ones(5), torch.zeros(5), 0.3), dpo_loss(a, b, c, d, 0.3))


# --- invariants (hypothesis) ------------------------------------------------------------------


@given(scores_strategy)
def test_advantages_sum_to_zero_per_group(values: list[float]) -> None:
    adv = group_advantages(torch.tensor([values], dtype=torch.float64))
    assert abs(float(adv.sum())) < 1e-9
    order = sorted(range(len(values)), key=values.__getitem__)
    assert all(adv[0, a] <= adv[0, b] + 1e-12 for a, b in itertools.pairwise(order))  # monotone


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=6), st.lists(st.floats(-5, 5), min_size=1, max_size=6))
def test_k3_is_non_negative(a: list[float], b: list[float]) -> None:
    n = min(len(a), len(b))
    assert bool((k3_kl(torch.tensor(a[:n]), torch.tensor(b[:n])) >= -1e-6).all())


@given(st.lists(st.floats(-3, 3), min_size=1, max_size=8))
def test_masked_kl_is_zero_where_advantage_is_not_positive(values: list[float]) -> None:
    adv = torch.tensor(values)[:, None]
    mask = kl_mask(adv, "masked")
    assert bool((mask[adv <= 0] == 0).all()) and bool((mask[adv > 0] == 1).all())


@settings(max_examples=60)
@given(scores_strategy, st.integers(1, 4))
def test_sharpening_keeps_the_extremes(values: list[float], t: int) -> None:
    n = len(values)
    if 2 * t > n:
        return
    scores = torch.tensor(values)
    kept = sharpen(scores, torch.arange(n)[None], t)[0].tolist()
    assert len(kept) == 2 * t == len(set(kept))
    dropped = [i for i in range(n) if i not in kept]
    kept_scores = sorted(values[i] for i in kept)
    for i in dropped:  # nothing dropped is above the kept top or below the kept bottom
        assert kept_scores[0] <= values[i] <= kept_scores[-1]
    top = sorted(values, reverse=True)[:t]
    bottom = sorted(values)[:t]
    assert sorted(kept_scores) == sorted(top + bottom)


@settings(max_examples=40)
@given(st.integers(2, 9), st.data())
def test_groups_are_valid_combinations(m: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, m))
    cap = data.draw(st.integers(1, 40))
    groups = build_groups(m, n, cap, seed=1)
    assert groups.shape == (min(math.comb(m, n), cap), n)
    rows = [tuple(r) for r in groups.tolist()]
    assert len(set(rows)) == len(rows) and all(len(set(r)) == n and max(r) < m for r in rows)


@settings(max_examples=40)
@given(scores_strategy, st.floats(0.0, 0.6))
@example([1 / 3, 1.0], 1 / 3)
def test_variance_filter_keeps_exactly_the_high_variance_groups(values: list[float], threshold: float) -> None:
    scores = torch.tensor(values)
    groups = build_groups(len(values), 2, 50, seed=0)
    kept = {tuple(r) for r in variance_filter(scores, groups, threshold).tolist()}
    for row in groups.tolist():
        # The filter's rule on the scores it is given (float32 here), in double precision: a float32
        # reference std can round across the threshold (found by hypothesis: [1/3, 1.0], 1/3).
        std = statistics.pstdev([float(scores[i]) for i in row])
        assert (tuple(row) in kept) == (std >= threshold)


# --- the deduplicated loss equals the materialised one ----------------------------------------


def _random_case(seed: int, m: int = 6, n: int = 4, t_max: int = 9):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, t_max + 1, (m,), generator=g)
    mask = (torch.arange(t_max)[None] < lengths[:, None]).float()
    old = -torch.rand(m, t_max, generator=g) * 3
    ref = old + 0.3 * torch.randn(m, t_max, generator=g)
    logp = (old + 0.4 * torch.randn(m, t_max, generator=g)).requires_grad_(True)
    scores = torch.randint(0, 4, (m,), generator=g).float() / 3
    groups = build_groups(m, n, 100, seed)
    return logp, old, ref, mask, lengths, scores, groups


@pytest.mark.parametrize("kl", ["none", "standard", "masked"])
@pytest.mark.parametrize("aggregation", ["seq_mean", "token_mean"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("term", ["clip", "unclipped"])
def test_dedup_loss_and_gradient_equal_the_materialised_rows(kl: str, aggregation: str, seed: int, term: str) -> None:
    from spogw.methods.losses import POLICY_TERMS

    policy_term = POLICY_TERMS.get(term)
    logp, old, ref, mask, lengths, scores, groups = _random_case(seed)
    advantages = group_advantages(scores[groups])
    coefficients = group_coefficients(groups, advantages, lengths, kl, aggregation, num_sequences=len(scores))  # type: ignore[arg-type]
    dedup, _ = grpo_loss(logp, old, ref, mask, coefficients, 0.1, policy_term=policy_term)
    (dedup_grad,) = torch.autograd.grad(dedup, logp)
    rows = groups.reshape(-1)
    materialised = grpo_loss_rows(
        logp[rows],
        old[rows],
        ref[rows],
        mask[rows],
        advantages.reshape(-1, 1),
        beta=0.1,
        kl=kl,
        aggregation=aggregation,
        policy_term=policy_term,
    )  # type: ignore[arg-type]
    (rows_grad,) = torch.autograd.grad(materialised, logp)
    assert torch.allclose(dedup, materialised, rtol=1e-5, atol=1e-7)
    assert torch.allclose(dedup_grad, rows_grad, rtol=1e-5, atol=1e-8)


# --- TRL's own loss code ----------------------------------------------------------------------


def _trl_loss(per_token_logps, old, ref, completion_mask, advantages, beta, epsilon):  # type: ignore[no-untyped-def]
    """TRL 1.16's GRPOTrainer._compute_loss, run unbound on a stub trainer with our log-probs."""
    from trl import GRPOTrainer

    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (per_token_logps, torch.zeros_like(per_token_logps), None),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        epsilon_low=epsilon,
        epsilon_high=epsilon,
        loss_type="grpo",
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
        use_vllm=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        accelerator=SimpleNamespace(gather=lambda x: x, num_processes=1, reduce=lambda x, reduction="mean": x),
    )
    inputs = {
        "prompt_ids": torch.zeros(per_token_logps.shape[0], 1, dtype=torch.long),
        "prompt_mask": torch.ones(per_token_logps.shape[0], 1, dtype=torch.long),
        "completion_ids": torch.zeros(per_token_logps.shape, dtype=torch.long),
        "completion_mask": completion_mask.long(),
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
    }
    return GRPOTrainer._compute_loss(stub, None, inputs)


@pytest.mark.parametrize("beta", [0.0, 0.04, 0.1])
def test_matches_trl_grpo_loss(beta: float) -> None:
    """kl=standard, loss_type "grpo", scale_rewards "group": our loss equals TRL's to 1e-5 (value and
    gradient) given the same advantages. TRL standardises with Bessel's std, hence unbiased=True."""
    from trl.trainer.utils import nanstd

    logp, old, ref, mask, lengths, scores, _ = _random_case(5, m=8)
    rewards = scores.view(2, 4)  # two prompts, four generations each
    trl_adv = ((rewards - rewards.mean(1, keepdim=True)) / (nanstd(rewards, dim=1)[:, None] + 1e-4)).reshape(-1)
    ours_adv = group_advantages(rewards, unbiased=True).reshape(-1)
    assert torch.allclose(ours_adv, trl_adv, atol=1e-6)

    trl = _trl_loss(logp, old, ref, mask, trl_adv, beta, 0.2)
    (trl_grad,) = torch.autograd.grad(trl, logp)
    groups = torch.arange(8).view(2, 4)
    coefficients = group_coefficients(groups, ours_adv.view(2, 4), lengths, "standard", "seq_mean", 8)
    ours, _ = grpo_loss(logp, old, ref, mask, coefficients, beta=beta)
    (ours_grad,) = torch.autograd.grad(ours, logp)
    print(f"beta={beta}: ours {float(ours):.8f}, TRL {float(trl):.8f}")
    assert abs(float(ours) - float(trl)) < 1e-5
    assert torch.allclose(ours_grad, trl_grad, atol=1e-6)


def _trl_ipo(logp_w, logp_l, mask_w, mask_l, ref_w, ref_l, beta):  # type: ignore[no-untyped-def]
    """TRL 1.16's DPOTrainer._compute_loss with loss_type "ipo", run unbound on a stub trainer and
    a stub model that returns our (B, T) per-token log-probs; reference log-probs precomputed (B,)."""
    from trl import DPOTrainer

    per_token = torch.cat([logp_w, logp_l])
    rows, width = per_token.shape
    completion_mask = torch.cat([torch.zeros(rows, 1, dtype=torch.long), torch.cat([mask_w, mask_l]).long()], dim=1)

    def same(x):  # type: ignore[no-untyped-def]
        return x

    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device="cpu", gather_for_metrics=same, gather=same),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=["ipo"], loss_weights=[1.0], beta=beta, use_weighting=False, label_smoothing=0.0,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1, args=SimpleNamespace(),
    )  # fmt: skip

    def model(**kwargs):  # type: ignore[no-untyped-def]
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(
            log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool(), aux_loss=None
        )

    inputs = {
        "input_ids": torch.zeros(rows, width + 1, dtype=torch.long),
        "attention_mask": torch.ones(rows, width + 1, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_w,
        "ref_rejected_logps": ref_l,
    }
    return DPOTrainer._compute_loss(stub, model, inputs, False)


def test_ipo_hand_computed_and_against_trl() -> None:
    """IPO (arXiv 2310.12036 eq. 17): (h - 1/(2 beta))^2. By hand: h = (1 - 0) - (0 - 0) = 1, beta 0.25
    -> (1 - 2)^2 = 1. Against TRL 1.16: equal on one-token completions; on longer ones TRL divides
    each sequence's log-ratio by its length first, and ours on length-averaged inputs equals it."""
    from spogw.methods.losses import ipo_loss

    one, zero = torch.tensor([1.0]), torch.tensor([0.0])
    assert torch.isclose(ipo_loss(one, zero, zero, zero, zero, zero, 0.25), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="beta > 0"):
        ipo_loss(one, zero, zero, zero, zero, zero, 0.0)
    g = torch.Generator().manual_seed(4)
    for width in (1, 5):
        lengths_w, lengths_l = torch.tensor([width, 1, width]), torch.tensor([1, width, width])
        positions = torch.arange(width)[None]
        mask_w, mask_l = (positions < lengths_w[:, None]).float(), (positions < lengths_l[:, None]).float()
        logp_w = -torch.rand(3, width, generator=g) * mask_w
        logp_l = -torch.rand(3, width, generator=g) * mask_l
        ref_w, ref_l = -torch.rand(3, generator=g) * lengths_w, -torch.rand(3, generator=g) * lengths_l
        trl = _trl_ipo(logp_w, logp_l, mask_w, mask_l, ref_w, ref_l, 0.1)
        ours = ipo_loss(
            logp_w.sum(-1) / lengths_w,
            ref_w / lengths_w,
            logp_l.sum(-1) / lengths_l,
            ref_l / lengths_l,
            zero,
            zero,
            0.1,
        ).mean()
        print(f"completion width {width}: ours {float(ours):.6f}, TRL {float(trl):.6f}")
        assert abs(float(ours) - float(trl)) < 1e-5
    summed = ipo_loss(logp_w.sum(-1), ref_w, logp_l.sum(-1), ref_l, zero, zero, 0.1).mean()
    assert abs(float(summed) - float(trl)) > 1e-3  # as published (summed), not TRL's normalised form


def test_every_registered_name_is_a_config_choice_and_unknown_names_are_refused() -> None:
    """The config fields accept exactly the registries' names (and say which exist otherwise): a
    loss that is not registered can never run as another one."""
    from spogw.methods.config import GRPOConfig, PairConfig
    from spogw.methods.losses import ADVANTAGES, KL_MASKS, PAIR_LOSSES, POLICY_TERMS

    for name in PAIR_LOSSES.names():
        assert PairConfig(loss=name).loss == name
    for field, registry in (("scale", ADVANTAGES), ("policy_term", POLICY_TERMS), ("kl", KL_MASKS)):
        for name in registry.names():
            assert getattr(GRPOConfig(**{field: name}), field) == name
    with pytest.raises(ValueError, match=r"unknown pair loss 'ipox'; did you mean 'ipo'"):
        PairConfig(loss="ipox")
    with pytest.raises(ValueError, match="does not build pairs"):
        PairConfig(pairs="groups")
    with pytest.raises(ValueError, match="unknown policy term"):
        GRPOConfig(policy_term="clipped")


def test_the_unclipped_policy_term_is_the_plain_ratio() -> None:
    from spogw.methods.losses import clipped_term, unclipped_term

    ratio = torch.tensor([[0.5, 1.0, 1.5]])
    upper, lower = clipped_term(ratio, 0.2, 0.2)
    assert torch.equal(upper, torch.tensor([[0.5, 1.0, 1.2]])) and torch.equal(lower, torch.tensor([[0.8, 1.0, 1.5]]))
    assert all(torch.equal(half, ratio) for half in unclipped_term(ratio, 0.2, 0.2))


def test_ipo_is_a_method_and_a_loss_any_pair_method_can_choose() -> None:
    """methods/ipo.py is found by the catalog (no registration elsewhere), and `loss: ipo` on the dpo
    method validates to the same loss; beta = 0 is refused before anything runs."""
    from spogw.harness.config import ConfigError, method_config, validate

    base = {"version": 1, "name": "x", "benchmarks": [{"name": "gsm_synth", "size": 20}]}
    config = validate({**base, "methods": [{"name": "ipo"}, {"name": "dpo", "overrides": {"loss": "ipo"}}]}, "x.yaml")
    ipo, dpo = (method_config(spec) for spec in config.methods)
    assert type(ipo).__name__ == "IPOConfig" and ipo.loss == dpo.loss == "ipo" and ipo.update == "pairs"
    with pytest.raises(ConfigError, match=r"methods\.0.*needs beta > 0"):
        validate({**base, "methods": [{"name": "ipo", "overrides": {"beta": 0.0}}]}, "x.yaml")
