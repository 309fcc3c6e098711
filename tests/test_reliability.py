"""Crash safety of single writes and the crash points the kill tests use (the whole-run kill test
is tests/test_runner.py::test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spogw.harness import failpoints
from spogw.harness.atomic import atomic_path, atomic_write_text
from spogw.harness.executors.stub_server import FAULTS

REPO = Path(__file__).resolve().parents[1]


def _child(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_atomic_write_replaces_the_whole_file_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.md"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new " * 1000)
    assert target.read_text() == "new " * 1000
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["report.md"], "no temporary left behind"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "item_scores.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("where", ["while writing the bytes", "after fsync, before the rename"])
def test_sigkill_during_a_write_never_leaves_a_torn_file(tmp_path: Path, where: str) -> None:
    """A process killed mid-write: the target still holds the complete old text (the new text, torn,
    is only ever in a temporary that no reader opens)."""
    target = tmp_path / "report.md"
    target.write_text("old report\n")
    if where == "while writing the bytes":
        body = (
            "import os, signal\nfrom spogw.harness.atomic import atomic_path\n"
            f"with atomic_path({str(target)!r}) as t:\n"
            "    h = open(t, 'w'); h.write('new' * 10000); h.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        result = _child(body)
    else:
        body = "from spogw.harness.atomic import atomic_write_text\n"
        body += f"atomic_write_text({str(target)!r}, 'new' * 10000)\n"
        result = _child(body, {failpoints.ENV: "write.report.md=1"})
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert target.read_text() == "old report\n"
    strays = [p for p in tmp_path.iterdir() if p != target]
    assert len(strays) == 1 and strays[0].name.startswith(".report.md.") and strays[0].suffix == ".tmp"


def test_a_crash_point_kills_at_its_nth_hit_and_traces_every_hit(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    code = (
        "from spogw.harness import failpoints\n"
        "for site in ['store.rollouts', 'train.step', 'store.rollouts', 'train.step', 'train.step']:\n"
        "    failpoints.hit(site)\n"
        "print('survived')\n"
    )
    env = {failpoints.ENV: "train.step=2", failpoints.TRACE_ENV: str(trace)}
    result = _child(code, env)
    assert result.returncode == -signal.SIGKILL and "survived" not in result.stdout
    assert trace.read_text().split() == ["store.rollouts", "train.step", "store.rollouts", "train.step"]
    by_phase = _child(code, {failpoints.ENV: "phase:collection=2"})
    assert by_phase.returncode == -signal.SIGKILL
    untouched = _child(code, {failpoints.ENV: "phase:report=1"})
    assert untouched.returncode == 0 and "survived" in untouched.stdout


def test_crash_point_plans_parse_and_bad_ones_are_named() -> None:
    plan = failpoints.parse("store.rollouts=3,p=0.5,seed=7,phase=training")
    assert plan.at == {"store.rollouts": 3} and plan.probability == 0.5 and plan.seed == 7
    assert plan.phase == "training"
    for bad in ("store.rollouts=three", "p=x", "phase=lunch"):
        with pytest.raises(ValueError, match=failpoints.ENV):
            failpoints.parse(bad)
    assert failpoints.phase_of("store.rollouts") == "collection"
    assert failpoints.phase_of("checkpoint.staged") == "training"
    assert failpoints.phase_of("write.report.html") == "report"
    assert failpoints.phase_of("write.config.resolved.yaml") == "starting"


def test_unarmed_crash_points_do_nothing() -> None:
    failpoints.configure(None)
    for _ in range(1000):
        failpoints.hit("store.rollouts")


# ----------------------------------------------------------------------------------------------
# Executor faults during a whole run: an OpenAI-compatible stub that answers 429 (Retry-After), 500,
# garbage, truncated JSON, hangs, slow-loris bodies and connection resets at a given rate.

SMALL = REPO / "tests" / "data" / "runner_small.yaml"


def _run_against_stub(
    run_dir: Path, fault_rate: float, spogw_cache: Path, port: int = 0, **extra: str
) -> tuple[int, str, dict[str, int], float]:
    import asyncio
    import contextlib
    import io
    import time

    from spogw.harness.cli import main
    from spogw.harness.executors.stub_server import StubServer

    async def go() -> tuple[int, str, dict[str, int], float]:
        async with StubServer(fault_rate=fault_rate, hang_s=5.0, trickle_s=0.1, seed=3, port=port) as server:
            settings = {
                "generator.tiny_recipe": "standard",
                "benchmarks.0.test_limit": "6",
                "executor.name": "openai",
                "executor.profile": "null",
                "executor.model": "stub",
                "executor.base_url": server.url,
                "executor.max_retries": "1",
                "executor.call_timeout_s": "1",
                "executor.cache": "false",
                "executor.abort_after_failures": "20",
                **extra,
            }
            argv = ["run", str(SMALL), "--run-dir", str(run_dir), "--quiet"]
            argv += [a for key, value in settings.items() for a in ("--set", f"{key}={value}")]
            stderr, stdout = io.StringIO(), io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
                code = await asyncio.to_thread(main, argv)
            output = stderr.getvalue() + stdout.getvalue()
            return code, output, dict(server.served), time.perf_counter() - start

    return asyncio.run(go())


@pytest.mark.slow
@pytest.mark.parametrize("fault_rate", [0.1, 0.3])
def test_a_run_completes_through_executor_faults(
    tmp_path: Path, fault_rate: float, spogw_cache: Path, standard_tiny: Path
) -> None:
    """The run finishes; every fault kind was served; infra_error runs are stored without a score,
    never enter a training group, and the report's Run health counts exactly them."""
    import sqlite3

    from spogw.harness.config import load_experiment, method_config
    from spogw.harness.store import SQLiteStore
    from spogw.methods.steps import build_units

    run_dir = tmp_path / "run"
    code, stderr, served, wall_s = _run_against_stub(run_dir, fault_rate, spogw_cache)
    print(f"fault rate {fault_rate}: exit {code} in {wall_s:.1f} s; stub served {served}")
    assert code == 0, stderr
    kinds = set(served) - {"ok"}
    assert kinds == set(FAULTS) if fault_rate >= 0.3 else len(kinds) >= 4, served
    with sqlite3.connect(run_dir / "rollouts.sqlite") as db:
        infra = {
            table: db.execute(f"SELECT count(*), count(score) FROM {table} WHERE status='infra_error'").fetchone()
            for table in ("rollouts", "eval_items")
        }
    print(f"infra_error rows (count, scored): {infra}")
    assert all(scored == 0 for _, scored in infra.values()), "an infra_error never has a score"
    assert infra["rollouts"][0] + infra["eval_items"][0] > 0, "the faults made some runs infra_error"
    config = load_experiment(run_dir / "config.resolved.yaml")
    spec = next(m for m in config.methods if m.name == "spogw")
    with SQLiteStore(run_dir / "rollouts.sqlite") as store:
        for iteration in range(config.iterations):
            rollouts = store.get(config.name, spec.display_label, 0, iteration)
            units = build_units(rollouts, method_config(spec), 0, iteration)
            members = [r for unit in units for r in unit.rollouts]
            assert all(r.status != "infra_error" for r in members)
    report = (run_dir / "report.md").read_text()
    health = report.split("## Run health")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in health.splitlines() if line.startswith("| ")}
    header = [cell.strip() for cell in health.splitlines()[2].split("|")[1:-1]]
    for table, column in (("eval_items", "eval infra_error"), ("rollouts", "train infra_error")):
        total = sum(
            int(float(row.split("|")[1 + header.index(column)])) for name, row in rows.items() if name != "method"
        )
        assert total == infra[table][0], (column, health)


