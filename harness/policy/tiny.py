"""The `tiny` generator preset: a small Qwen2-shaped model built and warmed up on this machine.

It exists so the whole pipeline runs and learns on a laptop CPU; it is not a stand-in for a real
model in reported results. Recipe:

1. a byte-level BPE tokenizer trained with `tokenizers` on compact prompts of the training items
   and on workflows sampled from the operator grammar. The pre-tokenizer does not split on spaces,
   so frequent whole lines of workflow code become single tokens (a workflow is ~30 tokens instead
   of ~220), which is what makes RL on a 2-core CPU take seconds per step;
2. a randomly initialised Qwen2 model of about a million parameters;
3. supervised warm-up on (prompt, grammar workflow) pairs with the structure drawn uniformly, so
   that before any RL the samples are valid and diverse and carry no preference between structures.

The result is cached under a content hash of the recipe (its fields, the grammar and prompt code),
so a second use loads it in about a second. Building prints the validity and diversity figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spogw.harness.console import say
from spogw.harness.errors import InputError

RECIPE_VERSION = 1
"""Bump when the build procedure (tokenizer training, warm-up) changes: it is part of the cache key."""


@dataclass(frozen=True)
class TinyRecipe:
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 1024
    max_prompt_tokens: int = 96
    """Prompts are cut to this many tokens (a question's start is cue enough; padding to long
    HumanEval prompts doubled the warm-up time)."""
    tokenizer_docs: int = 3000
    """Prompt+workflow documents the tokenizer is trained on."""
    warmup_steps: int = 500
    batch_size: int = 32
    learning_rate: float = 3e-3
    domains: tuple[str, ...] = ("math", "code", "qa")
    benchmarks: tuple[str, ...] = ("gsm_synth", "humaneval", "qa_synth")
    """Training-split questions of these benchmarks are the warm-up prompts (test questions are never seen)."""
    seed: int = 0
    eval_samples: int = 64
    """Samples per question for the validity/diversity report."""


TEST_RECIPE = TinyRecipe(
    hidden_size=64,
    intermediate_size=128,
    layers=2,
    heads=2,
    kv_heads=1,
    tokenizer_docs=800,
    warmup_steps=120,
    batch_size=16,
    learning_rate=3e-3,
    eval_samples=16,
)
"""A smaller recipe for fast tests of the build machinery (not for learning experiments)."""


def recipe_hash(recipe: TinyRecipe) -> str:
    """Content hash of what the built model depends on: the recipe's fields, the grammar and prompt
    code that make its data, and RECIPE_VERSION for the build procedure itself."""
    here = Path(__file__).resolve().parents[1]
    sources = [here / "workflows" / "grammar.py", here / "policy" / "prompts.py"]
    payload = json.dumps(dataclasses.asdict(recipe), sort_keys=True) + f"|v{RECIPE_VERSION}|"
    payload += "|".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in sources)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("SPOGW_CACHE", Path.home() / ".cache" / "spogw"))


def tiny_dir(recipe: TinyRecipe) -> Path:
    return cache_root() / "generators" / f"tiny-{recipe_hash(recipe)}"


# ----------------------------------------------------------------------------------------------
# Data


def _training_items(recipe: TinyRecipe) -> list[Any]:
    from spogw.harness.benchmarks import load_benchmark

    items = []
    for name in recipe.benchmarks:
        benchmark = load_benchmark(name)
        items += [i for i in benchmark.split("train", 0.8, seed=0) if i.domain in recipe.domains]
    if not items:
        raise InputError(f"tiny recipe: no training items in {recipe.benchmarks} for domains {recipe.domains}")
    return items


def _example(item: Any, rng: random.Random) -> tuple[str, str]:
    from spogw.harness.policy.prompts import GRAPH_CLOSE, GRAPH_OPEN, build_prompt
    from spogw.harness.workflows.grammar import render, sample_structure

    code = render(sample_structure(item.domain, rng))
    return build_prompt(item.domain, item.question, "compact"), f"{GRAPH_OPEN}\n{code}{GRAPH_CLOSE}"


def train_tokenizer(recipe: TinyRecipe, items: list[Any]) -> Any:
    """A byte-level BPE tokenizer (transformers fast tokenizer) for prompts and workflows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(recipe.seed)
    docs = [
        prompt + completion
        for prompt, completion in (_example(rng.choice(items), rng) for _ in range(recipe.tokenizer_docs))
    ]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=64,
        show_progress=False,
    )
    # lines are the training units: merges never span a newline, so a token is at most one line
    tokenizer.train_from_iterator((line for doc in docs for line in doc.splitlines(keepends=True)), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|pad|>")


def init_model(recipe: TinyRecipe, vocab_size: int, eos_id: int, pad_id: int) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.kv_heads,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=eos_id,
    )
    torch.manual_seed(recipe.seed)
    return Qwen2ForCausalLM(config)


def warm_up(model: Any, tokenizer: Any, recipe: TinyRecipe, items: list[Any], progress: bool = True) -> list[float]:
    """Supervised training on (prompt, grammar workflow) pairs; loss on the completion only."""
    import torch
    from tqdm.auto import tqdm

    rng = random.Random(recipe.seed + 1)
    by_domain = {domain: [i for i in items if i.domain == domain] for domain in recipe.domains}
    by_domain = {domain: pool for domain, pool in by_domain.items() if pool}
    domains = sorted(by_domain)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + _cos(step / recipe.warmup_steps)))
    )
    model.train()
    losses = []
    for step in tqdm(range(recipe.warmup_steps), desc="tiny warm-up", disable=None if progress else True, leave=False):
        # one domain per batch: short math prompts are not padded to the width of code prompts
        pool = by_domain[domains[step % len(domains)]]
        batch = [_example(rng.choice(pool), rng) for _ in range(recipe.batch_size)]
        input_ids, labels, attention = _collate(tokenizer, batch, recipe.max_prompt_tokens)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.detach().item())
    model.eval()
    return losses


