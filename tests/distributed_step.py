"""One update step of the small test generator, run by each rank of a launcher (torchrun or
`accelerate launch`): tests/test_distributed.py runs it with 1 and with 2 gloo ranks and compares.

    torchrun --nproc_per_node 2 tests/distributed_step.py OUT_DIR groups|pairs [MICRO_BATCH_SEQUENCES [fsdp]]

Every rank builds the same inputs (the same weights, samples drawn with the same keys, the same
scores); rank 0 writes the step's metrics, the summed gradient and the adapter (atomically).

With `fsdp` the base weights are sharded over the ranks after sampling (harness/sharding.py), and
before the step rank 0 computes one rollout's log-probs alone, mirrored by the other ranks through
the launch's sync folder as in a served collection; it writes them for comparison with 1 rank."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(out: Path, kind: str, micro_batch: int, sharding: str) -> None:
    from transformers import AutoModelForCausalLM

    from spogw.harness.config import GeneratorConfig, LoraConfig
    from spogw.harness.distributed import init_from_environment, on_main
    from spogw.harness.policy import tiny
    from spogw.harness.policy.checkpoints import save_adapter
    from spogw.harness.policy.model import Generator, attach_lora
    from spogw.harness.policy.sampling import SamplingParams
    from spogw.harness.rollouts import Rollout
    from spogw.methods.config import GRPOConfig, PairConfig
    from spogw.methods.steps import UPDATES, build_units, reference_cache, unit_rollouts

    ranks = init_from_environment(cpu=True)  # gloo: the model stays on the CPU, also on a GPU machine
    torch.set_num_threads(1)
    directory = tiny.build(tiny.TEST_RECIPE, progress=False)
    base = AutoModelForCausalLM.from_pretrained(directory)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = attach_lora(base, GeneratorConfig(lora=LoraConfig(dropout=0.0)))  # no dropout: exact
    with torch.no_grad():  # a trained-looking adapter: gradients reach A and B
        generator = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    policy = Generator(
        model, tiny.load_tokenizer(directory), "tiny-test", "compact", tiny.TEST_RECIPE.max_prompt_tokens
    )
    questions = ["Tom has 3 apples and buys 4 more. How many now?", "A box holds 12 eggs. How many in 5 boxes?"]
    prompts = [policy.prompt("math", q) for q in questions for _ in range(6)]
    keys = [(0, 0, f"q{i // 6}", i % 6) for i in range(12)]
    samples = policy.sample(prompts, keys, SamplingParams(1.0, 1.0, 24))
    rollouts = [
        Rollout("d", "m", 0, 0, str(key[2]), int(key[3]), prompt, "code", s.prompt_ids, s.completion_ids,
                s.logprobs, "ok", "", score, (score,), 1, 1, 0.0)
        for key, prompt, s, score in zip(keys, prompts, samples, [0.0, 1.0, 0.5, 1.0, 0.0, 0.25] * 2, strict=True)
    ]  # fmt: skip
    config = (
        GRPOConfig(num_samples=6, group_size=4, max_groups=8, min_group_std=0.0, sharpen_t=1, beta=0.1)
        if kind == "groups"
        else PairConfig(num_samples=6, pairs="scoreflow", loss="score_dpo", pairs_per_step=7)
    )
    lone: list[float] = []
    if sharding == "fsdp":
        from spogw.harness.launch import CollectionSync, launch_token
        from spogw.harness.policy.sampling import token_logprobs
        from spogw.harness.sharding import LoneForwards, mirror_forward, shard_base_model

        root = shard_base_model(model, ranks, "cpu")
        policy.collective_forwards = True
        sync = CollectionSync(out / "cell", launch_token(ranks), ranks)
        if ranks.main:
            policy.lone_forwards = LoneForwards(root, ranks, sync.announce_forward)
            with torch.no_grad():  # alone: the other ranks mirror it while they wait for "collected-0-0"
                lone = token_logprobs(model, rollouts[0].prompt_ids, rollouts[0].completion_ids).tolist()
            sync.published(0, 0)
        else:
            sync.mirror = mirror_forward(root)
            sync.wait(0, 0)
    else:
        from spogw.harness.policy.sampling import token_logprobs

        with torch.no_grad():
            lone = token_logprobs(model, rollouts[0].prompt_ids, rollouts[0].completion_ids).tolist()
    units = build_units(rollouts, config, seed=0, iteration=0)
    unique = list({r.key: r for u in units for r in unit_rollouts(u)}.values())
    with policy.all_ranks():
        ref_cache = reference_cache(policy, unique, "base", 1.0)  # each rank its share, gathered
    policy.train_mode()
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2, weight_decay=0.0)
    with policy.all_ranks():
        step = units[: config.units_per_step]
        metrics = UPDATES.get(config.update)(policy, step, config, ref_cache, optimizer, 1.0)
    gradient = torch.cat([p.grad.flatten() for p in policy.trainable_parameters() if p.grad is not None])

    def write() -> None:
        save_adapter(model, out / "adapter", policy.identity)
        torch.save(gradient, out / "gradient.pt")
        sequences = len(unique) if kind == "groups" else len(step)
        (out / "metrics.json").write_text(
            json.dumps(
                {
                    **metrics,
                    "world": ranks.world,
                    "lone": lone,
                    "sequences": sequences,
                    "sharding": sharding,
                    "reference": [float(ref_cache[key].sum()) for key in sorted(ref_cache)],
                }
            )
        )

    on_main(write, ranks)


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        sys.argv[2],
        int(sys.argv[3]) if len(sys.argv) > 3 else 0,
        sys.argv[4] if len(sys.argv) > 4 else "",
    )
