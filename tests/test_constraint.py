"""Grammar-constrained decoding: the trie holds exactly the grammar's workflows, the sampler never
leaves it, and the trainer's log-probs are the sampler's (same mask, same support)."""

from __future__ import annotations

import dataclasses

import pytest

from spogw.harness.config import GeneratorConfig
from spogw.harness.policy.constraint import ConstraintViolation, GrammarConstraint, masked_log_softmax
from spogw.harness.policy.model import decoding_mode
from spogw.harness.policy.prompts import DOMAINS, GRAPH_CLOSE, GRAPH_OPEN, build_prompt, prompt_domain
from spogw.harness.policy.sampling import SamplingParams, token_logprobs
from spogw.harness.rollouts import Rollout
from spogw.harness.workflows.extract import extract_workflow
from spogw.harness.workflows.grammar import all_structures, render
from spogw.harness.workflows.structure import structure_of
from spogw.harness.workflows.validate import validate_workflow

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def grammar_generator(small_generator):  # type: ignore[no-untyped-def]
    return dataclasses.replace(small_generator, constraint=GrammarConstraint(small_generator.tokenizer))


def completion(structure) -> str:  # type: ignore[no-untyped-def]
    return f"{GRAPH_OPEN}\n{render(structure)}{GRAPH_CLOSE}"


def test_prompt_domain_reads_compact_and_full_prompts() -> None:
    for domain in DOMAINS:
        assert prompt_domain(build_prompt(domain, "Q?", "compact")) == domain
        assert prompt_domain(build_prompt(domain, "Q?", "full")) == domain
    with pytest.raises(ValueError, match="cannot tell the domain"):
        prompt_domain("Write me a poem")


def test_trie_accepts_every_grammar_workflow_and_nothing_else(small_generator) -> None:  # type: ignore[no-untyped-def]
    tokenizer = small_generator.tokenizer
    constraint = GrammarConstraint(tokenizer)
    vocab = len(tokenizer)
    for domain in DOMAINS:
        prompt = build_prompt(domain, "Q?", "compact")
        distinct = {completion(s) for s in all_structures(domain)}
        assert constraint.workflows[domain] == len(distinct)
        for text in distinct:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            mask = constraint.allowed_mask(prompt, ids, vocab)
            assert mask.shape == (len(ids), vocab)
            assert all(mask[i, t] for i, t in enumerate(ids))
            # after the whole workflow only end-of-sequence may follow
            node = constraint.root(prompt)
            for token in ids:
                node = constraint.advance(node, token)
            assert node is not None and node.terminal and constraint.allowed(node) == [tokenizer.eos_token_id]
    # a math workflow is not a code workflow: CustomCodeGenerate is not a math generator
    code_only = next(s for s in all_structures("code") if s.generator == "CustomCodeGenerate")
    ids = tokenizer(completion(code_only), add_special_tokens=False)["input_ids"]
    with pytest.raises(ConstraintViolation, match="not allowed"):
        constraint.allowed_mask(build_prompt("math", "Q?", "compact"), ids, vocab)


def test_first_position_allows_only_the_graph_opening_and_decisions_are_few(small_generator) -> None:  # type: ignore[no-untyped-def]
    tokenizer = small_generator.tokenizer
    constraint = GrammarConstraint(tokenizer)
    prompt = build_prompt("math", "Q?", "compact")
    structure = all_structures("math")[0]
    ids = tokenizer(completion(structure), add_special_tokens=False)["input_ids"]
    mask = constraint.allowed_mask(prompt, ids, len(tokenizer))
    allowed_per_position = mask.sum(-1)
    assert int(allowed_per_position[0]) == 1  # every workflow starts the same way
    assert int(allowed_per_position.max()) > 1  # ... and somewhere the grammar branches
    # most positions are forced: their log-prob is 0 under any policy
    assert int((allowed_per_position == 1).sum()) > len(ids) // 2
    assert 0 < constraint.decisions("math") < sum(len(completion(s)) for s in all_structures("math"))


