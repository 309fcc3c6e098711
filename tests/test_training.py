"""Data builders, collection and the training loop: the mechanics, on the small tiny model."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.collect import CollectSpec, collect_questions
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.policy.logprobs import completion_logprobs
from spogw.harness.policy.sampling import SamplingParams
from spogw.harness.rollouts import MemoryStore, Rollout
from spogw.harness.train import Task, TrainingRun, make_optimizer, run_method
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.methods.config import GRPOConfig, PairConfig
from spogw.methods.losses import group_coefficients, grpo_loss, grpo_loss_rows
from spogw.methods.steps import build_units, update_iteration
from spogw.methods.units import GroupUnit, best_worst_pair, grpo_unit, scoreflow_pairs
from tests.conftest import run

GSM = load_benchmark("gsm_synth", size=60)


def rollout(idx: int, score: float | None, status: str = "ok", query: str = "q") -> Rollout:
    return Rollout(
        "e",
        "m",
        0,
        0,
        query,
        idx,
        "p",
        "code",
        (1, 2),
        (3, 4, 5),
        (-1.0, -1.0, -1.0),
        status,
        "",
        score,
        (score,),
        1,
        10,
        0.1,
    )


def test_infra_errors_never_enter_a_unit() -> None:
    rows = [rollout(0, 1.0), rollout(1, 0.0), rollout(2, None, "infra_error"), rollout(3, 0.5)]
    unit = grpo_unit(rows, GRPOConfig(num_samples=4, combinations=False, kl="masked"), seed=0)
    assert unit is not None and [r.sample_idx for r in unit.rollouts] == [0, 1, 3]
    assert unit.groups.tolist() == [[0, 1, 2]]
    assert abs(float(unit.advantages.sum())) < 1e-5
    pairs = best_worst_pair(rows)
    assert len(pairs) == 1 and (pairs[0].chosen.sample_idx, pairs[0].rejected.sample_idx) == (0, 1)
    assert all(
        p.chosen.status != "infra_error" and p.rejected.status != "infra_error"
        for p in scoreflow_pairs(rows, 50, seed=1)
    )


def test_spogw_unit_combinations_filter_sharpening() -> None:
    rows = [rollout(i, s) for i, s in enumerate([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])]
    config = GRPOConfig(num_samples=6, group_size=4, max_groups=100, min_group_std=0.1, sharpen_t=1)
    unit = grpo_unit(rows, config, seed=0)
    assert unit is not None and unit.groups_built == 15  # C(6, 4)
    assert unit.groups.shape[1] == 2  # sharpened to 2t
    assert unit.groups_kept == 15 - 0  # every 4-subset of three 1s and three 0s has std > 0.1
    assert all(sorted(float(rows[i].score) for i in g) == [0.0, 1.0] for g in unit.groups.tolist())  # type: ignore[arg-type]
    same = [rollout(i, 0.5) for i in range(6)]
    empty = grpo_unit(same, config, seed=0)
    assert empty is not None and empty.groups_kept == 0  # no variance: every group filtered


def test_scoreflow_pairs_favour_large_score_gaps() -> None:
    rows = [rollout(0, 1.0), rollout(1, 0.9), rollout(2, 0.0)]
    pairs = scoreflow_pairs(rows, 2000, seed=0)
    counts = {}
    for p in pairs:
        key = (p.chosen.sample_idx, p.rejected.sample_idx)
        counts[key] = counts.get(key, 0) + 1
    total = 1.0**3 + 0.9**3 + 0.1**3
    assert abs(counts[(0, 2)] / 2000 - 1.0 / total) < 0.04
    assert counts.get((0, 1), 0) / 2000 < 0.01  # gap 0.1 -> weight 0.001


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="larger than num_samples"):
        GRPOConfig(num_samples=4, group_size=6)
    with pytest.raises(ValueError, match="sharpening keeps"):
        GRPOConfig(num_samples=8, group_size=6, sharpen_t=4)
    with pytest.raises(ValueError):
        GRPOConfig(beta=-0.1)


@pytest.fixture(scope="module")
def collected(small_generator):  # type: ignore[no-untyped-def]
    async def go() -> list[Rollout]:
        engine = WorkflowEngine(SimExecutor("medium"), concurrency=2, timeout_s=30)
        try:
            spec = CollectSpec("t", "spogw", 0, 0, num_samples=6, repeats=2)
            return await collect_questions(
                small_generator, engine, GSM, list(GSM.items[:3]), spec, SamplingParams(1.0, 1.0, 64), MemoryStore()
            )
        finally:
            await engine.close()

    return run(go())


def test_collection_records_every_sample_with_its_status(collected) -> None:  # type: ignore[no-untyped-def]
    assert len(collected) == 18 and len({r.key for r in collected}) == 18
    for r in collected:
        assert r.status in ("ok", "invalid", "timeout", "runtime_error", "infra_error")
        assert len(r.old_logp) == len(r.completion_ids) and len(r.score_repeats) == 2
        assert r.score is not None and 0.0 <= r.score <= 1.0


def _varied(collected: list[Rollout]) -> list[Rollout]:
    """The collected rollouts with scores spread inside every question (so every group has an advantage)."""
    return [dataclasses.replace(r, score=float(r.sample_idx % 3) / 2, status="ok") for r in collected]


def test_update_reads_only_stored_rollouts(small_generator, collected, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The offline update never executes a workflow (engine runs and sandbox runs raise during it),
    and with the production optimizer it changes the LoRA weights."""
    import spogw.harness.workflows.engine as engine_module
    import spogw.harness.workflows.sandbox as sandbox_module

    def forbidden(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a workflow ran during the update step")

    monkeypatch.setattr(engine_module.WorkflowEngine, "run", forbidden)
    monkeypatch.setattr(sandbox_module.Sandbox, "run_python", forbidden)
    rollouts = _varied(collected)
    for config in (
        GRPOConfig(num_samples=6, group_size=4, max_groups=15, learning_rate=1e-3, questions_per_step=2),
        PairConfig(num_samples=6, learning_rate=1e-3),
    ):
        before = [p.detach().clone() for p in small_generator.trainable_parameters()]
        optimizer = make_optimizer(small_generator, config)
        units, steps = update_iteration(small_generator, rollouts, config, 0, 0, optimizer, 1.0)
        assert units and len(steps) == -(-len(units) // config.units_per_step)
        expected = {"loss", "policy_term", "kl_term", "clip_fraction", "mean_abs_advantage", "groups_kept_fraction"}
        assert expected <= set(steps[0]) if isinstance(config, GRPOConfig) else "reward_margin" in steps[0]
        assert steps[0]["grad_norm"] > 0.0
        after = list(small_generator.trainable_parameters())
        assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True)), type(config).__name__