def test_an_executor_that_always_fails_stops_the_run_and_a_rerun_resumes_when_it_is_back(
    tmp_path: Path, spogw_cache: Path, standard_tiny: Path
) -> None:
    """100% faults: the breaker stops the run in bounded time with exit 3 and a clear message. The
    same command, once the endpoint answers, resumes and finishes, and retries every infra_error
    run that was recorded before the breaker opened: none is left."""
    import socket
    import sqlite3

    with socket.socket() as probe:  # one port for both lives: the endpoint URL is part of the config
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_dir = tmp_path / "run"
    code, stderr, served, wall_s = _run_against_stub(run_dir, 1.0, spogw_cache, port)
    print(f"fault rate 1.0: exit {code} in {wall_s:.1f} s; stub served {served}")
    assert code == 3, stderr
    assert "is down" in stderr and "calls in a row failed" in stderr and str(run_dir) in stderr
    assert "run the same command again to resume" in stderr
    assert wall_s < 120, "the breaker stops a dead endpoint in bounded time"
    assert not (run_dir / "report.md").exists()
    with sqlite3.connect(run_dir / "rollouts.sqlite") as db:
        recorded = db.execute("SELECT count(*) FROM eval_items WHERE status='infra_error'").fetchone()[0]
    code, output, served, wall_s = _run_against_stub(run_dir, 0.0, spogw_cache, port)
    print(f"endpoint back: exit {code} in {wall_s:.1f} s; {recorded} infra_error rows recorded before")
    assert code == 0, output
    with sqlite3.connect(run_dir / "rollouts.sqlite") as db:
        for table in ("rollouts", "eval_items"):
            assert db.execute(f"SELECT count(*) FROM {table} WHERE status='infra_error'").fetchone()[0] == 0
    assert (run_dir / "report.md").is_file()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_resumed_run_retries_infra_errors_and_never_changes_other_rows(tmp_path: Path, kind: str) -> None:
    import dataclasses

    from spogw.harness.rollouts import MemoryStore, Rollout
    from spogw.harness.store import EvalRow, SQLiteStore

    def rollout(sample: int, status: str, score: float | None) -> Rollout:
        return Rollout(
            experiment="e", method="spogw", seed=0, iteration=0, query_id="q1", sample_idx=sample, prompt="p",
            workflow_code="code", prompt_ids=(1,), completion_ids=(2, 3), old_logp=(-0.5, -0.5), status=status,
            reason="", score=score, score_repeats=(score,), executor_calls=1, executor_tokens=10, wall_s=0.1,
        )  # fmt: skip

    store = SQLiteStore(tmp_path / "rollouts.sqlite") if kind == "sqlite" else MemoryStore()
    store.put([rollout(0, "ok", 1.0), rollout(1, "infra_error", None)])
    assert store.keys("e", "spogw", 0, 0) == {("e", "spogw", 0, 0, "q1", 0)}, "an infra_error is collected again"
    store.put([rollout(0, "ok", 0.0), rollout(1, "ok", 0.5)])
    stored = {r.sample_idx: (r.status, r.score) for r in store.get("e", "spogw", 0, 0)}
    assert stored == {0: ("ok", 1.0), 1: ("ok", 0.5)}, "the ok row kept, the infra_error row replaced"
    store.put([rollout(1, "infra_error", None)])
    assert store.get("e", "spogw", 0, 0)[1].score == 0.5, "a failure never overwrites a result"
    if not isinstance(store, SQLiteStore):
        return
    failed = EvalRow(
        experiment="e", method="spogw", seed=0, iteration=0, benchmark="gsm_synth", item_id="q1", repeat=0,
        workflow_code="code", structure="Custom", status="infra_error", reason="HTTP 500", score=None, calls=1,
        prompt_tokens=5, completion_tokens=5, wall_s=0.1,
    )  # fmt: skip
    store.put_eval([failed])
    assert store.eval_done("spogw", 0, 0, "gsm_synth") == set()
    store.put_eval([dataclasses.replace(failed, status="ok", reason="", score=1.0)])
    assert store.eval_done("spogw", 0, 0, "gsm_synth") == {"q1"}
    store.put_eval([failed])
    assert [(r.status, r.score) for r in store.eval_rows("spogw", 0, 0)] == [("ok", 1.0)]
    store.close()


