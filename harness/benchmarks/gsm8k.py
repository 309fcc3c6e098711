"""GSM8K: grade-school word problems, scored by the last number of the answer.

Upstream format (the JSONL ScoreFlow/AFlow read, and the hub dataset `openai/gsm8k`, config `main`):
`question`, `answer` with the reasoning and the final number after `####`. GSM8K has no ids: an
item's id is `gsm8k-<row number>` of the file it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spogw.harness.benchmarks.base import Benchmark, Item
from spogw.harness.benchmarks.data import DEFAULT_SOURCE, Source, field, rows_benchmark
from spogw.harness.benchmarks.scoring import score_last_number
from spogw.harness.errors import InputError
from spogw.harness.workflows.answers import format_number, last_number


def final_number(answer: str) -> str | None:
    """The number after GSM8K's `####` marker (commas removed), or the last number if no marker."""
    tail = answer.rsplit("####", 1)[-1]
    number = last_number(tail)
    return None if number is None else format_number(number)


def _item(row: Mapping[str, Any], where: str, number: int) -> Item:
    solution = field(row, "answer", where, number)
    answer = final_number(solution)
    if answer is None:
        raise InputError(f"{where}: row {number}: field 'answer' has no final number")
    return Item(
        id=str(row.get("id") or f"gsm8k-{number}"),
        domain="math",
        question=field(row, "question", where, number),
        answer=answer,
        meta={"solution": solution},
    )


def load_gsm8k(source: Source = DEFAULT_SOURCE) -> Benchmark:
    return rows_benchmark("gsm8k", "math", score_last_number, _item, source)
