"""MATH (Hendrycks et al.): competition problems with LaTeX answers, scored by math-verify.

Upstream format (ScoreFlow/AFlow's JSONL; hub datasets such as `HuggingFaceH4/MATH-500` or the
per-subject configs of `EleutherAI/hendrycks_math`): `problem`, `solution` whose last \\boxed{}
holds the answer (or an `answer` field); `level`, `type` (or `subject`) and `unique_id` are kept
when present. The score is 1.0 when the workflow's answer is mathematically equivalent to the
reference (harness.benchmarks.scoring).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spogw.harness.benchmarks.base import Benchmark, Item
from spogw.harness.benchmarks.data import DEFAULT_SOURCE, Source, field, rows_benchmark
from spogw.harness.benchmarks.scoring import math_equivalent
from spogw.harness.errors import InputError
from spogw.harness.workflows.answers import last_boxed
from spogw.harness.workflows.sandbox import Sandbox


async def score_math(item: Item, answer: str, sandbox: Sandbox) -> float:
    """1.0 if ``answer`` is equivalent to the item's reference answer (math-verify), else 0.0."""
    return 1.0 if math_equivalent(answer, f"\\boxed{{{item.answer}}}") else 0.0


def _item(row: Mapping[str, Any], where: str, number: int) -> Item:
    solution = field(row, "solution", where, number)
    answer = row.get("answer") if isinstance(row.get("answer"), str) else last_boxed(solution)
    if not answer:
        raise InputError(f"{where}: row {number}: field 'solution' has no \\boxed{{}} answer")
    meta = {key: row[key] for key in ("level", "type", "subject") if key in row}
    return Item(
        id=str(row.get("unique_id") or f"math-{number}"),
        domain="math",
        question=field(row, "problem", where, number),
        answer=answer,
        meta={**meta, "solution": solution},
    )


def load_math(source: Source = DEFAULT_SOURCE) -> Benchmark:
    return rows_benchmark("math", "math", score_math, _item, source)
