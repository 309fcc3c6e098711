"""Answer scorers shared by the real benchmarks, each matching the evaluator papers report.

- GSM8K (and gsm_synth): the last number of the answer equals the reference (1,000 is 1000), as
  ScoreFlow and AFlow grade it.
- MATH: math-verify parses the whole answer and the reference answer and compares them
  (\\frac{1}{2} equals 0.5; 1,000 equals 1000; several \\boxed{} in one answer are read as a set).
- HotpotQA: the official hotpot_evaluate_v1.py answer F1: SQuAD normalisation (lower case,
  punctuation and the articles a/an/the removed, whitespace collapsed), token F1 over the token
  multisets, and 0 when exactly one side is yes/no/noanswer and they differ (also 0 when either
  side normalises to nothing).
- DROP: the official drop_eval.py F1: text split on spaces and hyphens, each token normalised
  alone (numbers kept whole and compared as numbers: 2 = 2.0, 3.5 = 3.50, 35 != 3.5), token
  *sets*, F1 0 when the gold has numbers and none is predicted, multi-span answers aligned by an
  optimal one-to-one matching, the per-answer F1 rounded to 2 decimals, the maximum over the
  acceptable answers.

tests/test_grader_agreement.py checks each against its reference on a corpus of model-style answers
(docs/benchmarks.md gives the counts).
"""

from __future__ import annotations

import re
import string
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from spogw.harness.workflows.answers import last_number

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Item
    from spogw.harness.workflows.sandbox import Sandbox

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_HOTPOTQA_EXCLUSIVE = frozenset({"yes", "no", "noanswer"})


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD/HotpotQA normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def hotpotqa_f1(prediction: str, reference: str) -> float:
    """HotpotQA's official answer F1 of ``prediction`` against ``reference`` (in [0, 1])."""
    predicted, expected = normalize_answer(prediction), normalize_answer(reference)
    if predicted != expected and (predicted in _HOTPOTQA_EXCLUSIVE or expected in _HOTPOTQA_EXCLUSIVE):
        return 0.0
    return token_f1(predicted.split(), expected.split())


def token_f1(predicted: Sequence[str], expected: Sequence[str]) -> float:
    """Harmonic mean of precision and recall of two token multisets; 0 without a common token."""
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def drop_tokens(span: str) -> frozenset[str]:
    """The DROP token set of one answer span: split on spaces and hyphens, then each piece lower
    cased, stripped of punctuation unless it is a number, written as a float if it is one
    (``str(float(x))``: 2 -> 2.0, 3.50 -> 3.5, 1,000 -> 1000.0), articles removed."""
    tokens: list[str] = []
    for piece in re.split("[ -]", span):
        piece = piece.lower()
        if not _is_number(piece):
            piece = "".join(ch for ch in piece if ch not in _PUNCTUATION)
        if _is_number(piece):
            piece = str(float(piece))
        tokens.extend(_ARTICLES.sub(" ", piece).split())
    return frozenset(tokens)


def _set_f1(predicted: frozenset[str], gold: frozenset[str]) -> float:
    overlap = len(predicted & gold)
    precision = overlap / len(predicted) if predicted else 1.0
    recall = overlap / len(gold) if gold else 1.0
    return 0.0 if precision == recall == 0.0 else 2 * precision * recall / (precision + recall)


def _numbers_agree(predicted: frozenset[str], gold: frozenset[str]) -> bool:
    """DROP scores a span 0 when its gold holds numbers and the prediction holds none of them."""
    gold_numbers = {token for token in gold if _is_number(token)}
    return not gold_numbers or bool(gold_numbers & {token for token in predicted if _is_number(token)})


def drop_f1(prediction: str | Sequence[str], gold: str | Sequence[str]) -> float:
    """DROP's official F1 of one prediction against one gold answer (each a span or a list of
    spans), rounded to 2 decimals as drop_eval.py rounds it."""
    from scipy.optimize import linear_sum_assignment

    predicted = [drop_tokens(s) for s in ([prediction] if isinstance(prediction, str) else prediction)]
    golden = [drop_tokens(s) for s in ([gold] if isinstance(gold, str) else gold)]
    scores = np.array([[_set_f1(p, g) if _numbers_agree(p, g) else 0.0 for p in predicted] for g in golden])
    rows, columns = linear_sum_assignment(-scores)
    best = np.zeros(max(len(golden), len(predicted)))
    for row, column in zip(rows, columns, strict=True):
        best[row] = max(best[row], scores[row, column])
    return float(np.round(np.mean(best), 2))


def drop_score(prediction: str, answers: Iterable[str | Sequence[str]]) -> float:
    """The best DROP F1 over the acceptable answers (answers whose first span is blank are skipped,
    as the official evaluation skips them)."""
    scores = [
        drop_f1(prediction, answer)
        for answer in answers
        if (answer if isinstance(answer, str) else (answer[0] if answer else "")).strip()
    ]
    return max(scores, default=0.0)


def _timeout() -> int | None:
    # math-verify's timeouts use SIGALRM, which only the main thread may set
    return 5 if threading.current_thread() is threading.main_thread() else None


def math_equivalent(answer: str, reference: str) -> bool:
    """Whether ``answer`` (the whole reply: math-verify finds its boxed or final expressions)
    states the same mathematical object as ``reference`` (an answer in LaTeX, with or without
    \\boxed{}), by math-verify."""
    from math_verify import parse, verify

    gold = parse(reference if "\\boxed" in reference else f"\\boxed{{{reference}}}", parsing_timeout=_timeout())
    target = parse(answer, parsing_timeout=_timeout())
    if not gold or not target:
        return False
    return bool(verify(gold, target, timeout_seconds=_timeout()))


async def score_last_number(item: Item, answer: str, sandbox: Sandbox) -> float:
    """GSM8K scoring: 1.0 if the last number in ``answer`` equals the reference, else 0.0."""
    predicted = last_number(answer)
    reference = float(item.answer)
    if predicted is None:
        return 0.0
    return 1.0 if abs(predicted - reference) <= 1e-6 * max(1.0, abs(reference)) else 0.0
