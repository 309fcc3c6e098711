"""Every file in tests/hostile_workflows/ ends with its expected status and reason, in bounded time,
without crashing or hanging the process and without touching the host's files."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from spogw.harness.benchmarks.gsm_synth import generate
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.workflows.engine import WorkflowEngine
from spogw.harness.workflows.pool import PoolLimits
from tests.conftest import run

CORPUS = sorted((Path(__file__).parent / "hostile_workflows").glob("*.py"))
TIMEOUT_S = 8.0


def expectation(path: Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    match = re.fullmatch(r"# expect: (\w+) \| (.+)", first)
    assert match, f"{path.name}: first line must be '# expect: STATUS | REASON[|REASON...]'"
    return match.group(1), match.group(2)


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 25


def test_each_hostile_workflow_gets_its_status_and_reason(tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("untouched")
    item = generate(1)[0]

    async def go() -> list[tuple[Path, object, float]]:
        engine = WorkflowEngine(
            SimExecutor("medium"),
            concurrency=4,
            timeout_s=TIMEOUT_S,
            max_calls=16,
            pool_limits=PoolLimits(max_steps=20_000),
        )
        results = []
        try:
            for path in CORPUS:
                start = time.perf_counter()
                outcome = await engine.run(path.read_text(), item, repeat=0)
                results.append((path, outcome, time.perf_counter() - start))
        finally:
            await engine.close()
        return results

    failures = []
    for path, outcome, wall_s in run(go()):
        status, reason = expectation(path)
        alternatives = [text.strip() for text in reason.split("|")]  # literal substrings, any may match
        if outcome.status.value != status or not any(a in outcome.reason for a in alternatives):  # type: ignore[attr-defined]
            failures.append(
                f"{path.name}: got {outcome.status.value} ({outcome.reason!r}), "  # type: ignore[attr-defined]
                f"expected {status} matching {reason!r}"
            )
        assert wall_s < TIMEOUT_S + 5, f"{path.name} took {wall_s:.1f}s"
    assert not failures, "\n".join(failures)
    assert canary.read_text() == "untouched"


@pytest.mark.parametrize("path", CORPUS[:3], ids=lambda p: p.name)
def test_cli_validate_workflow_reports_invalid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spogw.harness.cli import main

    status, _ = expectation(path)
    code = main(["validate-workflow", str(path)])
    assert (code == 1) == (status == "invalid")
    assert path.name in capsys.readouterr().out
