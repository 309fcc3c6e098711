"""Question answering over given passages: HotpotQA (token F1) and DROP (max token F1).

HotpotQA upstream format (ScoreFlow/AFlow's JSONL): `question`, `answer`, `context` as a list of
[title, [sentences]]; the hub dataset `hotpotqa/hotpot_qa` (config `distractor`) gives `context` as
{"title": [...], "sentences": [[...]]}, read the same. The passages go into the question the
generator and the operators see.

DROP upstream format: `context` (passage and question together, as AFlow writes it) and `ref_text`
with the acceptable answers separated by `|`; the hub dataset `ucinlp/drop` gives `passage`,
`question` and `answers_spans.spans`, turned into the same two fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spogw.harness.benchmarks.base import Benchmark, Item
from spogw.harness.benchmarks.data import DEFAULT_SOURCE, Source, field, rows_benchmark
from spogw.harness.benchmarks.scoring import drop_score, hotpotqa_f1
from spogw.harness.errors import InputError
from spogw.harness.workflows.answers import qa_answer
from spogw.harness.workflows.sandbox import Sandbox


def _paragraphs(context: Any, where: str, number: int) -> list[tuple[str, str]]:
    """(title, text) pairs from either HotpotQA context layout."""
    if isinstance(context, Mapping):
        titles, sentences = context.get("title"), context.get("sentences")
        if isinstance(titles, list) and isinstance(sentences, list) and len(titles) == len(sentences):
            return [(str(t), "".join(map(str, s))) for t, s in zip(titles, sentences, strict=True)]
    elif isinstance(context, list) and all(isinstance(p, list) and len(p) == 2 for p in context):
        return [(str(title), "".join(map(str, sentences))) for title, sentences in context]
    raise InputError(f"{where}: row {number}: field 'context' is neither [[title, sentences]] nor {{title, sentences}}")


async def score_hotpotqa(item: Item, answer: str, sandbox: Sandbox) -> float:
    """HotpotQA's official answer F1 of the reply's answer (harness.benchmarks.scoring.hotpotqa_f1)."""
    return hotpotqa_f1(qa_answer(answer), item.answer)


async def score_drop(item: Item, answer: str, sandbox: Sandbox) -> float:
    """DROP's official F1 of the reply's answer, the best over the ``|``-separated references."""
    return drop_score(qa_answer(answer), item.answer.split("|"))


def _hotpotqa_item(row: Mapping[str, Any], where: str, number: int) -> Item:
    question = field(row, "question", where, number)
    passages = "\n".join(f"{title}: {text}" for title, text in _paragraphs(row.get("context"), where, number))
    return Item(
        id=str(row.get("_id") or row.get("id") or f"hotpotqa-{number}"),
        domain="qa",
        question=f"Context:\n{passages}\n\nQuestion: {question}",
        answer=field(row, "answer", where, number),
    )


def load_hotpotqa(source: Source = DEFAULT_SOURCE) -> Benchmark:
    return rows_benchmark("hotpotqa", "qa", score_hotpotqa, _hotpotqa_item, source, default_split="validation")


def _drop_fields(row: Mapping[str, Any], where: str, number: int) -> tuple[str, str]:
    if "ref_text" in row:
        return field(row, "context", where, number), field(row, "ref_text", where, number)
    spans = row.get("answers_spans")
    if not isinstance(spans, Mapping) or not spans.get("spans"):
        raise InputError(f"{where}: row {number}: neither 'ref_text' nor 'answers_spans.spans'")
    passage, question = field(row, "passage", where, number), field(row, "question", where, number)
    return f"{passage}\nQuestion: {question}", "|".join(map(str, spans["spans"]))


def _drop_item(row: Mapping[str, Any], where: str, number: int) -> Item:
    context, references = _drop_fields(row, where, number)
    return Item(
        id=str(row.get("id") or row.get("query_id") or f"drop-{number}"),
        domain="qa",
        question=context,
        answer=references,
    )


def load_drop(source: Source = DEFAULT_SOURCE) -> Benchmark:
    return rows_benchmark("drop", "qa", score_drop, _drop_item, source, default_split="validation")
