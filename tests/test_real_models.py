"""What real instruct models need: chat-template prompts with a completion cue, every eos id as a
stop (nothing after a stop is kept), grammar decoding after the cue, executor-slowness timeouts
that are not the workflow's fault, the torch thread count, and reports that name the models."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from spogw.harness.benchmarks.gsm_synth import generate
from spogw.harness.executors.base import CallInfo, Completion
from spogw.harness.policy.prompts import COMPLETION_CUE, build_prompt, prompt_domain, template_id
from spogw.harness.policy.sampling import SamplingParams, sample_hf
from spogw.harness.workflows.engine import RunStatus, WorkflowEngine
from tests.conftest import REPO, run

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class _ChatTokenizer:
    """The smallest tokenizer with a chat template (apply_chat_template renders ChatML)."""

    chat_template = CHATML

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


# ----------------------------------------------------------------------------------------------
# Prompts


def test_a_chat_prompt_is_the_models_chat_template_then_the_cue() -> None:
    prompt = build_prompt("math", "Ava has 3 apples. How many?", "chat", tokenizer=_ChatTokenizer())
    assert prompt.startswith("<|im_start|>user\nYou design an agentic workflow that solves a math word problem.")
    assert prompt.endswith(f"Ava has 3 apples. How many?<|im_end|>\n<|im_start|>assistant\n{COMPLETION_CUE}")
    assert "asyncio.gather" in prompt and "must come" in prompt  # v2 says what is allowed
    assert prompt_domain(prompt) == "math"
    assert template_id("chat") == "chat-v2" and template_id("compact") == "compact-v1"


def test_a_base_model_prompt_ends_on_the_cue_and_chat_needs_a_template() -> None:
    full = build_prompt("code", "def f():\n    pass", "full")
    assert full.endswith(f"pass\n\n{COMPLETION_CUE}") and prompt_domain(full) == "code"
    with pytest.raises(ValueError, match="chat template"):
        build_prompt("qa", "Q?", "chat", tokenizer=None)


def test_prompt_style_follows_the_tokenizer_and_the_config() -> None:
    from spogw.harness.config import GeneratorConfig
    from spogw.harness.policy.model import prompt_style

    plain = type("Plain", (), {"chat_template": None})()
    assert prompt_style(GeneratorConfig(name="smol"), _ChatTokenizer()) == "chat"
    assert prompt_style(GeneratorConfig(name="smol"), plain) == "full"
    assert prompt_style(GeneratorConfig(name="smol", prompt="completion"), _ChatTokenizer()) == "full"
    with pytest.raises(ValueError, match="no chat template"):
        prompt_style(GeneratorConfig(name="hf", model="m", prompt="chat"), plain)
    with pytest.raises(ValueError, match="compact prompt"):
        GeneratorConfig(name="tiny", prompt="chat")


# ----------------------------------------------------------------------------------------------
# Stop tokens: every eos id of the generation config; nothing after a stop


class _ScriptedLM(torch.nn.Module):
    """A causal LM stand-in that emits a fixed script of tokens (one-hot logits), whatever the
    prompt: enough for the decode loop's stopping logic."""

    def __init__(self, script: list[int], vocab: int = 16) -> None:
        super().__init__()
        self.script, self.vocab = script, vocab
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = type("GenerationConfig", (), {"eos_token_id": [3, 5]})()

    def forward(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None,
                past_key_values: Any = None, use_cache: Any = None, logits_to_keep: Any = None) -> Any:  # fmt: skip
        generated = attention_mask.shape[1] - self.prompt_width
        token = self.script[min(generated, len(self.script) - 1)]
        logits = torch.full((input_ids.shape[0], input_ids.shape[1], self.vocab), -30.0)
        logits[:, -1, token] = 30.0
        return type("Output", (), {"logits": logits})()


class _Tokenizer:
    pad_token_id = 0
    eos_token_id = 3

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [1] * len(text)}

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        return " ".join(str(i) for i in ids)