def test_masked_log_softmax_hand_values() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    allowed = torch.tensor([[True, True, False], [False, False, True]])
    out = masked_log_softmax(logits, allowed)
    # row 0: log softmax over (1, 2): log(e/(e+e^2)) = -log(1+e)
    expected0 = torch.tensor([-torch.log1p(torch.e * torch.ones(())), -torch.log1p(torch.exp(torch.tensor(-1.0)))])
    assert torch.allclose(out[0, :2], expected0)
    assert out[0, 2] == float("-inf")
    assert out[1, 2] == 0.0  # a single allowed token is certain
    assert torch.allclose(masked_log_softmax(logits, None), torch.log_softmax(logits, -1))


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_constrained_samples_are_grammar_workflows_and_logprobs_match(grammar_generator, temperature: float) -> None:  # type: ignore[no-untyped-def]
    """Even the barely-trained test recipe writes only valid workflows under the constraint, and the
    teacher-forced pass with the same mask gives the sampler's log-probs."""
    gen = grammar_generator
    prompts = [gen.prompt("math", "Ben has 7 marbles. How many?"), gen.prompt("code", "def f(x):\n    pass\n")]
    prompts = prompts * 6
    keys = [(3, 0, f"q{i % 2}", i) for i in range(len(prompts))]
    samples = gen.sample(prompts, keys, SamplingParams(temperature, 0.95, 96))
    grammar_code = {domain: {render(s).strip() for s in all_structures(domain)} for domain in ("math", "code")}
    vocab = gen.model.get_output_embeddings().weight.shape[0]
    gen.model.eval()
    worst = 0.0
    with torch.no_grad():
        for prompt, sample in zip(prompts, samples, strict=True):
            source = extract_workflow(sample.text)
            assert source is not None and sample.finish == "stop"
            validate_workflow(source)
            assert source.strip() in grammar_code[prompt_domain(prompt)]
            allowed = gen.constraint.allowed_mask(prompt, sample.completion_ids, vocab)
            forced = token_logprobs(gen.model, sample.prompt_ids, sample.completion_ids, temperature, allowed)
            worst = max(worst, float((forced - torch.tensor(sample.logprobs)).abs().max()))
            assert all(lp <= 0.0 for lp in sample.logprobs)
    print(f"max |sampled - teacher-forced| constrained log-prob: {worst:.2e}")
    assert worst < 1e-4
    if temperature > 0:
        assert len({structure_of(extract_workflow(s.text) or "") for s in samples}) > 2


def test_trainer_logprobs_use_the_mask_and_forced_tokens_carry_no_gradient(grammar_generator) -> None:  # type: ignore[no-untyped-def]
    from spogw.harness.policy.logprobs import completion_logprobs

    gen = grammar_generator
    prompt = gen.prompt("math", "Ava has 3 apples. How many?")
    samples = gen.sample([prompt] * 3, [(4, 0, "q", k) for k in range(3)], SamplingParams(1.0, 1.0, 96))
    rollouts = [
        Rollout(
            "e",
            "m",
            0,
            0,
            "q",
            k,
            prompt,
            None,
            s.prompt_ids,
            s.completion_ids,
            s.logprobs,
            "ok",
            "",
            0.5,
            (0.5,),
            1,
            1,
            0.0,
        )
        for k, s in enumerate(samples)
    ]
    gen.model.eval()
    logp, mask = completion_logprobs(gen.model, rollouts, 1.0, gen.constraint)
    for row, sample in enumerate(samples):
        assert torch.allclose(logp[row, : len(sample.logprobs)], torch.tensor(sample.logprobs), atol=1e-5)
    vocab = gen.model.get_output_embeddings().weight.shape[0]
    forced = torch.zeros_like(mask, dtype=torch.bool)
    for row, sample in enumerate(samples):
        allowed = gen.constraint.allowed_mask(prompt, sample.completion_ids, vocab)
        forced[row, : len(sample.completion_ids)] = allowed.sum(-1) == 1
    assert bool((logp[forced] == 0).all())
    # the gradient of the forced positions' log-probs is exactly zero
    gradients = torch.autograd.grad(logp[forced].sum(), gen.trainable_parameters(), allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0.0 for g in gradients)
    # free decoding scores the same tokens lower (probability mass goes to tokens the grammar forbids)
    free, _ = completion_logprobs(gen.model, rollouts, 1.0, None)
    assert bool((free[mask.bool()] <= logp[mask.bool()] + 1e-6).all())
    gen.model.train()


def test_a_free_completion_under_the_constraint_is_a_clear_error(grammar_generator) -> None:  # type: ignore[no-untyped-def]
    gen = grammar_generator
    prompt = gen.prompt("math", "Q?")
    ids = gen.tokenizer("<graph>\nimport os\n</graph>", add_special_tokens=False)["input_ids"]
    with pytest.raises(ConstraintViolation, match="decoding 'free'"):
        gen.constraint.allowed_mask(prompt, ids, len(gen.tokenizer))


def test_decoding_mode_defaults_to_grammar_for_tiny_only() -> None:
    assert decoding_mode(GeneratorConfig(name="tiny")) == "grammar"
    assert decoding_mode(GeneratorConfig(name="tiny", decoding="free")) == "free"
    assert decoding_mode(GeneratorConfig(name="hf", model="x")) == "free"
    assert decoding_mode(GeneratorConfig(name="hf", model="x", decoding="grammar")) == "grammar"
    with pytest.raises(ValueError, match="backend 'hf'"):
        decoding_mode(GeneratorConfig(name="tiny", backend="vllm_server", base_url="http://x/v1"))