def _cos(fraction: float) -> float:
    import math

    return math.cos(math.pi * min(fraction, 1.0))


def _collate(tokenizer: Any, batch: list[tuple[str, str]], max_prompt_tokens: int) -> tuple[Any, Any, Any]:
    import torch

    rows = []
    for prompt, completion in batch:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][:max_prompt_tokens]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt_ids, completion_ids))
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (prompt_ids, completion_ids) in enumerate(rows):
        ids = prompt_ids + completion_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, len(prompt_ids) : len(ids)] = torch.tensor(completion_ids)
        attention[row, : len(ids)] = 1
    return input_ids, labels, attention


# ----------------------------------------------------------------------------------------------
# Quality report


@dataclass(frozen=True)
class QualityReport:
    domain: str
    question_id: str
    samples: int
    valid_fraction: float
    distinct_structures: int


def quality_report(model: Any, tokenizer: Any, recipe: TinyRecipe, items: list[Any]) -> list[QualityReport]:
    """Validity and diversity of samples at temperature 1.0 (top_p 0.95, the sampling default), one
    question per domain."""
    from spogw.harness.policy.prompts import build_prompt
    from spogw.harness.policy.sampling import SamplingParams, sample_hf
    from spogw.harness.workflows.extract import extract_workflow
    from spogw.harness.workflows.structure import structure_of
    from spogw.harness.workflows.validate import WorkflowInvalid, validate_workflow

    reports = []
    for domain in recipe.domains:
        item = next(i for i in items if i.domain == domain)
        prompt = build_prompt(domain, item.question, "compact")
        samples = sample_hf(
            model,
            tokenizer,
            [prompt] * recipe.eval_samples,
            [("tiny-report", item.id, k) for k in range(recipe.eval_samples)],
            SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=160),
            max_prompt_tokens=recipe.max_prompt_tokens,
        )
        valid, structures = 0, set()
        for sample in samples:
            source = extract_workflow(sample.text)
            try:
                validate_workflow(source or "")
            except WorkflowInvalid:
                continue
            valid += 1
            structures.add(structure_of(source or ""))
        reports.append(QualityReport(domain, item.id, len(samples), valid / len(samples), len(structures)))
    return reports


# ----------------------------------------------------------------------------------------------
# Build or load


def build(
    recipe: TinyRecipe | None = None, directory: Path | None = None, progress: bool = True, force: bool = False
) -> Path:
    """The directory of the built tiny generator (model + tokenizer + build.json), building it once.

    Processes that share a cache (a cluster's workers, parallel test workers) build a recipe once:
    the first holds a file lock beside the target while it builds; the others wait for it and then
    load its result instead of spending minutes on the same build.
    """
    from filelock import FileLock

    recipe = recipe or TinyRecipe()
    target = directory or tiny_dir(recipe)
    if (target / "build.json").is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(f"{target.name}.lock"))):
        if (target / "build.json").is_file() and not force:
            return target  # built by another process while this one waited
        say(
            f"building the tiny generator {recipe_hash(recipe)} (first use only: a small model trained on "
            f"{recipe.warmup_steps} warm-up steps; the standard recipe takes about 7 minutes on 2 cores; cached "
            f"in {target})"
        )
        return _build_locked(recipe, target, progress, force)


def _build_locked(recipe: TinyRecipe, target: Path, progress: bool, force: bool) -> Path:
    import torch

    start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    items = _training_items(recipe)
    tokenizer = train_tokenizer(recipe, items)
    model = init_model(recipe, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    losses = warm_up(model, tokenizer, recipe, items, progress=progress)
    reports = quality_report(model, tokenizer, recipe, items)
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    model.save_pretrained(building)
    tokenizer.backend_tokenizer.save(str(building / "tokenizer.json"))
    info = {
        "recipe": dataclasses.asdict(recipe),
        "recipe_hash": recipe_hash(recipe),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(losses[-20:]) / min(20, len(losses)),
        "build_s": round(time.perf_counter() - start, 1),
        "quality": [dataclasses.asdict(r) for r in reports],
    }
    (building / "build.json").write_text(json.dumps(info, indent=2))
    if force:
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(building, target)
    except OSError:  # another process finished the same build first: theirs is as good
        shutil.rmtree(building, ignore_errors=True)
    for report in reports:
        say(
            f"tiny generator {recipe_hash(recipe)} ({info['parameters']:,} parameters, built in "
            f"{info['build_s']} s): {report.domain}: {100 * report.valid_fraction:.0f}% of {report.samples} "
            f"samples valid, {report.distinct_structures} distinct operator structures"
        )
    return target


def build_info(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "build.json").read_text())


def load_tokenizer(directory: Path) -> Any:
    """The tiny tokenizer exactly as trained.

    Not AutoTokenizer: for a qwen2 model it rebuilds a Qwen2Tokenizer whose regex pre-tokenizer
    splits the text differently from the tokenizer the model was trained with.
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), eos_token="<|endoftext|>", pad_token="<|pad|>"
    )


def load(recipe: TinyRecipe | None = None, progress: bool = True) -> tuple[Any, Any, Path]:
    """(model, tokenizer, directory) of the tiny generator, building it on first use."""
    from transformers import AutoModelForCausalLM

    directory = build(recipe, progress=progress)
    model = AutoModelForCausalLM.from_pretrained(directory)
    return model, load_tokenizer(directory), directory