def test_every_eos_id_of_the_generation_config_stops_and_nothing_after_it_is_kept() -> None:
    from spogw.harness.policy.model import stop_token_ids

    model = _ScriptedLM([7, 8, 5, 9, 10, 11])  # 5 is the second eos id (Qwen2's <|endoftext|>); 9... come after
    model.prompt_width = 2
    stops = stop_token_ids(model, _Tokenizer())
    assert stops == (3, 5)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=6, stop=())
    (sample,) = sample_hf(model, _Tokenizer(), ["ab"], [(0, 0, "q", 0)], params, stop_ids=stops)
    assert sample.completion_ids == (7, 8, 5) and sample.finish == "eos"
    (unaware,) = sample_hf(model, _Tokenizer(), ["ab"], [(0, 0, "q", 0)], params)  # the tokenizer's eos only
    assert unaware.completion_ids == (7, 8, 5, 9, 10, 11)  # what happened before: a second "document"


def test_grammar_decoding_after_the_cue_writes_only_grammar_workflows(small_generator) -> None:  # type: ignore[no-untyped-def]
    """A prompt that ends on <graph> walks the trie of the workflows without their opening tag."""
    from spogw.harness.workflows.extract import extract_workflow
    from spogw.harness.workflows.grammar import all_structures, render
    from spogw.harness.workflows.validate import validate_workflow

    generator = dataclasses.replace(small_generator, prompt_style="full")
    assert generator.constraint is None
    from spogw.harness.policy.constraint import GrammarConstraint

    constrained = dataclasses.replace(generator, constraint=GrammarConstraint(generator.tokenizer))
    prompt = constrained.prompt("math", "Ava has 3 apples and buys 4 more. How many?")
    assert prompt.endswith(COMPLETION_CUE)
    samples = constrained.sample([prompt] * 3, [(0, 0, "q", k) for k in range(3)], SamplingParams(1.0, 1.0, 400))
    grammar = {render(s).strip() for s in all_structures("math")}
    for sample in samples:
        assert not sample.text.startswith("<graph>")
        source = extract_workflow(sample.text)
        assert source is not None and source.strip() in grammar
        validate_workflow(source)


# ----------------------------------------------------------------------------------------------
# Timeouts: waiting on a slow executor is not the workflow's fault


class _SlowExecutor:
    name, simulated = "slow", False

    def __init__(self, delay_s: float, reply: str = "The answer is \\boxed{110}.") -> None:
        self.delay_s, self.reply = delay_s, reply

    def describe(self) -> str:
        return "slow stub"

    async def complete(self, prompt: str, info: CallInfo) -> Completion:
        await asyncio.sleep(self.delay_s)
        return Completion(self.reply, 10, 10)

    async def close(self) -> None:
        return None


COT = (
    "class Workflow:\n    def __init__(self, llm, problem):\n        self.problem = problem\n"
    "        self.custom = operator.Custom(llm)\n\n    async def run_workflow(self):\n"
    '        result = await self.custom(input=self.problem, instruction="Solve step by step.")\n'
    '        return result["response"]\n'
)
PROGRAMMER = (
    COT.replace("operator.Custom(llm)", "operator.Programmer(llm)")
    .replace('self.custom(input=self.problem, instruction="Solve step by step.")', "self.custom(problem=self.problem)")
    .replace('result["response"]', 'result["output"]')
)


def _run(executor: Any, source: str, timeout_s: float) -> Any:
    async def go() -> Any:
        engine = WorkflowEngine(executor, concurrency=1, timeout_s=timeout_s)
        try:
            return await engine.run(source, generate(3)[2], 0)
        finally:
            await engine.close()

    return run(go())


def test_a_run_that_times_out_waiting_on_the_executor_is_infra_error() -> None:
    outcome = _run(_SlowExecutor(delay_s=10.0), COT, timeout_s=1.0)
    assert outcome.status is RunStatus.INFRA_ERROR and outcome.reason.startswith("executor_timeout")
    assert _run(_SlowExecutor(delay_s=0.0), COT, timeout_s=5.0).status is RunStatus.OK