# ----------------------------------------------------------------------------------------------
# Bad input: a clear error naming the thing, exit code 2, nothing written or overwritten.


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


BAD_EXPERIMENTS = {
    "malformed YAML": ("version: 1\nname: [unclosed\n", ["not valid YAML", "line 2"]),
    "wrong type": (SMALL.read_text().replace("iterations: 2", "iterations: three"), ["iterations", "'three'"]),
    "unknown field": (SMALL.read_text().replace("iterations: 2", "iterations: 2\niteratoins: 3"), ["iteratoins"]),
    "negative sample count": (SMALL.read_text().replace("num_samples: 4", "num_samples: -4"), ["num_samples", "-4"]),
}


@pytest.mark.parametrize("case", sorted(BAD_EXPERIMENTS))
def test_a_bad_experiment_file_is_named_with_its_field_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spogw.harness.cli import main

    text, expected = BAD_EXPERIMENTS[case]
    experiment = tmp_path / "bad.yaml"
    experiment.write_text(text)
    assert main(["run", str(experiment), "--run-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "bad.yaml" in error and all(e in error for e in expected), error
    assert "Traceback" not in error and not (tmp_path / "run").exists()


def test_missing_files_are_named_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spogw.harness.cli import main

    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err
    missing_data = ["--set", "benchmarks.0.name=humaneval", "--set", f"benchmarks.0.path={tmp_path / 'none.jsonl'}"]
    assert main(["run", str(SMALL), "--run-dir", str(tmp_path / "run"), *missing_data]) == 2
    error = capsys.readouterr().err
    assert "benchmarks.0.path" in error and "none.jsonl" in error
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_broken_benchmark_line_is_named_by_its_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spogw.harness.cli import main

    data = tmp_path / "HumanEval.jsonl"
    data.write_text('{"task_id": "HumanEval/0", "prompt": "def f():\\n"}\n{"task_id": "HumanEval/1", \n')
    overrides = ["benchmarks.0.name=humaneval", f"benchmarks.0.path={data}", "benchmarks.0.size=null"]
    argv = ["run", str(SMALL), "--run-dir", str(tmp_path / "run"), *(a for o in overrides for a in ("--set", o))]
    assert main(argv) == 2
    assert f"{data}:2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_corrupted_run_database_is_named_exit_2_and_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spogw.harness.cli import main
    from spogw.harness.config import load_experiment

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.resolved.yaml").write_text(
        yaml.safe_dump(load_experiment(SMALL).model_dump(mode="json"), sort_keys=False)
    )
    (run_dir / "rollouts.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    before = _files(run_dir)
    for argv in (["run", str(SMALL), "--run-dir", str(run_dir), "--quiet"], ["report", str(run_dir)]):
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert f"{run_dir / 'rollouts.sqlite'}: the run's database is damaged" in error and "Traceback" not in error
        assert _files(run_dir) == before, "nothing in the run folder changed"


def test_an_adapter_from_another_base_model_is_refused_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spogw_cache: Path
) -> None:
    import json

    from spogw.harness.cli import main
    from spogw.harness.policy.checkpoints import META

    adapter = tmp_path / "iter2"
    adapter.mkdir()
    (adapter / META).write_text(json.dumps({"base": "Qwen/Qwen2.5-7B-Instruct", "iteration": 2}))
    before = _files(adapter)
    assert main(["generate", "--adapter", str(adapter), "--samples", "1", "--cpu"]) == 2
    error = capsys.readouterr().err
    assert str(adapter) in error and "trained on base model 'Qwen/Qwen2.5-7B-Instruct'" in error
    assert _files(adapter) == before


def test_a_run_folder_from_before_a_new_config_field_still_resumes(tmp_path: Path) -> None:
    """A field added to the schema since the run began reads as its default: the folder resumes
    instead of being refused as a different configuration (a changed value is still refused)."""
    from spogw.harness.config import ConfigError, load_experiment
    from spogw.harness.run_folder import prepare_run_dir

    config = load_experiment(SMALL)
    written = config.model_dump(mode="json")
    del written["executor"]["abort_after_failures"]  # as written before the field existed
    (tmp_path / "config.resolved.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    prepare_run_dir(config, tmp_path, force_new=False)
    changed = load_experiment(SMALL, ["executor.abort_after_failures=5"])
    with pytest.raises(ConfigError, match=r"executor\.abort_after_failures: 20 -> 5"):
        prepare_run_dir(changed, tmp_path, force_new=False)


SECRET = "sk-spogw-test-0123456789abcdefSECRET"


def test_the_api_key_never_reaches_any_output_of_a_run(
    tmp_path: Path,
    spogw_cache: Path,
    standard_tiny: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A whole run with the key in the environment, 30% faults (retries, failures, error messages),
    the response cache on: the key is in none of the run folder's files (databases, parquet, reports,
    figures, MLflow's database and artifacts, checkpoints), the response cache, the console or the logs."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("SPOGW_TEST_KEY", SECRET)
    run_dir = tmp_path / "run"
    settings = {"executor.api_key_env": "SPOGW_TEST_KEY", "executor.cache": "true"}
    code, output, _, _ = _run_against_stub(run_dir, 0.3, spogw_cache, **settings)
    assert code == 0, output
    paths = [p for p in [*run_dir.rglob("*"), *spogw_cache.glob("*.sqlite*")] if p.is_file()]
    searched = {path: path.read_bytes() for path in paths}
    assert len(searched) > 20 and any(p.name == "mlflow.db" for p in searched)
    leaks = [str(path) for path, data in searched.items() if SECRET.encode() in data]
    assert not leaks, leaks
    assert SECRET not in output and SECRET not in caplog.text
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    for run in client.search_runs([client.get_experiment_by_name("runner_small").experiment_id]):
        assert SECRET not in repr(run.data.params) + repr(run.data.tags)
    with sqlite3.connect(run_dir / "rollouts.sqlite") as db:  # the key's variable name is recorded, not its value
        assert db.execute("SELECT count(*) FROM rollouts").fetchone()[0] > 0
    assert "SPOGW_TEST_KEY" in (run_dir / "config.resolved.yaml").read_text()
