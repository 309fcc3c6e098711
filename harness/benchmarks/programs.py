"""How a code answer becomes the program the sandbox runs: HumanEval, MBPP and the Test operator.

The reference is openai/human-eval's ``check_correctness``, which runs
``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"`` and passes when that program
finishes without an exception. Here:

- the answer's code is taken out of the reply by harness.workflows.extract (fences, prose, CRLF);
- the item's code context (HumanEval: the prompt, with its imports, helper functions and the
  entry point's stub; MBPP: none) always comes first. A body-only completion (its first line
  indented) continues the stub, as in the reference; a complete answer follows the context, so its
  own definitions replace the stub's while the prompt's imports and helpers stay available (24 of
  164 HumanEval tasks need them: ``List`` without an import, ``is_palindrome``, ``encode_cyclic``);
- the test is called the way it is written: ``def check(candidate)`` -> ``check(entry_point)``,
  ``def check()`` (AFlow's MBPP) -> ``check()``, plain assertions -> nothing;
- the sandbox passes a program only when it ran to its end (harness/workflows/sandbox.py), never on
  exit status alone, and runs it as a module that is not ``__main__``, as ``exec`` in the reference does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from spogw.harness.workflows.answers import code_answer

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Item
    from spogw.harness.workflows.sandbox import Sandbox

TEST_TIMEOUT_S = 15.0
"""Wall-clock limit of one graded run (ScoreFlow uses 15-40 s; human-eval's default is 3 s of a
process that is not isolated)."""


def is_body(code: str) -> bool:
    """Whether ``code`` is a body-only completion: its first non-blank line is indented."""
    for line in code.split("\n"):
        if line.strip():
            return line[:1] in (" ", "\t")
    return False


def with_context(context: str, code: str) -> str:
    """``context`` then ``code``: a body continues the context's last stub; a complete answer is
    placed after the context so that its definitions win."""
    if not context or is_body(code):
        return context + code
    return context + ("" if context.endswith("\n") else "\n") + code


def test_call(test: str, entry_point: str | None) -> str:
    """The statement that runs ``test``: ``check(<entry point>)``, ``check()`` or nothing."""
    if re.search(r"def\s+check\s*\(\s*\w", test):
        return f"check({entry_point})"
    if re.search(r"def\s+check\s*\(\s*\)", test):
        return "check()"
    return ""  # plain assertions run as they are read


def graded_program(item: Item, answer: str) -> str:
    """The program that grades ``answer`` on ``item`` (the reference's layout)."""
    code = with_context(item.context, code_answer(answer, item.entry_point))
    test = item.test or ""
    return f"{code}\n{test}\n{test_call(test, item.entry_point)}\n"


async def score_tests(item: Item, answer: str, sandbox: Sandbox) -> float:
    """1.0 if the answer passes the item's tests in the sandbox (ran to the end), else 0.0."""
    result = await sandbox.run_python(graded_program(item, answer), timeout_s=TEST_TIMEOUT_S)
    return 1.0 if result.passed else 0.0
