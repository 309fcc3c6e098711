"""Data-parallel update steps (harness/distributed.py): one step on 2 gloo ranks, launched as
`accelerate launch` / torchrun launch them, equals the step on 1 rank (loss, gradient, adapter)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPOGW = [sys.executable, "-m", "spogw.harness.cli"]


def _step(out: Path, kind: str, ranks: int, micro_batch: int = 0) -> dict[str, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={port}"]
    result = subprocess.run(
        [*command, "tests/distributed_step.py", str(out), kind, str(micro_batch)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics: dict[str, float] = json.loads((out / "metrics.json").read_text())
    assert metrics["world"] == ranks
    return metrics


@pytest.fixture(scope="module")
def one_rank(spogw_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The one-rank step of each kind, run once for every comparison with it."""
    out = tmp_path_factory.mktemp("one-rank")
    for kind in ("groups", "pairs"):
        _step(out / kind, kind, 1)
    return {kind: out / kind for kind in ("groups", "pairs")}


@pytest.mark.parametrize(
    ("kind", "ranks", "micro_batch"),
    [("groups", 2, 0), ("pairs", 2, 0), ("groups", 3, 2)],  # 3 ranks: uneven shares, in micro-batches of 2
)
def test_several_ranks_take_the_one_rank_step(
    one_rank: dict[str, Path], tmp_path: Path, kind: str, ranks: int, micro_batch: int
) -> None:
    from safetensors.torch import load_file

    one = json.loads((one_rank[kind] / "metrics.json").read_text())
    two = _step(tmp_path / "two", kind, ranks, micro_batch)
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6) and one["loss"] != 0.0
    for metric in ("policy_term", "kl_term", "clip_fraction", "reward_margin", "pairs"):
        if metric in one:
            assert two[metric] == pytest.approx(one[metric], abs=1e-6), metric
    gradient_one, gradient_two = (
        torch.load(one_rank[kind] / "gradient.pt"),
        torch.load(tmp_path / "two" / "gradient.pt"),
    )
    assert gradient_one.abs().max() > 1e-3, "the step has a gradient to compare"
    assert (gradient_one - gradient_two).abs().max() <= 1e-6
    adapter_one = load_file(one_rank[kind] / "adapter" / "adapter_model.safetensors")
    adapter_two = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert adapter_one.keys() == adapter_two.keys()
    assert max(float((adapter_one[k] - adapter_two[k]).abs().max()) for k in adapter_one) <= 1e-6
    assert not list((tmp_path / "two").glob(".adapter.saving-*")), "written once, atomically, by rank 0"


def test_one_process_is_rank_zero_of_one() -> None:
    from spogw.harness.distributed import Ranks, current_ranks, init_from_environment, on_main, shard, sum_floats

    assert current_ranks() == init_from_environment() == Ranks(0, 1)
    assert shard(5, Ranks(0, 1)) == [0, 1, 2, 3, 4]
    assert shard(5, Ranks(1, 2)) == [1, 3] and shard(5, Ranks(0, 2)) == [0, 2, 4]
    assert sum_floats([1.5, 2.0], Ranks()) == [1.5, 2.0]
    assert on_main(lambda: 7, Ranks()) == 7


def test_a_launch_must_select_one_trained_cell_and_sweeps_are_refused(tmp_path: Path) -> None:
    """Every rank of a launch runs the command: without one trained cell, they would each run the
    whole experiment (collect, pay for the executor, write the folder): exit 2, nothing touched."""
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0"}
    for extra in ([], ["--methods", "cot", "--seeds", "0"], ["--methods", "spogw", "--seeds", "0", "--ray"]):
        result = subprocess.run(
            [*SPOGW, "run", "tests/data/runner_small.yaml", "--run-dir", str(tmp_path / "run"), *extra],
            cwd=REPO, capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2 and "a launch trains one cell" in result.stderr, (extra, result.stderr)
    assert not (tmp_path / "run").exists()
    result = subprocess.run([*SPOGW, "sweep", "experiments/sweep_spogw.yaml", "--run-dir", str(tmp_path / "sweep")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "started by a launcher" in result.stderr, result.stderr


@pytest.mark.slow
def test_a_cell_trained_on_two_ranks_equals_the_one_process_cell(spogw_cache: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m spogw.harness.cli run ... --methods spogw --seeds 0`: rank 0
    collects, evaluates and writes; both ranks train. LoRA dropout off (the ranks would draw other
    masks than one process: equal in distribution, not in value). The collected and evaluated rows
    equal the one-process run's; the losses and the adapters within 1e-6."""
    import dataclasses

    from safetensors.torch import load_file

    from spogw.harness.store import SQLiteStore
    from tests.chaos import run_tables

    settings = [
        "--set",
        "generator.lora.dropout=0.0",
        "--set",
        "iterations=1",
        "--set",
        "evaluation.collect_final=true",
    ]
    settings += ["--methods", "spogw", "--seeds", "0"]  # one update iteration; the final collection by its adapter
    one, two = tmp_path / "one", tmp_path / "two"
    result = subprocess.run([*SPOGW, "run", "tests/data/runner_small.yaml", "--run-dir", str(one), "--quiet",
                             *settings], cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    result = subprocess.run([*launcher, "-m", "spogw.harness.cli", "run", "tests/data/runner_small.yaml",
                             "--run-dir", str(two), "--quiet", *settings],
                            cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    tables = {name: run_tables(folder) for name, folder in (("one", one), ("two", two))}
    for table in ("eval_items", "groups"):
        assert tables["two"][table] == tables["one"][table], table
    with SQLiteStore(one / "rollouts.sqlite") as alone, SQLiteStore(two / "rollouts.sqlite") as shared:
        for iteration in (0, 1):  # the workflows sampled by the adapters (within 1e-6) are the same
            rows = [store.get("runner_small", "spogw", 0, iteration) for store in (alone, shared)]
            assert len(rows[0]) == len(rows[1]) > 0
            for a, b in zip(*rows, strict=True):
                assert dataclasses.replace(a, old_logp=(), wall_s=0.0) == dataclasses.replace(
                    b, old_logp=(), wall_s=0.0
                )
                assert b.old_logp == pytest.approx(a.old_logp, abs=1e-5)  # exact at iteration 0
                assert iteration > 0 or a.old_logp == b.old_logp
    steps = [[json.loads(row[4]) for row in tables[name]["steps"]] for name in ("one", "two")]
    assert len(steps[0]) == len(steps[1]) > 0
    for alone, shared in zip(*steps, strict=True):
        assert shared == pytest.approx(alone, abs=1e-6)
    for iteration in (1,):
        saved = Path("checkpoints", "spogw", "seed0", f"iter{iteration}", "adapter_model.safetensors")
        adapters = [load_file(folder / saved) for folder in (one, two)]
        assert adapters[0].keys() == adapters[1].keys()
        difference = max(float((adapters[0][k] - adapters[1][k]).abs().max()) for k in adapters[0])
        print(f"iteration {iteration}: adapter max difference {difference:.2e}")
        assert difference < 1e-6