def _mean_token_logp(generator, rollouts: list[Rollout]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """(S,) each completion's summed log-prob divided by its length, dropout off."""
    generator.model.eval()
    with torch.no_grad():
        logp, mask = completion_logprobs(generator.model, rollouts, 1.0, generator.constraint)
    return (logp * mask).sum(-1) / mask.sum(-1)


# GRPO is left out: with Adam's sign-like first step, shared LoRA weights and four sequences, the
# advantage-weighted objective fell once on a trained small model (-6e-3, CI log 2026-11-30); the
# GRPO update is checked against TRL and the materialised rows in test_losses.py instead.
@pytest.mark.parametrize("loss", ["dpo", "score_dpo", "ipo"])
def test_one_step_moves_log_probs_the_way_the_loss_wants(small_generator, collected, loss) -> None:  # type: ignore[no-untyped-def]
    """After one optimizer step with the production optimizer (AdamW, weight decay 0), the
    advantage-weighted log-probs rise: sum_i A_i * (mean token log-prob of i) for GRPO (seq_mean),
    the chosen-minus-rejected margin for the pair losses. Sequences share the LoRA weights, so a
    single sequence may move against its sign; this objective may not (first order, small lr)."""
    question = [r for r in _varied(collected) if r.query_id == collected[0].query_id][:4]
    question = [dataclasses.replace(r, score=s) for r, s in zip(question, (1.0, 0.0, 1.0, 0.0), strict=True)]
    if loss == "grpo":
        config: GRPOConfig | PairConfig = GRPOConfig(
            num_samples=4, combinations=False, learning_rate=1e-4, beta=0.0, kl="none"
        )
    else:
        config = PairConfig(num_samples=4, learning_rate=1e-4, loss=loss, pairs="best_worst")
    (unit,) = build_units(question, config, 0, 0)
    if isinstance(unit, GroupUnit):
        tracked, weights = list(unit.rollouts), unit.advantages.reshape(-1)
    else:
        tracked, weights = [unit.chosen, unit.rejected], torch.tensor([1.0, -1.0])
    lengths = torch.tensor([len(r.completion_ids) for r in tracked], dtype=torch.float32)
    before = _mean_token_logp(small_generator, tracked)
    small_generator.model.eval()  # dropout off inside the step too: the step sees the same function
    small_generator.train_mode = lambda: None  # type: ignore[method-assign]
    try:
        update_iteration(small_generator, question, config, 0, 0, make_optimizer(small_generator, config), 1.0)
    finally:
        del small_generator.train_mode
        small_generator.model.train()
    change = _mean_token_logp(small_generator, tracked) - before
    if isinstance(unit, GroupUnit):
        objective = float((weights * change).sum())
    else:
        objective = float((weights * change * lengths).sum())  # pair losses act on summed log-probs
    print(f"{loss}: weights {weights.tolist()}, mean log-prob change {change.tolist()}, objective +{objective:.2e}")
    assert objective > 0
    assert float(change[weights > 0].mean()) > float(change[weights < 0].mean())


def test_dedup_gradient_equals_materialised_groups_on_a_model(small_generator, collected) -> None:  # type: ignore[no-untyped-def]
    """One forward per sequence gives the same LoRA gradient as one forward per group member."""
    varied = [r for r in collected if r.query_id == collected[0].query_id]
    varied = [dataclasses.replace(r, score=float(i % 3) / 2) for i, r in enumerate(varied)]  # ensure variance
    unit = grpo_unit(varied, GRPOConfig(num_samples=6, group_size=4, max_groups=15), seed=0)
    assert unit is not None and unit.groups_kept == 15
    model = small_generator.model
    model.eval()  # no dropout: both forms see the same function
    params = small_generator.trainable_parameters()
    seqs = list(unit.rollouts)
    logp, mask = completion_logprobs(model, seqs, 1.0)
    old = torch.zeros_like(logp)
    for i, r in enumerate(seqs):
        old[i, : len(r.old_logp)] = torch.tensor(r.old_logp)
    ref = old - 0.1
    lengths = torch.tensor([len(r.completion_ids) for r in seqs])
    coefficients = group_coefficients(unit.groups, unit.advantages, lengths, "masked", "seq_mean", len(seqs))
    dedup, _ = grpo_loss(logp, old, ref, mask, coefficients, beta=0.1)
    dedup_grads = torch.autograd.grad(dedup, params)
    rows = unit.groups.reshape(-1).tolist()
    row_logp, row_mask = completion_logprobs(model, [seqs[i] for i in rows], 1.0)  # 60 forwards, not 6
    materialised = grpo_loss_rows(
        row_logp, old[rows], ref[rows], row_mask, unit.advantages.reshape(-1, 1), beta=0.1, kl="masked"
    )
    row_grads = torch.autograd.grad(materialised, params)
    dedup_vec = torch.cat([g.reshape(-1) for g in dedup_grads])
    rows_vec = torch.cat([g.reshape(-1) for g in row_grads])
    relative = float((dedup_vec - rows_vec).norm() / rows_vec.norm())
    print(
        f"loss {float(dedup):.3e} vs {float(materialised):.3e}; gradient relative error {relative:.2e}; "
        f"forwarded rows {len(seqs)} vs {len(rows)}"
    )
    assert abs(float(dedup) - float(materialised)) < 1e-5 * float(rows_vec.abs().sum() + 1)
    assert relative < 1e-5
    model.train()


def _run(generator, config: GRPOConfig, items: list, label: str) -> list:  # type: ignore[no-untyped-def, type-arg]
    async def go() -> list:  # type: ignore[type-arg]
        engine = WorkflowEngine(SimExecutor("medium"), concurrency=2, timeout_s=30)
        run_spec = TrainingRun(
            experiment="t", label=label, config=config, tasks=[Task(GSM, items)], seed=0, iterations=1,
            repeats=1, params=SamplingParams(1.0, 1.0, 48),
        )  # fmt: skip
        try:
            return await run_method(generator, engine, MemoryStore(), run_spec)
        finally:
            await engine.close()

    return run(go())


@pytest.mark.parametrize("schedule", ["offline", "online"])
def test_run_method_schedules_step_and_time_as_they_should(small_generator, schedule: str) -> None:  # type: ignore[no-untyped-def]
    """Offline: one step per batch of questions after the whole collection; online: one update per
    collected batch. Both report collection and update time apart (online's used to be all
    'collect'), and the summary carries the units trained on."""
    config = GRPOConfig(
        num_samples=4, group_size=3, max_groups=4, learning_rate=1e-4, questions_per_step=1, schedule=schedule
    )
    summaries = _run(small_generator, config, list(GSM.items[3:5]), schedule)
    assert [s.iteration for s in summaries] == [0, 1]
    first, final = summaries
    assert first.rollouts == 8 and final.steps == [] and final.units == []
    questions_with_units = len({u.query_id for u in first.units})
    assert len(first.steps) == questions_with_units == len(first.units)
    assert first.collect_s > 0 and (first.train_s > 0) == bool(first.steps)
    assert first.collect_s + first.train_s < 600


def test_online_schedule_with_the_previous_iteration_as_reference(small_generator) -> None:  # type: ignore[no-untyped-def]
    """The reference adapter is loaded for online runs too (it was only loaded on the offline path)."""
    from spogw.harness.policy.model import REFERENCE

    if REFERENCE in small_generator.model.peft_config:  # left by another test: start without one
        small_generator.model.delete_adapter(REFERENCE)
    config = GRPOConfig(
        num_samples=4, group_size=3, max_groups=4, learning_rate=1e-4, questions_per_step=1,
        schedule="online", ref="previous_iteration", beta=0.1, kl="standard",
    )  # fmt: skip

    lora = {n: p.detach().clone() for n, p in small_generator.model.named_parameters() if ".default." in n}
    summaries = _run(small_generator, config, list(GSM.items[5:7]), "prev")
    assert [s.iteration for s in summaries] == [0, 1] and summaries[0].rollouts == 8
    # the reference is the adapter as it was when iteration 0 started (the untrained one)
    assert REFERENCE in small_generator.model.peft_config
    parameters = dict(small_generator.model.named_parameters())
    for name, start in lora.items():
        assert torch.equal(parameters[name.replace(".default.", f".{REFERENCE}.")], start), name


# ----------------------------------------------------------------------------------------------
# The memory-safe step (issue 22, item 3): completion-only logits, micro-batches with gradient
# accumulation, gradient checkpointing, bf16 autocast. None may change what a step computes.


@pytest.fixture(scope="module")
def no_dropout_generator(small_generator):  # type: ignore[no-untyped-def]
    """The small generator's base with a fresh LoRA without dropout: in training mode (where
    gradient checkpointing acts) two forwards of the same batch are then the same function."""
    from transformers import AutoModelForCausalLM

    from spogw.harness.config import GeneratorConfig, LoraConfig
    from spogw.harness.policy import tiny
    from spogw.harness.policy.model import attach_lora

    base = AutoModelForCausalLM.from_pretrained(tiny.tiny_dir(tiny.TEST_RECIPE))
    torch.manual_seed(1)
    model = attach_lora(base, GeneratorConfig(lora=LoraConfig(dropout=0.0)))
    with torch.no_grad():  # B = 0 at init would make every LoRA gradient but B's zero
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.02)
    return dataclasses.replace(small_generator, model=model)


