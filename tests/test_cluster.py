"""Cells as the unit of distribution (harness/cells.py) and `spogw run --ray` (harness/cluster.py):
a run on a local Ray instance with 2 workers writes the tables of the one-process run, and so does a
run whose worker or driver was killed with SIGKILL and run again."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos import run_tables

from spogw.harness import cells
from spogw.harness.rollouts import Rollout
from spogw.harness.store import EvalRow, SQLiteStore

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "data" / "cluster_small.yaml"
SPOGW = [sys.executable, "-m", "spogw.harness.cli"]
TIMINGS = ("_s", "per_s")


def _rollout(method: str, seed: int, query: str, idx: int, status: str = "ok") -> Rollout:
    return Rollout(
        "e", method, seed, 0, query, idx, "prompt", "code", (1, 2), (3, 4), (-0.25, -1e-9), status, "", 0.5,
        (0.5, None), 3, 30, 0.1, "Custom", "gsm_synth",
    )  # fmt: skip


def _eval(method: str, seed: int, item: str) -> EvalRow:
    return EvalRow("e", method, seed, 0, "gsm_synth", item, 0, "code", "Custom", "ok", "", 1.0, 1, 10, 5, 0.1)


def test_the_union_holds_each_shard_exactly_and_a_merge_twice_changes_nothing(tmp_path: Path) -> None:
    a, b = cells.Cell("spogw", 0), cells.Cell("cot", 0)
    with cells.open_shard(tmp_path, a) as shard:
        shard.put([_rollout("spogw", 0, "q1", 0, "infra_error"), _rollout("spogw", 0, "q1", 1)])
        shard.put_eval([_eval("spogw", 0, "x")])
    with cells.open_shard(tmp_path, b) as shard:
        shard.put_eval([_eval("cot", 0, "x"), _eval("cot", 0, "y")])
    cells.merge(tmp_path)
    with cells.open_shard(tmp_path, a) as shard:  # a resumed cell replaces its infra_error row
        shard.put([_rollout("spogw", 0, "q1", 0)])
    cells.merge(tmp_path)
    cells.merge(tmp_path)
    with SQLiteStore(tmp_path / "rollouts.sqlite") as union:
        rows = union.get("e", "spogw", 0, 0)
        assert [(r.sample_idx, r.status) for r in rows] == [(0, "ok"), (1, "ok")]
        assert [(r.method, r.item_id) for r in union.eval_rows()] == [("cot", "x"), ("cot", "y"), ("spogw", "x")]
    assert cells.shard_cells(tmp_path) == [b, a]


def test_a_run_folder_from_before_the_shards_seeds_each_new_shard_from_its_union(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "rollouts.sqlite") as old:  # every cell's rows in one file
        old.put([_rollout("spogw", 0, "q1", 0), _rollout("spogw", 1, "q1", 0)])
        old.put_eval([_eval("cot", 0, "x")])
    with cells.open_shard(tmp_path, cells.Cell("spogw", 0)) as shard:
        assert [r.seed for r in shard.get("e", "spogw", 0, 0)] == [0]
        assert shard.eval_rows() == []
    twins = cells.twin_shards(tmp_path, ["cot"], 0)  # a twin with no shard yet is read from the union
    try:
        assert [r.item_id for r in twins["cot"].eval_rows("cot")] == ["x"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            twins["cot"].put_eval([_eval("cot", 0, "y")])
    finally:
        cells.close_all(twins)


def test_a_cell_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    cell = cells.Cell("spogw", 0)
    code = (
        "import sys, time; from pathlib import Path; from spogw.harness import cells\n"
        f"with cells.cell_lock(Path({str(tmp_path)!r}), cells.Cell('spogw', 0)):\n"
        "    print('held', flush=True); time.sleep(2)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with cells.cell_lock(tmp_path, cell):
        waited = time.monotonic() - start
        assert f"process {os.getpid()}" in (cell.folder(tmp_path) / ".lock").read_text()
    holder.wait(10)
    assert waited > 0.5, "the second holder waited for the first to end"


# -- Ray -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, spogw_cache: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("one-process") / "run"
    result = subprocess.run([*SPOGW, "run", str(CLUSTER), "--run-dir", str(run_dir), "--quiet"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture
def ray_temp() -> Iterator[Path]:
    """A Ray temp folder of the test's own (short: Ray's socket paths must fit 107 bytes); Ray
    processes a killed driver leaves behind (its agents) are stopped at the end."""
    folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield folder
    for pid in _ray_processes(folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _ray_processes(temp: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(temp) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
    return found


def _start(run_dir: Path, temp: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RAY_TMPDIR": str(temp), "RAY_AUTH_MODE": "disabled"}
    command = [*SPOGW, "run", str(CLUSTER), "--run-dir", str(run_dir), "--ray", "--ray-workers", "2", *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def apart_from_timings(markdown: str) -> str:
    """A report with the cells of its timing columns (wall_s, tokens_per_s, ...) blanked."""
    lines, timing_columns = [], set[int]()
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells_ = line.strip("|").split("|")
            if (
                not set(line) <= {"|", "-", " "}
                and not timing_columns
                and any(c.strip().endswith(TIMINGS) for c in cells_)
            ):
                timing_columns = {i for i, c in enumerate(cells_) if c.strip().endswith(TIMINGS)}
            elif timing_columns:
                cells_ = ["" if i in timing_columns else c for i, c in enumerate(cells_)]
            line = "|" + "|".join(cells_) + "|"
        else:
            timing_columns = set()
        lines.append(line)
    return "\n".join(lines)


def _tracked(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per nested MLflow run (its name), each metric's whole history as (step, value), timings left
    out (a point logged twice shows)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cluster_small")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    return {
        r.info.run_name: {
            key: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, key))
            for key in r.data.metrics
            if not key.endswith(TIMINGS)
        }
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    }


def test_two_ray_workers_write_the_tables_and_report_of_the_one_process_run(
    one_process: Path, tmp_path: Path, ray_temp: Path
) -> None:
    code, output = _finish(_start(tmp_path / "run", ray_temp))
    assert code == 0, output[-3000:]
    assert run_tables(tmp_path / "run") == run_tables(one_process)
    report = apart_from_timings((tmp_path / "run" / "report.md").read_text())
    assert report == apart_from_timings((one_process / "report.md").read_text())
    with SQLiteStore(tmp_path / "run" / "rollouts.sqlite") as union:  # the twin copied, as in one process:
        copied = [[r.wall_s for r in union.get("cluster_small", m, 0, 0)] for m in ("spogw", "score_dpo")]
    assert copied[0] and copied[0] == copied[1], "score_dpo's iteration-0 rollouts are spogw's rows, copied"
    tracked = _tracked(tmp_path / "run")
    assert sorted(tracked) == ["cot-seed0", "score_dpo-seed0", "spogw-seed0"], "one nested run per cell"
    assert tracked == _tracked(one_process), "every metric logged, as the one-process run logs it"
    log = (tmp_path / "run" / "run.log").read_text()
    assert "cluster_small [ray]: cell" in log and "cell 3/3" in log, "the workers' phases and the cells' ends"


def test_a_worker_killed_mid_cell_is_retried_and_a_killed_driver_resumes(
    one_process: Path, tmp_path: Path, ray_temp: Path
) -> None:
    """The chaos drill in distributed mode, in one run: SIGKILL of the worker running spogw once its
    shard has rows (Ray runs the cell again, resuming from its shard and checkpoints), then, once
    that retry runs and a cell is done, SIGKILL of the driver; the same command finishes the run
    with the tables of the uninterrupted one-process run, without running a done cell again."""
    run_dir = tmp_path / "run"
    process = _start(run_dir, ray_temp)
    cell = cells.Cell("spogw", 0)
    mid_cell = lambda: _has_rollouts(cell.shard(run_dir)) and not (run_dir / "done" / cell.name).exists()  # noqa: E731
    killed = _kill_when(mid_cell, lambda: _holder(run_dir, cell))
    retried = lambda: _holder(run_dir, cell) not in (killed, None) and any((run_dir / "done").glob("*"))  # noqa: E731
    _kill_when(retried, lambda: process.pid)
    process.wait(60)
    assert not (run_dir / "report.md").exists()
    done = {path.name: _holder(run_dir, _cell(path.name)) for path in (run_dir / "done").iterdir()}
    code, output = _finish(_start(run_dir, ray_temp))
    assert code == 0, output[-3000:]
    assert run_tables(run_dir) == run_tables(one_process)
    assert {name: _holder(run_dir, _cell(name)) for name in done} == done, "a cell done is not run again"
    assert (run_dir / "report.md").is_file()


def _cell(name: str) -> cells.Cell:
    label, _, seed = name.rpartition(".seed")
    return cells.Cell(label, int(seed))


def _has_rollouts(shard: Path) -> bool:
    if not shard.is_file():
        return False
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{shard}?mode=ro", uri=True)) as db,
    ):
        return int(db.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]) > 0
    return False


def _holder(run_dir: Path, cell: cells.Cell) -> int | None:
    """The PID written in the cell's lock by the process that holds (or last held) it; None while a
    new holder has emptied the file and not yet written its own (cells.cell_lock truncates, then
    writes)."""
    words = (cell.folder(run_dir) / ".lock").read_text().split()
    return int(words[1]) if len(words) > 1 else None


def _kill_when(ready: Callable[[], bool], pid: Callable[[], int | None]) -> int:
    """SIGKILL the process ``pid()`` names as soon as ``ready()``; returns its PID."""
    deadline = time.monotonic() + 300
    while not ready():
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.02)
    target = pid()
    while target is None:  # a lock between its holders' writes (see _holder)
        assert time.monotonic() < deadline, "the process to kill never wrote its PID"
        time.sleep(0.02)
        target = pid()
    os.kill(target, signal.SIGKILL)
    return target


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ray", "auto", "--ray-workers", "2"], "--ray-workers 2: it sets the CPUs of a local Ray instance"),
        (["--ray-workers", "2"], "--ray-workers: only with --ray"),
        (["--ray", "--ray-workers", "0"], "--ray-workers 0: give 1 or more"),
        (["--ray", "--ray-workers", "1", "--cpus-per-cell", "2"], "--cpus-per-cell 2: no node of the Ray cluster"),
    ],
)
def test_ray_options_that_cannot_work_are_named_with_exit_2(
    tmp_path: Path, ray_temp: Path, flags: list[str], message: str
) -> None:
    """Refused before any work (a task asking more than any node has would wait forever)."""
    env = {**os.environ, "RAY_TMPDIR": str(ray_temp), "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run([*SPOGW, "run", str(CLUSTER), "--run-dir", str(tmp_path / "r"), *flags], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "r").exists(), "nothing was touched"


def test_a_cluster_address_where_nothing_answers_stops_with_exit_3(tmp_path: Path) -> None:
    """Before any work: ray.init alone would retry in silence for minutes (measured: over 200 s)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [*SPOGW, "run", str(CLUSTER), "--run-dir", str(tmp_path / "r"), "--ray", f"127.0.0.1:{port}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and f"--ray 127.0.0.1:{port}: no Ray cluster answers there" in result.stderr
    assert not (tmp_path / "r").exists(), "nothing was touched"


@pytest.mark.parametrize(
    ("gpus_per_cell", "node_gpus", "expected"),
    [
        (None, [], 0.0),  # no GPU anywhere: a cell asks for none
        (None, [4.0, 8.0], 1.0),  # the default on a GPU cluster: one per cell
        (0.5, [1.0], 0.5),  # two cells share a GPU
        (2.0, [1.0, 2.0], 2.0),  # the larger node can hold it
        (0.0, [8.0], 0.0),  # a served generator: the cell needs no GPU
    ],
)
def test_gpus_per_cell_is_what_each_task_asks_for(
    gpus_per_cell: float | None, node_gpus: list[float], expected: float
) -> None:
    """`--gpus-per-cell`: the GPUs a cell asks for (its Ray task's num_gpus, harness/cluster.py), the
    default on a cluster with and without GPUs, and a value no live node can hold refused."""
    from spogw.harness.cluster import RayOptions, _check_resources
    from spogw.harness.errors import InputError

    class Cluster:  # the two calls of Ray's API that the check reads
        def __init__(self, gpus: list[float]) -> None:
            self.node_list = [{"Alive": True, "Resources": {"CPU": 4.0, **({"GPU": g} if g else {})}} for g in gpus]
            self.node_list.append({"Alive": False, "Resources": {"CPU": 64.0, "GPU": 64.0}})  # a dead node counts not

        def cluster_resources(self) -> dict[str, float]:
            alive = [n["Resources"] for n in self.node_list if n["Alive"]]
            return {"CPU": sum(r["CPU"] for r in alive), "GPU": sum(r.get("GPU", 0.0) for r in alive)}

        def nodes(self) -> list[dict[str, Any]]:
            return self.node_list

    cluster = Cluster(node_gpus or [0.0])
    assert _check_resources(cluster, RayOptions(gpus_per_cell=gpus_per_cell)) == expected
    with pytest.raises(InputError, match=r"--gpus-per-cell 16: no node of the Ray cluster has that many GPUs"):
        _check_resources(cluster, RayOptions(gpus_per_cell=16.0))
