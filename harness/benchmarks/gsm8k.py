"""GSM8K: grade-school word problems, scored by the last number of the answer.

Upstream format (the JSONL ScoreFlow/AFlow read, and the hub dataset `openai/gsm8k`, config `main`):
`question`, `answer` with the reasoning and the final number after `####`. GSM8K has no ids: an
item's id is `gsm8k-<row number>` of the file it came from.
"""

from __future__ import annotations

from harness.benchmarks.base import Benchmark, Item
from harness.benchmarks.data import field, read_rows
from harness.benchmarks.scoring import score_last_number
from harness.workflows.answers import format_number, last_number

HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"


def final_number(answer: str) -> str | None:
    """The number after GSM8K's `####` marker (commas removed), or the last number if no marker."""
    tail = answer.rsplit("####", 1)[-1]
    number = last_number(tail)
    return None if number is None else format_number(number)


def load_gsm8k(
    path: str | None = None,
    size: int | None = None,
    hub: str | None = None,
    hub_config: str | None = None,
    hub_split: str = "test",
) -> Benchmark:
    rows, where = read_rows(path, hub, hub_config, hub_split)
    items = []
    for number, row in enumerate(rows, start=1):
        answer = final_number(field(row, "answer", where, number))
        if answer is None:
            raise ValueError(f"{where}: row {number}: field 'answer' has no final number")
        items.append(
            Item(
                id=str(row.get("id") or f"gsm8k-{number}"),
                domain="math",
                question=field(row, "question", where, number),
                answer=answer,
                meta={"solution": row["answer"]},
            )
        )
    items = items[:size] if size is not None else items
    return Benchmark("gsm8k", "math", tuple(items), score_last_number, f"{where} ({len(items)} problems)")
