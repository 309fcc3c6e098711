"""Data-parallel update steps (harness/distributed.py): one step on 2 gloo ranks, launched as
`accelerate launch` / torchrun launch them, equals the step on 1 rank (loss, gradient, adapter)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


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


def test_spogw_run_under_a_launcher_is_refused(tmp_path: Path) -> None:
    """Only the update step is data-parallel yet: a whole run per rank would collect and pay twice."""
    env = {**__import__("os").environ, "WORLD_SIZE": "2", "RANK": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "spogw.harness.cli", "run", "tests/data/runner_small.yaml", "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and "started by a launcher (WORLD_SIZE > 1)" in result.stderr, result.stderr