def test_a_run_that_times_out_on_its_own_work_stays_a_timeout() -> None:
    """The executor answers at once; the program it wrote sleeps in the sandbox past the run's limit."""
    sleeper = "```python\nimport time\ndef solve():\n    time.sleep(30)\n    return 1\n```"
    outcome = _run(_SlowExecutor(delay_s=0.0, reply=sleeper), PROGRAMMER, timeout_s=2.0)
    assert outcome.status is RunStatus.TIMEOUT


def test_eval_exposes_the_call_timeout_and_refuses_nonsense(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "spogw.harness.cli", "eval", "--benchmark", "gsm_synth", "--workflow", "cot"]
    result = subprocess.run([*command, "--call-timeout-s", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--call-timeout-s" in result.stderr
    help_text = subprocess.run([*command[:4], "--help"], cwd=REPO, capture_output=True, text=True, timeout=120).stdout
    assert "--call-timeout-s" in help_text and "--threads" in help_text and "--answer-grounding" in help_text


# ----------------------------------------------------------------------------------------------
# torch's thread count


def test_the_harness_sets_torchs_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from spogw.harness.torch_threads import ENV, apply_torch_threads, torch_threads, usable_cores

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(ENV, "1")
        assert apply_torch_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv(ENV)
        assert torch_threads() == max(1, usable_cores() // 2)
        monkeypatch.setenv(ENV, "zero")
        with pytest.raises(ValueError, match=ENV):
            torch_threads()
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# Reports say which models ran and when nothing could be learned


def test_learning_signal_warnings_name_the_method_and_the_cause() -> None:
    from spogw.reports.health import learning_signal_warnings

    rollouts = pd.DataFrame(
        {
            "method": ["a"] * 3 + ["b"] * 3,
            "seed": [0] * 6,
            "iteration": [0] * 6,
            "query_id": ["q"] * 6,
            "status": ["invalid"] * 3 + ["ok", "ok", "invalid"],
            "score": [0.0, 0.0, 0.0, 1.0, 0.5, 0.0],
        }
    )
    iterations = pd.DataFrame(
        {"method": ["a", "a", "b", "b"], "seed": [0] * 4, "iteration": [0, 1, 0, 1], "steps": [0, 0, 2, 0]}
    )
    lines = learning_signal_warnings(rollouts, iterations, 1)
    assert len(lines) == 1 and "No learning signal: a" in lines[0] and "3 invalid" in lines[0]
    same = rollouts.assign(status="ok", score=0.5)
    lines = learning_signal_warnings(same, iterations.assign(steps=1), 1)
    assert len(lines) == 2 and all("scored the same" in line for line in lines)
    spread = rollouts.assign(status="ok", score=[0.0, 1.0, 0.0, 1.0, 0.5, 0.0])
    lines = learning_signal_warnings(spread, iterations, 1)
    assert len(lines) == 1 and "0 optimizer steps" in lines[0] and "No learning signal: a" in lines[0]
    assert learning_signal_warnings(spread, iterations.assign(steps=1), 1) == []


def test_the_console_notice_names_the_first_cause() -> None:
    from spogw.harness.cell_work import no_update_notice
    from spogw.harness.train import IterationSummary

    failed = IterationSummary(0, 0.0, 8, [], valid=0, score_spread=False)
    assert "none of its 8 sampled workflows ran to an answer" in no_update_notice("spogw", 1, failed)
    flat = IterationSummary(0, 0.5, 8, [{"updated": 1.0}], valid=8, score_spread=False)
    assert "scored the same" in no_update_notice("spogw", 1, flat)
    filtered = IterationSummary(2, 0.5, 8, [{"updated": 0.0}], valid=8, score_spread=True)
    assert filtered.updates == 0
    notice = no_update_notice("spogw", 1, filtered)
    assert notice.startswith("NO LEARNING SIGNAL: spogw seed 1 iteration 2:") and "survived curation" in notice
