"""Extraction of the answer part of a model's text, per domain.

Used by operators (to tell the simulator which candidate a text is), by scorers and by the
simulator. The same function serves real and simulated replies.
"""

from __future__ import annotations

import re

from spogw.harness.workflows.extract import extract_code

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for index in range(brace, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : index].strip()
    return None


def last_number(text: str) -> float | None:
    """The last number in ``text`` ('1,000' counts as 1000), or None."""
    matches = _NUMBER.findall(text)
    for raw in reversed(matches):
        try:
            return float(raw.replace(",", ""))
        except ValueError:
            continue
    return None


def math_answer(text: str) -> str:
    """The final answer of a math reply: the last \\boxed{} if any, else the last number."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    number = last_number(text)
    return format_number(number) if number is not None else text.strip()


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def code_answer(text: str, entry_point: str | None = None) -> str:
    """The code of a reply (harness.workflows.extract: the same extractor as the workflows'): the
    last fenced Python block that defines ``entry_point`` (else anything), cut to what parses."""
    return extract_code(text, entry_point)


def qa_answer(text: str) -> str:
    tagged = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if tagged:
        return tagged[-1].strip()
    marker = text.rfind("Answer:")
    return text[marker + len("Answer:") :].strip() if marker >= 0 else text.strip()


def extract(domain: str, text: str, entry_point: str | None = None) -> str:
    if domain == "math":
        return math_answer(text)
    if domain == "code":
        return code_answer(text, entry_point)
    return qa_answer(text)