def test_completion_logprobs_equal_one_unpadded_sequence_at_a_time(small_generator, collected) -> None:  # type: ignore[no-untyped-def]
    """The batched, completion-only forward (prompts left-padded, logits_to_keep) gives every
    rollout's log-probs as a forward of that sequence alone over all its positions would (the
    grammar-constrained form: tests/test_constraint.py)."""
    from spogw.harness.policy.sampling import token_logprobs

    model = small_generator.model
    model.eval()
    assert len({len(r.prompt_ids) for r in collected}) > 1 and len({len(r.completion_ids) for r in collected}) > 1
    with torch.no_grad():
        logp, mask = completion_logprobs(model, collected, 0.7)
        worst = 0.0
        for row, r in enumerate(collected):
            alone = token_logprobs(model, r.prompt_ids, r.completion_ids, 0.7)
            worst = max(worst, float((logp[row, : len(r.completion_ids)] - alone).abs().max()))
            assert mask[row].sum() == len(r.completion_ids) and mask[row, len(r.completion_ids) :].sum() == 0
    print(f"max |batched - alone| = {worst:.2e}")
    assert worst < 1e-5


def _step_gradient(generator, units, config, ref_cache) -> tuple[dict[str, float], torch.Tensor]:  # type: ignore[no-untyped-def]
    """One update step's metrics and the LoRA gradient it applied (lr 0: the weights stay put)."""
    from spogw.methods.steps import UPDATES

    params = generator.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=0.0)
    metrics = UPDATES.get(config.update)(generator, units, config, ref_cache, optimizer, 1.0)
    return metrics, torch.cat([p.grad.reshape(-1) for p in params])


