"""Whether a workflow's answer came from the executor: no reward without the executor.

In collection each workflow runs only on its own question, so a workflow that computes the
question's arithmetic in Python (``return str(48 / 2 + 48)``), or that copies the question's
numbers or words into its prompts, can score without the executor doing the task: reinforcement
learning finds such workflows. A run is ``ungrounded`` (scored 0, never rewarded, counted in Run
health) when

- its code embeds the question's specific numbers (two or more significant digits, e.g. ``48``,
  ``3.5``) as literals, or copies six or more consecutive words of the question into a string; or
- no executor call was made, or the graded part of its answer (the final number or box for math,
  the function for code, the short answer for QA) appears in no executor reply and no output of a
  program the executor wrote (mode ``contained``); mode ``verbatim`` asks the whole returned
  answer to appear there, so no text assembled by the workflow around it.

The check can only be made stricter (``executor.answer_grounding``), never turned off.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Sequence
from typing import Literal

from spogw.harness.workflows.answers import extract

Grounding = Literal["contained", "verbatim"]
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"[a-z0-9']+")
_ANY_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
COPIED_WORDS = 6
"""Consecutive question words in a workflow string that count as copying the question."""


def _numbers(text: str) -> set[float]:
    """Numbers with two or more significant digits in ``text`` (48, 3.5, 1,250; not 3, 3.0, 10 or
    2,000: round numbers are too common in any workflow, as loop and sample counts, to mean anything)."""
    found = set()
    for raw in _NUMBER.findall(text):
        plain = raw.replace(",", "")
        significant = plain.replace(".", "").strip("0")
        if len(significant) >= 2:
            try:
                found.add(float(plain))
            except ValueError:
                continue
    return found


def _windows(text: str) -> set[str]:
    words = _WORD.findall(text.lower())
    return {" ".join(words[i : i + COPIED_WORDS]) for i in range(len(words) - COPIED_WORDS + 1)}


@functools.lru_cache(maxsize=8192)
def _constants(source: str) -> tuple[tuple[int, int | float | str], ...] | None:
    """(line, value) of every number and string literal of ``source`` (not booleans), in syntax-tree
    walk order; None when it does not parse. Cached: a workflow runs on many questions and repeats,
    and parsing it each time cost more than the check itself."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found: list[tuple[int, int | float | str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float | str)
            and not isinstance(node.value, bool)
        ):
            found.append((node.lineno, node.value))
    return tuple(found)


@functools.lru_cache(maxsize=8192)
def _question_words(question: str) -> tuple[set[float], set[str]]:
    return _numbers(question), _windows(question)


@functools.lru_cache(maxsize=8192)
def question_specific(source: str, question: str) -> str | None:
    """A reason when the workflow's code embeds the question's numbers or words, else None."""
    constants = _constants(source)
    if constants is None:
        return None  # the validator says what is wrong with it
    numbers, windows = _question_words(question)
    for line, value in constants:
        if isinstance(value, int | float) and float(value) in numbers:
            return f"line {line}: embeds the question's number {value!r}"
        if isinstance(value, str):
            shared = _numbers(value) & numbers
            if shared:
                return f"line {line}: a string holds the question's number {min(shared):g}"
            words = " ".join(_WORD.findall(value.lower()))
            copied = next((w for w in windows if w in words), None)
            if copied is not None:
                return f"line {line}: a string copies the question's words {copied!r}"
    return None


def _as_number(text: str) -> float | None:
    try:
        return float(text.strip().replace(",", ""))
    except ValueError:
        return None


def _all_numbers(text: str) -> list[float]:
    found = []
    for raw in _ANY_NUMBER.findall(text):
        value = _as_number(raw)
        if value is not None:
            found.append(value)
    return found


def _same_number(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _normal(text: str) -> str:
    return " ".join(text.replace("\r\n", "\n").split()).lower()


def ungrounded_reason(
    domain: str,
    answer: str,
    outputs: Sequence[str],
    calls: int,
    entry_point: str | None = None,
    mode: Grounding = "contained",
) -> str | None:
    """A reason when ``answer`` did not come from the executor, else None. ``outputs``: every
    executor reply of the run and every output of a program the executor wrote."""
    if calls == 0:
        return "the answer came from no executor call (0 calls)"
    wanted = answer if mode == "verbatim" else extract(domain, answer, entry_point)
    needle = _normal(wanted)
    if not needle:
        return None  # an empty answer scores 0 anyway
    if any(needle in _normal(output) for output in outputs):
        return None
    number = _as_number(wanted) if mode == "contained" else None
    if number is not None and any(_same_number(number, found) for o in outputs for found in _all_numbers(o)):
        return None  # the same number written another way ('2,000' for 2000, '1.50' for 1.5)
    shown = wanted.strip()[:60]
    return f"the answer {shown!r} is in no executor reply or program output (answer_grounding: {mode})"
