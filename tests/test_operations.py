"""Failures a person can act on, and what a run says while it works (issue 20, items 8, 10, 11).

Each case is met where a user meets it: the `spogw` command, its exit code and its last lines.
Operational failures (a full disk, a folder that cannot be written, a tracking server that is down,
Ctrl-C, a closed pipe) end in one or two lines naming the cause and what to do; bugs keep their
traceback. Failures are injected with the failpoints (harness/failpoints.py): a full disk or a
read-only folder as the OSError the kernel gives, Ctrl-C as a real SIGINT.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from spogw.harness import failpoints
from spogw.harness.cli import main
from tests.conftest import REPO

SPOGW = [sys.executable, "-m", "spogw.harness.cli"]

STATIC = (Path(__file__).parent / "data" / "static_two_seeds.yaml").read_text()
"""Two static methods x two seeds on the SIMULATED executor: four cells of about a second each."""

CELLS_ROWS = 4 * 32 * 2  # cells x test items (80% of 40) x repeats


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    path = tmp_path / "ops_static.yaml"
    path.write_text(STATIC)
    return path


def _eval_items(run_dir: Path) -> pd.DataFrame:
    with sqlite3.connect(run_dir / "rollouts.sqlite") as db:
        frame = pd.read_sql("SELECT method, seed, item_id, repeat, status, score, answer FROM eval_items", db)
    return frame.sort_values(["method", "seed", "item_id", "repeat"]).reset_index(drop=True)


AS_FROM_A_TERMINAL = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "from spogw.harness.cli import main; raise SystemExit(main(sys.argv[1:]))"
)
"""`spogw` as a terminal's shell starts it: SIGINT at Python's default handler and unblocked. A
child inherits an ignored SIGINT (some earlier test of the same pytest worker leaves the worker
so): Python then keeps it ignored, and Ctrl-C would never reach the run (measured: a run started
under `trap '' INT` with the SIGINT failpoint completes with exit 0)."""


def _spogw(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", AS_FROM_A_TERMINAL, *argv],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd or REPO,
        timeout=600,
        check=False,
    )


# ----------------------------------------------------------------------------------------------
# Item 8: operational failures


def test_ctrl_c_says_how_to_resume_and_the_same_command_finishes_the_run(experiment: Path, tmp_path: Path) -> None:
    """A SIGINT in the middle of the first cell's evaluation (what Ctrl-C sends): exit 130, one line
    saying to run the same command, no traceback (none from asyncio's subprocess transports either);
    the same command then finishes with the tables an uninterrupted run writes. The run logs its
    phases on stderr (not a terminal here) and in run.log, and ends by printing the results table,
    not the whole report."""
    run_dir = tmp_path / "run"
    argv = ("run", str(experiment), "--run-dir", str(run_dir))
    interrupted = _spogw(*argv, env={failpoints.ENV: "store.eval_items=2,signal=INT"})
    assert interrupted.returncode == 130, interrupted.stderr
    assert interrupted.stderr.strip().splitlines()[-1] == "spogw: interrupted; run the same command to resume"
    assert "Traceback" not in interrupted.stderr and "Exception ignored" not in interrupted.stderr
    assert "cell 1/4 io seed 0: evaluate (32 items x 2 repeats)" in interrupted.stderr

    resumed = _spogw(*argv)
    assert resumed.returncode == 0, resumed.stderr
    lines = (run_dir / "run.log").read_text().splitlines()
    assert sum(" done | elapsed " in line for line in lines) == 4, lines  # the resumed run did all four
    assert any("ETA" in line for line in lines) and any("writing item_scores.parquet" in line for line in lines)
    assert "## Results" in resumed.stdout and "| cot |" in resumed.stdout.replace("**", "")
    assert "## Aggregates" not in resumed.stdout and "## Run health" not in resumed.stdout
    assert f"report      {run_dir / 'report.md'}" in resumed.stdout
    assert "## Aggregates" in (run_dir / "report.md").read_text()

    clean = tmp_path / "clean"
    assert main(["run", str(experiment), "--run-dir", str(clean), "--quiet"]) == 0
    assert len(_eval_items(run_dir)) == CELLS_ROWS
    pd.testing.assert_frame_equal(_eval_items(run_dir), _eval_items(clean))


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        ("ENOSPC", 1, "disk full: cannot write"),
        ("EROFS", 2, ": read-only. Choose a folder you can write"),
        ("EACCES", 2, "permission denied"),
    ],
)
def test_a_full_disk_or_an_unwritable_folder_ends_in_two_lines(
    experiment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], error: str, code: int, says: str
) -> None:
    """The OSError a full disk or a read-only folder gives, raised where a run writes its rows: one
    message, the exit code of the README, no traceback; once fixed, the same command resumes."""
    run_dir = tmp_path / "run"
    failpoints.configure(f"store.eval_items=3,error={error}")
    try:
        assert main(["run", str(experiment), "--run-dir", str(run_dir), "--quiet"]) == code
    finally:
        failpoints.configure(None)
    err = capsys.readouterr().err
    assert says in err and err.count("\n") <= 2, err
    assert main(["run", str(experiment), "--run-dir", str(run_dir), "--quiet"]) == 0
    assert len(_eval_items(run_dir)) == CELLS_ROWS


def test_a_full_disk_is_found_behind_mlflow_and_sqlalchemy() -> None:
    """What a full disk looks like when MLflow hits it: SQLite's text error inside SQLAlchemy's
    OperationalError inside an MlflowException. The cause is found, not the wrapper's message."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    from spogw.harness.errors import EXIT_BAD_INPUT, EXIT_FAILURE, operational_failure

    def wrapped(text: str) -> BaseException:
        try:
            try:
                raise OperationalError("INSERT INTO metrics ...", {}, sqlite3.OperationalError(text))
            except OperationalError as err:
                raise MlflowException(f"(sqlite3.OperationalError) {text}") from err
        except MlflowException as outer:
            return outer

    full = operational_failure(wrapped("database or disk is full"))
    assert full is not None and full.exit_code == EXIT_FAILURE and "disk full" in full.message
    read_only = operational_failure(wrapped("attempt to write a readonly database"))
    assert read_only is not None and read_only.exit_code == EXIT_BAD_INPUT
    assert operational_failure(wrapped("no such table: metrics")) is None  # a bug stays a bug
    assert operational_failure(ValueError("internal")) is None


def test_only_the_cause_of_a_failure_is_read_not_what_happened_nearby() -> None:
    """A bug raised while handling a full disk stays a bug (traceback); a 403 body saying
    "Permission denied" is not a folder's permission; a file that cannot be read is not called
    unwritable."""
    from spogw.harness.errors import operational_failure

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "run/store.db")
        except OSError:
            raise KeyError("a bug in the handler")  # noqa: B904 (the implicit chain is the point)
    except KeyError as bug:
        assert operational_failure(bug) is None
    assert operational_failure(RuntimeError("HTTP 403: Permission denied for model gpt-x")) is None
    unreadable = operational_failure(PermissionError(errno.EACCES, "Permission denied", "data/items.jsonl"))
    assert unreadable is not None and unreadable.message.startswith("permission denied data/items.jsonl")
    assert "cannot write" not in unreadable.message