@pytest.mark.parametrize("kind", ["groups", "pairs"])
def test_micro_batches_and_checkpointing_give_the_one_pass_step(no_dropout_generator, collected, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Micro-batches of 1, 2 and 5 sequences (gradient accumulation) and gradient checkpointing:
    the step's loss and gradient equal the one-pass step within 1e-6 (float rounding only)."""
    from spogw.methods.steps import build_units, unit_rollouts

    config = (
        GRPOConfig(num_samples=6, group_size=4, max_groups=15, beta=0.1, questions_per_step=3, max_grad_norm=1e9)
        if kind == "groups"
        else PairConfig(num_samples=6, pairs="scoreflow", pairs_per_question=3, beta=0.1, max_grad_norm=1e9)
    )
    units = build_units(_varied(collected), config, seed=0, iteration=0)
    assert units
    unique = list({r.key: r for u in units for r in unit_rollouts(u)}.values())
    ref_cache = {r.key: torch.tensor(r.old_logp) - 0.05 for r in unique}
    generator = no_dropout_generator
    generator.model.train()
    reference, gradient = _step_gradient(
        dataclasses.replace(generator, micro_batch_sequences=0), units, config, ref_cache
    )
    assert float(gradient.abs().max()) > 0
    variants = [dataclasses.replace(generator, micro_batch_sequences=k) for k in (1, 2, 5)]
    generator.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    try:
        assert generator.model.is_activation_checkpointing
        checkpointed = _step_gradient(dataclasses.replace(generator, micro_batch_sequences=2), units, config, ref_cache)
    finally:
        generator.model.activation_checkpointing_disable()
    results = [_step_gradient(v, units, config, ref_cache) for v in variants] + [checkpointed]
    for name, (metrics, other) in zip(["micro 1", "micro 2", "micro 5", "checkpointed, micro 2"], results, strict=True):
        difference = float((other - gradient).abs().max())
        losses = f"loss {metrics['loss']:.8f} vs {reference['loss']:.8f}"
        print(f"{kind} {name}: {losses}, max gradient difference {difference:.1e}")
        assert abs(metrics["loss"] - reference["loss"]) < 1e-6 and difference < 1e-6
        if kind == "groups":
            assert abs(metrics["clip_fraction"] - reference["clip_fraction"]) < 1e-9


def test_bf16_autocast_and_the_training_fields_reach_the_generator(spogw_cache, collected) -> None:  # type: ignore[no-untyped-def]
    """generator.training is wired: micro-batches, checkpointing and autocast from the experiment
    file reach the loaded generator; bf16 autocast changes the forward (it ran) by bf16's rounding."""
    from spogw.harness.config import GeneratorConfig, TrainingConfig
    from spogw.harness.policy.model import load_generator

    training = TrainingConfig(micro_batch_sequences=3, gradient_checkpointing=True, autocast="bf16")
    free = {"tiny_recipe": "test", "decoding": "free"}  # the collected rollouts were sampled free
    generator = load_generator(GeneratorConfig(**free, training=training), device="cpu", progress=False)
    assert generator.micro_batch_sequences == 3 and generator.autocast
    assert generator.model.is_activation_checkpointing
    default = load_generator(GeneratorConfig(**free), device="cpu", progress=False)
    assert not default.autocast and default.micro_batch_sequences == 0 and not default.model.is_activation_checkpointing
    generator.model.eval()
    default.model.eval()
    with torch.no_grad():
        mixed, mask = generator.completion_logprobs(collected[:4], 1.0)
        full, _ = default.completion_logprobs(collected[:4], 1.0)
    difference = float(((mixed - full).abs() * mask).max())
    print(f"bf16 autocast vs float32 log-probs: max difference {difference:.2e}")
    assert 0 < difference < 0.5 and mixed.dtype == torch.float32


def test_iteration_zero_twins_share_rollouts_that_equal_collecting_them(small_generator, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An offline twin's iteration-0 rollouts are copied, not sampled or executed again, and the copy
    equals what collecting them would have given (everything but the method name and the timing; the
    sampler's log-probs up to the float rounding of a different batch); samples the twin lacks (a
    larger m) and its infra_error rows are collected."""
    import dataclasses as dc

    from spogw.harness import collect as collect_module

    items = list(GSM.items[5:8])

    def gather(method: str, m: int, store: MemoryStore, shared: dict[str, MemoryStore] | None = None) -> list[Rollout]:
        async def go() -> list[Rollout]:
            engine = WorkflowEngine(SimExecutor("medium"), concurrency=2, timeout_s=30)
            try:
                spec = CollectSpec("t", method, 0, 0, num_samples=m, repeats=2)
                params = SamplingParams(1.0, 1.0, 64)
                return await collect_questions(
                    small_generator, engine, GSM, items, spec, params, store, shared_with=shared
                )
            finally:
                await engine.close()

        return run(go())

    def comparable(rollouts: list[Rollout]) -> list[Rollout]:
        return [dc.replace(r, method="", wall_s=0.0) for r in sorted(rollouts, key=lambda r: r.key)]

    store = MemoryStore()
    donor = gather("spogw", 4, store)
    broken = dc.replace(donor[0], status="infra_error", score=None)  # an executor outage in the donor's run
    store._rows[broken.key] = broken
    sampled: list[int] = []
    real_sample = small_generator.sample
    monkeypatch.setattr(
        small_generator,
        "sample",
        lambda prompts, keys, params: sampled.append(len(prompts)) or real_sample(prompts, keys, params),
    )
    twin = gather("grpo_kl", 5, store, shared={"spogw": store})
    assert sampled == [len(items) + 1], "only the donor's infra_error row and the samples it lacks are drawn"
    assert len(twin) == 5 * len(items) and {r.method for r in twin} == {"grpo_kl"}
    alone = gather("dpo", 5, MemoryStore())
    assert [dc.replace(r, old_logp=()) for r in comparable(twin)] == [
        dc.replace(r, old_logp=()) for r in comparable(alone)
    ]
    for shared, own in zip(comparable(twin), comparable(alone), strict=True):  # batches differ: float rounding only
        assert shared.old_logp == pytest.approx(own.old_logp, abs=1e-5)
    assert (
        collect_module.copy_twin_rollouts(
            store, CollectSpec("t", "grpo_kl", 0, 0, 5, 2), [i.id for i in items], {"spogw": store}
        )
        == 0
    )


def test_collection_twins_are_the_offline_methods_with_the_same_executor_and_sampling() -> None:
    from spogw.harness.config import load_experiment
    from spogw.harness.plan import collection_twins, untrained_twins

    config = load_experiment("experiments/all_methods.yaml")
    twins = collection_twins(config)
    assert set(twins["spogw"]) == {"grpo_kl", "dpo", "score_dpo"}
    assert "grpo_online" not in twins and "grpo_online" in untrained_twins(config)["spogw"]
    assert "cot_sc" not in twins


def test_evaluation_runs_and_is_announced_only_at_the_evaluated_iterations(small_generator) -> None:  # type: ignore[no-untyped-def]
    """evaluation.every_iteration: false evaluates the untrained and the final policy only, and the
    progress lines announce no evaluation that does not happen."""
    config = GRPOConfig(num_samples=3, group_size=3, max_groups=1, learning_rate=1e-4, questions_per_step=1)
    evaluated: list[int] = []
    phases: list[tuple[int, str]] = []

    async def evaluate(iteration: int) -> None:
        evaluated.append(iteration)

    async def go(only: frozenset[int] | None) -> None:
        engine = WorkflowEngine(SimExecutor("medium"), concurrency=2, timeout_s=30)
        run_spec = TrainingRun(
            experiment="t", label="spogw", config=config, tasks=[Task(GSM, list(GSM.items[8:9]))], seed=0,
            iterations=3, repeats=1, params=SamplingParams(1.0, 1.0, 48), final_collection=False,
            evaluated_iterations=only,
        )  # fmt: skip
        try:
            await run_method(
                small_generator,
                engine,
                MemoryStore(),
                run_spec,
                evaluate=evaluate,
                on_phase=lambda k, p: phases.append((k, p)),
            )
        finally:
            await engine.close()

    run(go(frozenset({0, 3})))
    assert evaluated == [0, 3] and [k for k, p in phases if p == "evaluate"] == [0, 3]
    evaluated.clear()
    run(go(None))
    assert evaluated == [0, 1, 2, 3]


def test_a_step_over_several_questions_is_the_mean_of_their_own_losses(no_dropout_generator, collected) -> None:  # type: ignore[no-untyped-def]
    """group_step forwards all its questions' sequences together; its loss, gradient and metrics
    equal those of the textbook scheme: each question's own deduplicated loss (grpo_loss on its
    sequences), averaged over the step's questions, within 1e-6."""
    from spogw.methods.losses import POLICY_TERMS, group_coefficients, grpo_loss
    from spogw.methods.steps import build_units

    config = GRPOConfig(num_samples=6, group_size=4, max_groups=15, beta=0.1, questions_per_step=3, max_grad_norm=1e9)
    units = build_units(_varied(collected), config, seed=0, iteration=0)
    assert len(units) == 3 and all(u.groups_kept for u in units)
    ref_cache = {r.key: torch.tensor(r.old_logp) - 0.05 for u in units for r in u.rollouts}
    generator = no_dropout_generator
    generator.model.train()
    metrics, gradient = _step_gradient(generator, units, config, ref_cache)

    params = generator.trainable_parameters()
    for p in params:
        p.grad = None
    loss_sum = policy_sum = kl_sum = 0.0
    clipped = active_tokens = 0.0
    for unit in units:
        lengths = torch.tensor([len(r.completion_ids) for r in unit.rollouts])
        coefficients = group_coefficients(
            unit.groups, unit.advantages, lengths, config.kl, config.aggregation, len(lengths)
        )
        logp, mask = generator.completion_logprobs(unit.rollouts, 1.0)
        width = logp.shape[1]
        old = torch.zeros_like(logp)
        ref = torch.zeros_like(logp)
        for row, r in enumerate(unit.rollouts):
            old[row, : len(r.old_logp)] = torch.tensor(r.old_logp)
            ref[row, : len(r.old_logp)] = ref_cache[r.key]
        assert old.shape[1] == width
        loss, parts = grpo_loss(
            logp,
            old,
            ref,
            mask,
            coefficients,
            config.beta,
            config.eps_low,
            config.eps_high,
            POLICY_TERMS.get(config.policy_term),
        )
        (loss / len(units)).backward()
        loss_sum += loss.item() / len(units)
        policy_sum += float(parts["policy_term"]) / len(units)
        kl_sum += float(parts["kl_term"]) / len(units)
        clipped += float(parts["clipped_tokens"])
        active_tokens += float(parts["active_tokens"])
    textbook = torch.cat([p.grad.reshape(-1) for p in params])
    assert float(textbook.abs().max()) > 0
    assert float((gradient - textbook).abs().max()) < 1e-6
    assert metrics["loss"] == pytest.approx(loss_sum, abs=1e-6)
    assert metrics["policy_term"] == pytest.approx(policy_sum, abs=1e-6)
    assert metrics["kl_term"] == pytest.approx(kl_sum, abs=1e-6)
    assert metrics["clip_fraction"] == pytest.approx(clipped / max(active_tokens, 1.0), abs=1e-9)


def test_a_collection_killed_between_slices_resumes_with_the_same_batches(small_generator, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Questions are collected in fixed slices (here 2 questions x 4 samples, then 1 x 4), each
    written in one transaction: a collection that dies after its first write and is run again draws
    the remaining slice exactly as an uninterrupted collection does (every field but wall time, bit
    for bit)."""
    from spogw.harness import collect as collect_module

    monkeypatch.setattr(collect_module, "SEQUENCES_PER_BATCH", 8)
    items = list(GSM.items[9:12])
    spec = CollectSpec("t", "spogw", 0, 0, num_samples=4, repeats=1)

    class Killed(Exception):
        pass

    class DiesAfterFirstWrite(MemoryStore):
        writes = 0

        def put(self, rollouts: list[Rollout]) -> None:
            if self.writes == 1:
                raise Killed
            self.writes += 1
            super().put(rollouts)

    def gather(store: MemoryStore) -> list[Rollout]:
        async def go() -> list[Rollout]:
            engine = WorkflowEngine(SimExecutor("medium"), concurrency=2, timeout_s=30)
            try:
                return await collect_questions(
                    small_generator, engine, GSM, items, spec, SamplingParams(1.0, 1.0, 64), store
                )
            finally:
                await engine.close()

        return run(go())

    uninterrupted = gather(MemoryStore())
    dying = DiesAfterFirstWrite()
    with pytest.raises(Killed):
        gather(dying)
    # the slices run pipelined and each is written when its runs end: the first written may be either
    written = Counter(r.query_id for r in dying.get("t", "spogw", 0, 0))
    slices = [{item.id: 4 for item in items[:2]}, {items[2].id: 4}]
    assert written in slices, f"one slice (2 questions x 4, or the last question x 4) was written whole: {written}"
    dying.writes = -10  # the re-run: no more deaths
    resumed = gather(dying)
    assert [dataclasses.replace(r, wall_s=0.0) for r in resumed] == [
        dataclasses.replace(r, wall_s=0.0) for r in uninterrupted
    ]
