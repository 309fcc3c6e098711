"""MBPP: short Python functions from a description, graded by running their tests in the sandbox.

Upstream format (ScoreFlow/AFlow's JSONL): `task_id`, `prompt`, `code` (reference solution), `test`
(a `check` function: `def check(candidate)` as in HumanEval, or `def check()` calling the function by
name, as AFlow writes it), `entry_point`, `test_list`. The hub dataset
`google-research-datasets/mbpp` has `text`, `code`, `test_list` and `test_setup_code` instead: the
prompt is the description followed by the tests (the MBPP paper's prompt), the entry point the
function the first test calls, and the test the assertions themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from spogw.harness.benchmarks.base import Benchmark, Item
from spogw.harness.benchmarks.data import DEFAULT_SOURCE, Source, field, rows_benchmark
from spogw.harness.benchmarks.programs import score_tests
from spogw.harness.errors import InputError

HUB_ID = "google-research-datasets/mbpp"
_CALLED = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*([A-Za-z_]\w*)\s*\(")


def _hub_fields(row: Mapping[str, Any], where: str, number: int) -> tuple[str, str, str]:
    """(prompt, test, entry point) of a row in the hub layout."""
    tests = field(row, "test_list", where, number, list)
    if not tests:
        raise InputError(f"{where}: row {number}: field 'test_list' is empty")
    called = _CALLED.search(str(tests[0]))
    if called is None:
        raise InputError(f"{where}: row {number}: cannot tell which function {tests[0]!r} tests")
    text = field(row, "text", where, number)
    prompt = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(map(str, tests))
    setup = row.get("test_setup_code") or ""
    return prompt, f"{setup}\n" + "\n".join(map(str, tests)), called.group(1)


def _item(row: Mapping[str, Any], where: str, number: int) -> Item:
    if "prompt" in row:
        prompt, test = field(row, "prompt", where, number), field(row, "test", where, number)
        entry_point = field(row, "entry_point", where, number)
    else:
        prompt, test, entry_point = _hub_fields(row, where, number)
    return Item(
        id=str(row.get("task_id", f"mbpp-{number}")),
        domain="code",
        question=prompt,
        answer=field(row, "code", where, number),
        entry_point=entry_point,
        test=test,
    )


def load_mbpp(source: Source = DEFAULT_SOURCE) -> Benchmark:
    return rows_benchmark("mbpp", "code", score_tests, _item, source)
