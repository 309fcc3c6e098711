"""Tracking across machines: an MLflow server with --serve-artifacts that the test starts on
127.0.0.1, one parent run, and two cells logging at once from two processes (as workers do)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = 150

CELL = """
import sys
from pathlib import Path
from spogw.harness.tracking import Tracker
run_dir, uri, parent, label = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
tracker = Tracker(run_dir, "served-tracking", uri)
run_id = tracker.start_child(parent, label, 0, {"method": label, "lr": 0.01}, {"simulated": "true"})
for step in range(int(sys.argv[5])):
    tracker.log_metrics(run_id, {"loss": 1.0 / (step + 1), "score": step / 100, "step.kl": 0.01 * step}, step)
adapter = run_dir / f"adapter-{label}"
adapter.mkdir()
(adapter / "adapter_config.json").write_text('{"r": 8}')
tracker.log_artifact(run_id, adapter, "adapter")
tracker.finish(run_id)
print(run_id)
"""


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    artifacts = tmp_path / "server-artifacts"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--serve-artifacts"]
    command += ["--artifacts-destination", str(artifacts)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the MLflow server did not start") from None
                time.sleep(0.5)
        yield uri, artifacts
    finally:
        process.terminate()
        process.wait(30)


def test_two_cells_log_at_once_into_one_parent_through_the_server(
    mlflow_server: tuple[str, Path], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from spogw.harness.tracking import Tracker

    uri, artifacts = mlflow_server
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    parent = Tracker(run_dir, "served-tracking", uri).start_parent("served-tracking", {"seeds": [0]}, {})
    assert parent is not None
    cells = [
        subprocess.Popen(
            [sys.executable, "-c", CELL, str(run_dir), uri, parent, label, str(STEPS)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for label in ("spogw", "score_dpo")
    ]
    outputs = [cell.communicate(timeout=300) for cell in cells]
    assert all(cell.returncode == 0 for cell in cells), [err[-2000:] for _, err in outputs]
    children = {out.strip().splitlines()[-1] for out, _ in outputs}  # MLflow prints run links before it

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("served-tracking")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3, "one parent and one nested run per cell, none duplicated"
    nested = {r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert nested == children
    for run_id in children:
        for metric in ("loss", "score", "step.kl"):
            history = client.get_metric_history(run_id, metric)
            assert sorted(m.step for m in history) == list(range(STEPS)), (run_id, metric)
        assert [a.path for a in client.list_artifacts(run_id, "adapter")] == ["adapter/adapter_config.json"]
    stored = list(artifacts.rglob("adapter_config.json"))
    assert len(stored) == 2, "the artifacts went through the server to its destination"
    assert not (run_dir / "mlartifacts").exists(), "nothing on the logging machine's disk"
    recorded = json.loads((run_dir / "tracking.json").read_text())["runs"]
    assert {recorded["spogw/seed0"], recorded["score_dpo/seed0"]} == children and recorded["__parent__"] == parent
