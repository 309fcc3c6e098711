"""MATH (Hendrycks et al.): competition problems with LaTeX answers, scored by math-verify.

Upstream format (ScoreFlow/AFlow's JSONL; hub datasets such as `HuggingFaceH4/MATH-500` or the
per-subject configs of `EleutherAI/hendrycks_math`): `problem`, `solution` whose last \\boxed{}
holds the answer; `level`, `type` (or `subject`) and `unique_id` are kept when present. The score is
1.0 when the workflow's answer is mathematically equivalent to the reference (harness.benchmarks.scoring).
"""

from __future__ import annotations

from harness.benchmarks.base import Benchmark, Item
from harness.benchmarks.data import field, read_rows
from harness.benchmarks.scoring import math_equivalent
from harness.workflows.answers import last_boxed
from harness.workflows.sandbox import Sandbox

HUB_ID = "HuggingFaceH4/MATH-500"


async def score_math(item: Item, answer: str, sandbox: Sandbox) -> float:
    """1.0 if ``answer`` is equivalent to the item's reference answer (math-verify), else 0.0."""
    return 1.0 if math_equivalent(answer, f"\\boxed{{{item.answer}}}") else 0.0


def load_math(
    path: str | None = None,
    size: int | None = None,
    hub: str | None = None,
    hub_config: str | None = None,
    hub_split: str = "test",
) -> Benchmark:
    rows, where = read_rows(path, hub, hub_config, hub_split)
    items = []
    for number, row in enumerate(rows, start=1):
        solution = field(row, "solution", where, number)
        answer = row.get("answer") if isinstance(row.get("answer"), str) else last_boxed(solution)
        if not answer:
            raise ValueError(f"{where}: row {number}: field 'solution' has no \\boxed{{}} answer")
        meta = {key: row[key] for key in ("level", "type", "subject") if key in row}
        items.append(
            Item(
                id=str(row.get("unique_id") or f"math-{number}"),
                domain="math",
                question=field(row, "problem", where, number),
                answer=answer,
                meta={**meta, "solution": solution},
            )
        )
    items = items[:size] if size is not None else items
    return Benchmark("math", "math", tuple(items), score_math, f"{where} ({len(items)} problems)")
