"""Real models end to end on CPU: SmolLM2-135M-Instruct as the generator (in process, chat prompt,
grammar decoding) and as the executor (behind `transformers serve` on 127.0.0.1). It asserts the
pipeline and the report's model lines, not scores: a 135M model is a real but weak model."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_executors import smol_server  # noqa: F401  # the served model (module-scoped fixture)

EXPERIMENT = REPO / "tests" / "data" / "real_models_small.yaml"


@pytest.mark.slow
def test_a_real_generator_and_a_served_real_executor_run_an_experiment(smol_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    url, folder = smol_server
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "spogw.harness.cli", "run", str(EXPERIMENT), "--run-dir", str(run_dir), "--quiet",
         "--threads", "1", "--set", f"executor.base_url={url}", "--set", f"executor.model={folder}"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    head = (run_dir / "report.md").read_text().split("\n## ")[0]
    print(head)
    assert "SIMULATED" not in head
    assert f"Executor: openai:{folder}." in head
    assert "Generator: HuggingFaceTB/SmolLM2-135M-Instruct" in head
    assert "grammar decoding, chat-v2 prompt, hf sampling" in head
    with sqlite3.connect(run_dir / "rollouts.sqlite") as db:
        rollouts = db.execute("SELECT status, workflow_code, executor_calls FROM rollouts").fetchall()
        evaluations = db.execute("SELECT status, calls FROM eval_items").fetchall()
    assert len(rollouts) == 2 and len(evaluations) == 2 * 2  # 1 question x m=2; 2 items x iterations 0 and 1
    assert all(code and code.startswith("class Workflow") for _, code, _ in rollouts), "grammar workflows"
    statuses = {status for status, *_ in rollouts + evaluations}
    assert statuses <= {"ok", "ungrounded", "runtime_error", "infra_error"}, statuses
    assert sum(calls for _, _, calls in rollouts) > 0, "the served executor answered the operators"
