"""Answer scorers shared by the real benchmarks: math equivalence, token F1.

- GSM8K (and gsm_synth): the last number of the answer equals the reference (1,000 is 1000).
- MATH: math-verify parses the reference solution's last \\boxed{} and the answer (LaTeX or plain
  expression) into sympy and compares them (\\frac{1}{2} equals 0.5; 1,000 equals 1000).
- HotpotQA / DROP: SQuAD-style token F1 after normalisation (lower case, punctuation and the
  articles a/an/the removed, whitespace collapsed); DROP takes the maximum over its references.
"""

from __future__ import annotations

import re
import string
import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from harness.workflows.answers import last_boxed, last_number

if TYPE_CHECKING:
    from harness.benchmarks.base import Item
    from harness.workflows.sandbox import Sandbox

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD/HotpotQA normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall of the normalised texts (0 when either is empty,
    1 when both are)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def max_token_f1(prediction: str, references: Iterable[str]) -> float:
    """The best token F1 over several acceptable references (DROP)."""
    return max((token_f1(prediction, reference) for reference in references), default=0.0)


def _timeout() -> int | None:
    # math-verify's timeouts use SIGALRM, which only the main thread may set
    return 5 if threading.current_thread() is threading.main_thread() else None


def math_equivalent(answer: str, reference_solution: str) -> bool:
    """Whether ``answer`` states the same mathematical object as the reference's final answer
    (its last \\boxed{}, or the whole reference if it has none), by math-verify."""
    from math_verify import parse, verify

    boxed = last_boxed(reference_solution)
    gold = parse(f"$\\boxed{{{boxed}}}$" if boxed is not None else reference_solution, parsing_timeout=_timeout())
    boxed_answer = last_boxed(answer)
    target = parse(f"$\\boxed{{{boxed_answer}}}$" if boxed_answer is not None else answer, parsing_timeout=_timeout())
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