def test_a_tracking_server_that_is_down_fails_at_once_before_any_work(
    experiment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to hang 4 min 10 s in silence, after setting up the run folder."""
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    argv = ["run", str(experiment), "--run-dir", str(run_dir), "--quiet", "--set", "tracking.uri=http://127.0.0.1:9"]
    assert main(argv) == 3
    assert time.perf_counter() - start < 60  # a hang guard: the check itself times out after 5 s
    err = capsys.readouterr().err
    assert "tracking server http://127.0.0.1:9 does not answer" in err and "mlflow server" in err
    assert not run_dir.exists()


def test_a_dry_run_into_a_closed_pipe_exits_quietly(experiment: Path) -> None:
    """`spogw run X --dry-run | head -1`: the reader is gone before the plan is printed."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE, whatever the timing
    try:
        result = subprocess.run(
            [*SPOGW, "run", str(experiment), "--dry-run"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_a_broken_pipe_that_is_not_stdout_is_not_silenced(monkeypatch: pytest.MonkeyPatch, experiment: Path) -> None:
    """Only a closed reader of our own output exits 141 quietly; a pipe to a worker that breaks is
    a failure and keeps its traceback."""
    import spogw.harness.config as config_module

    def worker_died(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe (a sandbox worker's stdin)")

    monkeypatch.setattr(config_module, "load_experiment", worker_died)
    with pytest.raises(BrokenPipeError, match="sandbox worker"):
        main(["check", str(experiment)])


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("run {experiment} --run-dir {file}", "--run-dir {file}: {file} is a file, not a folder"),
        ("run {experiment} --run-dir {file}/run", "--run-dir {file}/run: {file} is a file, not a folder"),
        ("export {tmp} --out {file}", "--out {file}: {file} is a file, not a folder"),
        ("eval --benchmark gsm_synth --workflow io --out {tmp}", "--out {tmp}: is a folder; give a file path"),
        ("schema --out {file}/schema.md", "--out {file}/schema.md: {file} is a file, not a folder"),
    ],
)
def test_a_path_that_cannot_be_written_is_refused_before_any_work(
    command: str, says: str, experiment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file where a folder must go (or the reverse) is bad input, found before the run folder is
    set up or the evaluation is done, and the file is left as it was."""
    taken = tmp_path / "taken.parquet"
    taken.write_text("not a folder")
    fill = {"experiment": experiment, "file": taken, "tmp": tmp_path}
    assert main(command.format(**fill).split()) == 2
    out, err = capsys.readouterr()
    assert says.format(**fill) in err and "Traceback" not in err
    assert "workflow io on" not in out  # eval refused before it evaluated
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize("kind", ["experiment", "benchmark data", "workflow"])
def test_a_file_that_is_not_text_is_named_in_the_error(
    kind: str, experiment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00 not text")
    argv = {
        "experiment": ["check", str(binary)],
        "benchmark data": ["eval", "--benchmark", "gsm8k", "--workflow", "io", "--data", str(binary)],
        "workflow": ["eval", "--benchmark", "gsm_synth", "--workflow", str(binary), "--out", str(tmp_path / "o.pq")],
    }[kind]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(binary) in err and "not UTF-8 text" in err, err


def test_an_offline_hub_dataset_is_a_service_that_does_not_answer(tmp_path: Path) -> None:
    """Not in the cache and no network: exit 3 (the run can resume once online), naming the
    dataset and the alternative."""
    offline = _spogw(
        "eval", "--benchmark", "gsm8k", "--workflow", "io", "--hub", "no-such-owner/no-such-dataset",
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert offline.returncode == 3, offline.stderr
    assert "'no-such-owner/no-such-dataset'" in offline.stderr and "give the benchmark a local path" in offline.stderr
    assert "Traceback" not in offline.stderr


def test_an_internal_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, experiment: Path) -> None:
    """A ValueError from a bug is not 'bad input': it propagates (traceback, exit 1), as before the
    blanket ValueError -> exit 2 hid bugs."""
    import spogw.harness.config as config_module

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(config_module, "load_experiment", broken)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["check", str(experiment)])


# ----------------------------------------------------------------------------------------------
# Item 10: spogw eval


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--test-fraction", "1.5"], "--test-fraction 1.5: must be between 0 and 1"),
        (["--test-fraction", "0"], "--test-fraction 0.0: must be between 0 and 1"),
        (["--size", "0"], "--size 0: give a positive number of items"),
        (["--timeout-s", "0"], "--timeout-s and --call-timeout-s must be positive"),
        (["--executor", "simm"], "unknown executor 'simm'; did you mean 'sim'?"),
        (["--executor", "sim:foo"], "unknown sim profile 'foo'; choose one of"),
    ],
)
def test_eval_refuses_bad_arguments(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.parquet"
    assert main(["eval", "--benchmark", "gsm_synth", "--workflow", "io", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and "pydantic" not in err and "Traceback" not in err
    assert not out.exists()


def test_eval_refuses_an_empty_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["eval", "--benchmark", "gsm8k", "--workflow", "io", "--data", str(empty)]) == 2
    assert f"{empty}: no rows (the file is empty" in capsys.readouterr().err


def test_eval_uses_the_test_split_says_so_and_never_replaces_its_default_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "--benchmark", "gsm_synth", "--workflow", "io", "--size", "10", "--repeats", "1", "--quiet"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "split       test: 8 of 10 items (--test-fraction 0.8, --split-seed 0" in first
    assert main(argv) == 0
    second = capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "runs" / "eval").iterdir())
    assert written == ["gsm_synth-io-sim_medium-test-2.parquet", "gsm_synth-io-sim_medium-test.parquet"]
    assert "test-2.parquet" in second and len(pd.read_parquet(tmp_path / "runs" / "eval" / written[0])) == 8


def test_eval_against_an_unreachable_endpoint_is_not_a_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every run infra_error (fewer failures than the circuit breaker's threshold): exit 3, said."""
    argv = ["eval", "--benchmark", "gsm_synth", "--workflow", "io", "--size", "10", "--limit", "1", "--repeats", "1"]
    argv += ["--executor", "openai", "--model", "x", "--base-url", "http://127.0.0.1:9/v1", "--no-cache", "--quiet"]
    argv += ["--out", str(tmp_path / "x.parquet"), "--call-timeout-s", "5"]
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert "infra_error 1" in captured.out and "every one of the 1 runs ended in infra_error" in captured.err


# ----------------------------------------------------------------------------------------------
# Item 11: progress and third-party noise of a trained run, output to a pipe


def test_a_trained_run_logs_its_phases_without_third_party_noise(tmp_path: Path, spogw_cache: Path) -> None:
    """Output to a pipe (nohup, CI, a cluster job): one line per phase with its counts, no weight-
    loading bars, no FutureWarning from transformers."""
    run_dir = tmp_path / "run"
    small = REPO / "tests" / "data" / "runner_small.yaml"
    result = _spogw("run", str(small), "--run-dir", str(run_dir), "--set", "iterations=1", "--methods", "spogw")
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "Loading weights" not in err and "FutureWarning" not in err and "it/s]" not in err, err
    expected = [
        "cell 1/1 spogw seed 0 iteration 0/1: evaluate (4 items x 2 repeats)",
        "cell 1/1 spogw seed 0 iteration 0/1: collect (3 questions x 4 workflows)",
        "cell 1/1 spogw seed 0 iteration 0/1: train",
        "cell 1/1 spogw seed 0 iteration 1/1: evaluate",
        "cell 1/1 spogw seed 0 done",
    ]
    for line in expected:
        assert line in err, (line, err)
    assert all(line in (run_dir / "run.log").read_text() for line in expected)
