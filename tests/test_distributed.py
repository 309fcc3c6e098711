"""Data-parallel update steps (harness/distributed.py): one step on 2 gloo ranks, launched as
`accelerate launch` / torchrun launch them, equals the step on 1 rank (loss, gradient, adapter)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPOGW = [sys.executable, "-m", "spogw.harness.cli"]

ADAPTER_TOLERANCE = 1e-4
"""How far a cell's adapter trained on 2 ranks may be from the one-process cell's (runner_small:
learning rate 1e-3, a few AdamW steps). AdamW moves an element by lr * g / (|g| + eps) on its
first step, so near g = 0 a difference of d in the gradient moves it by up to d * lr / eps = 1e5 d:
the float rounding of another summation order (5e-11 on a gradient element) becomes 5e-6. Measured
in one suite run of the FSDP cell: 4.7e-6 at iteration 1 on 1 element of 14,336 (17 more over
1e-7), an element that moved 6.5e-4 in two steps, a third of AdamW's full move of lr per step, so
its gradient was of the order of eps; under 1e-6 in other runs. A tenth of one
step's move (lr) is far above that and far below what a wrong gradient does, which moves elements
by about lr. The scale of the gradients is checked by grad_norm (`_same_steps`), which AdamW's
update cannot show; the one-step test checks the gradient itself within 1e-6."""


def _same_steps(alone: list[dict[str, float]], shared: list[dict[str, float]]) -> None:
    """The step metrics of two runs of one cell: within 1e-6, grad_norm within a relative 1e-5."""
    assert any(step["grad_norm"] > 0.0 for step in alone), "a step with a gradient to compare"
    for a, b in zip(alone, shared, strict=True):
        assert a.keys() == b.keys()
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
        assert {k: v for k, v in b.items() if k != "grad_norm"} == pytest.approx(
            {k: v for k, v in a.items() if k != "grad_norm"}, abs=1e-6
        )


def _step(out: Path, kind: str, ranks: int, micro_batch: int = 0, sharding: str = "") -> dict[str, Any]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={port}"]
    result = subprocess.run(
        [*command, "tests/distributed_step.py", str(out), kind, str(micro_batch), sharding],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
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
    ("kind", "ranks", "micro_batch", "sharding"),
    [
        ("groups", 2, 0, ""),
        ("pairs", 2, 0, ""),
        ("groups", 3, 2, ""),  # 3 ranks: uneven shares, in micro-batches of 2
        ("groups", 2, 0, "fsdp"),  # the base weights sharded with FSDP2 (harness/sharding.py)
        ("pairs", 2, 2, "fsdp"),  # 7 pairs, one per pass: rank 1 runs 3 passes and one idle pass
    ],
)
def test_several_ranks_take_the_one_rank_step(
    one_rank: dict[str, Path], tmp_path: Path, kind: str, ranks: int, micro_batch: int, sharding: str
) -> None:
    """Also under FSDP2: the step, and a forward rank 0 runs alone (mirrored by the other rank),
    equal the unsharded 1-rank values; a rank with fewer passes joins the others' with idle ones."""
    from safetensors.torch import load_file

    from spogw.harness.distributed import Ranks
    from spogw.methods.steps import idle_passes

    one = json.loads((one_rank[kind] / "metrics.json").read_text())
    two = _step(tmp_path / "two", kind, ranks, micro_batch, sharding)
    assert two["sharding"] == sharding and two["sequences"] == one["sequences"]
    if (kind, sharding) == ("pairs", "fsdp"):
        assert idle_passes(one["sequences"], micro_batch // 2, Ranks(1, 2)) == 1, "the case has an idle pass"
    assert max(abs(a - b) for a, b in zip(one["lone"], two["lone"], strict=True)) <= 1e-6
    # each rank computed its share of the reference log-probs; every rank holds them all, as 1 rank
    assert len(two["reference"]) == len(one["reference"]) == one["sequences"] or kind == "pairs"
    assert max(abs(a - b) for a, b in zip(one["reference"], two["reference"], strict=True)) <= 1e-5
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6) and one["loss"] != 0.0
    for metric in ("policy_term", "kl_term", "clip_fraction", "reward_margin", "pairs"):
        if metric in one:
            assert two[metric] == pytest.approx(one[metric], abs=1e-6), metric
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5) and one["grad_norm"] > 0.0
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


def test_idle_passes_equalise_the_ranks_passes_by_hand() -> None:
    """Under FSDP every rank runs as many micro-batch passes as the busiest: 7 items over 2 ranks are
    4 and 3 (round robin), in passes of 1: rank 1 adds 1; in passes of 2: 2 and 2, none; 2 items over
    3 ranks in passes of 4: rank 2 has none of its own and adds 1."""
    from spogw.harness.distributed import Ranks
    from spogw.methods.steps import idle_passes

    assert [idle_passes(7, 1, Ranks(r, 2)) for r in range(2)] == [0, 1]
    assert [idle_passes(7, 2, Ranks(r, 2)) for r in range(2)] == [0, 0]
    assert [idle_passes(2, 4, Ranks(r, 3)) for r in range(3)] == [0, 0, 1]
    assert [idle_passes(10, 3, Ranks(r, 3)) for r in range(3)] == [0, 1, 1]  # shares 4, 3, 3: passes 2, 1, 1
    assert idle_passes(5, 0, Ranks(1, 2)) == 0  # passes of 0: each rank's share at once


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
    equal the one-process run's; the losses within 1e-6, the adapters within ADAPTER_TOLERANCE."""
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
        for iteration in (0, 1):  # the workflows sampled by the (nearly equal) adapters are the same
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
    _same_steps(*steps)
    for iteration in (1,):
        saved = Path("checkpoints", "spogw", "seed0", f"iter{iteration}", "adapter_model.safetensors")
        adapters = [load_file(folder / saved) for folder in (one, two)]
        assert adapters[0].keys() == adapters[1].keys()
        difference = max(float((adapters[0][k] - adapters[1][k]).abs().max()) for k in adapters[0])
        print(f"iteration {iteration}: adapter max difference {difference:.2e}")
        assert difference < ADAPTER_TOLERANCE


@pytest.mark.slow
def test_a_cell_sharded_with_fsdp_equals_the_one_process_cell_and_resumes(
    spogw_cache: Path, standard_tiny: Path, tmp_path: Path
) -> None:
    """`generator.training.sharding: fsdp` under a 2-rank launch, the generator served by the vLLM
    stand-in: each rank holds half the base weights; rank 0's lone forwards (old log-probs of the
    served collection, the adapter's canary) are mirrored by rank 1. Rank 0 is killed (SIGKILL)
    while it collects iteration 1, and the launch run again resumes from the checkpoint of
    iteration 1, loaded into the sharded model on both ranks, and trains on from it. The tables
    equal the one-process run's; the steps within 1e-6, the adapters within ADAPTER_TOLERANCE."""
    import dataclasses

    from safetensors.torch import load_file

    from spogw.harness.store import SQLiteStore
    from tests.chaos import run_tables
    from tests.conftest import standin_process

    one, two = tmp_path / "one", tmp_path / "two"
    with standin_process("standard", "tiny-std") as url:
        settings = [f"generator.base_url={url}", "generator.backend=vllm_server", "generator.decoding=free",
                    "generator.tiny_recipe=standard", "generator.server.served_model=tiny-std",
                    "generator.training.sharding=fsdp", "generator.lora.dropout=0.0", "iterations=2",
                    "evaluation.collect_final=true"]  # fmt: skip
        arguments = [arg for setting in settings for arg in ("--set", setting)] + ["--methods", "spogw", "--seeds", "0"]
        experiment = ["-m", "spogw.harness.cli", "run", "tests/data/runner_small.yaml", "--quiet", *arguments]
        result = subprocess.run([sys.executable, *experiment, "--run-dir", str(one)],
                                cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "this is one process: it holds the base model whole" in (one / "run.log").read_text()
        for kill in ("store.rollouts=2", ""):  # iteration 1's collection, after the checkpoint of iteration 1
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
            result = subprocess.run([*launcher, *experiment, "--run-dir", str(two)], cwd=REPO, capture_output=True,
                                    text=True, timeout=600, env={**os.environ, "SPOGW_FAILPOINTS": kill})  # fmt: skip
            assert (result.returncode != 0) == bool(kill), result.stdout[-2000:] + result.stderr[-3000:]
            if kill:
                assert (two / "checkpoints" / "spogw" / "seed0" / "iter1").is_dir(), "killed after the checkpoint"
    log = (two / "run.log").read_text()
    assert "sharded with FSDP2 over 2 ranks: rank 0 holds" in log
    counts = log.split("rank 0 holds ")[-1].split(" weights")[0].split(" of its ")
    held, whole = (int(n.replace(",", "")) for n in counts)
    assert held < 0.6 * whole, "rank 0 holds about half the base weights (the adapter whole)"
    mirrored = sorted((two / "cells").glob("*/.sync/*/forwards"))
    assert mirrored and int(mirrored[-1].read_text()) > 12, "the 12 old log-probs and the canary, mirrored"
    tables = {name: run_tables(folder) for name, folder in (("one", one), ("two", two))}
    for table in ("eval_items", "groups", "iterations"):
        assert tables["two"][table] == tables["one"][table], table
    with SQLiteStore(one / "rollouts.sqlite") as alone, SQLiteStore(two / "rollouts.sqlite") as shared:
        for iteration in (0, 1, 2):
            rows = [store.get("runner_small", "spogw", 0, iteration) for store in (alone, shared)]
            assert len(rows[0]) == len(rows[1]) > 0
            for a, b in zip(*rows, strict=True):
                assert dataclasses.replace(a, old_logp=(), sampler_logp_diff=None, wall_s=0.0) == dataclasses.replace(
                    b, old_logp=(), sampler_logp_diff=None, wall_s=0.0
                )
                assert b.old_logp == pytest.approx(a.old_logp, abs=1e-5)
    steps = [[json.loads(row[4]) for row in tables[name]["steps"]] for name in ("one", "two")]
    assert len(steps[0]) == len(steps[1]) > 0 and any(abs(step["loss"]) > 1e-4 for step in steps[0])
    _same_steps(*steps)
    assert len(steps[0]) == 4, "two steps in each of the two iterations, the second after the resume"
    for iteration in (1, 2):
        saved = Path("checkpoints", "spogw", "seed0", f"iter{iteration}", "adapter_model.safetensors")
        adapters = [load_file(folder / saved) for folder in (one, two)]
        difference = max(float((adapters[0][k] - adapters[1][k]).abs().max()) for k in adapters[0])
        print(f"iteration {iteration}: adapter max difference {difference:.2e}")
        assert difference < ADAPTER_TOLERANCE


def test_fsdp_needs_a_served_generator_and_names_the_field() -> None:
    """A sharded model cannot sample on rank 0 alone: `fsdp` with the in-process sampler is refused
    when the file is read, naming the file and the field; an unknown sharding names the choices."""
    from spogw.harness.config import ConfigError, load_experiment

    small = REPO / "tests" / "data" / "runner_small.yaml"
    with pytest.raises(ConfigError, match=r"runner_small.yaml[\s\S]*generator[\s\S]*training.sharding 'fsdp' needs "
                       r"backend 'vllm_server'"):  # fmt: skip
        load_experiment(small, ["generator.training.sharding=fsdp"])
    with pytest.raises(ConfigError, match=r"generator.training.sharding[\s\S]*'replicate' or 'fsdp'"):
        load_experiment(small, ["generator.training.sharding=zero3"])
    served = ["generator.backend=vllm_server", "generator.base_url=http://127.0.0.1:1/v1", "generator.decoding=free"]
    assert load_experiment(small, [*served, "generator.training.sharding=fsdp"]).generator.training.sharding == "fsdp"


def test_lone_forwards_are_announced_one_at_a_time_and_only_without_gradients() -> None:
    """Rank 0's forwards outside `together` are counted before they start (the other ranks mirror
    each); inside `together` (the update steps) and on other ranks nothing is announced; a lone
    forward with gradients has no backward to mirror and is refused; a forward that raises still
    lets the next one start."""
    from spogw.harness.distributed import Ranks
    from spogw.harness.sharding import LoneForwards

    class Root(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.isnan(x).any():
                raise ValueError("bad input")
            return self.linear(x)

    root, said, other = Root(), [], []
    lone = LoneForwards(root, Ranks(0, 2), said.append)
    LoneForwards(root, Ranks(1, 2), other.append)
    with torch.no_grad():
        root(torch.ones(1, 2))
        with lone.together():
            root(torch.ones(1, 2))
        with pytest.raises(ValueError, match="bad input"):
            root(torch.full((1, 2), float("nan")))
        root(torch.ones(1, 2))  # the lock was released by the forward that raised
    with pytest.raises(RuntimeError, match=r"needs torch.no_grad\(\)"):
        root(torch.ones(1, 2))
    with lone.together():
        root(torch.ones(1, 2)).sum().backward()  # every rank runs this one: gradients allowed
    assert said == [1, 2, 3] and other == [] and lone.count == 3


def test_a_mirror_forward_draws_no_random_numbers_and_keeps_the_mode(spogw_cache: Path) -> None:
    """A follower's mirror runs in eval mode: in train mode LoRA dropout would draw from the rank's
    random stream, and the number of mirrors before an update differs between a resumed launch and
    an uninterrupted one, so the update's dropout masks would too."""
    from spogw.harness.config import GeneratorConfig
    from spogw.harness.policy.model import load_generator
    from spogw.harness.sharding import mirror_forward

    generator = load_generator(GeneratorConfig(tiny_recipe="test"), device="cpu", progress=False)
    root = generator.model.get_base_model()
    generator.model.train()
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in root.modules()), "LoRA dropout is on"
    state = torch.get_rng_state()
    mirror_forward(root)()
    assert torch.equal(torch.get_rng_state(), state) and root.training


def test_a_follower_mirrors_every_announced_forward_before_the_event_it_waits_for(tmp_path: Path) -> None:
    """The follower side of harness/launch.py: while it waits for a collection, each lone forward
    rank 0 announced is mirrored once; after its last update it mirrors until rank 0 ends."""
    import threading

    from spogw.harness.distributed import Ranks
    from spogw.harness.launch import CollectionSync

    mirrored: list[int] = []
    leader = CollectionSync(tmp_path, "t", Ranks(0, 2))
    follower = CollectionSync(tmp_path, "t", Ranks(1, 2), mirror=lambda: mirrored.append(1))
    waiting = threading.Thread(target=follower.wait, args=(0, 0))
    waiting.start()
    for count in (1, 2, 3):
        leader.announce_forward(count)
        deadline = time.monotonic() + 10  # rank 0's forward ends when the follower joined it
        while len(mirrored) < count and time.monotonic() < deadline:
            time.sleep(0.001)
    leader.published(0, 0)
    waiting.join(10)
    assert not waiting.is_alive() and len(mirrored) == 3
    ending = threading.Thread(target=follower.mirror_until_ended)
    ending.start()
    leader.announce_forward(4)
    deadline = time.monotonic() + 10
    while len(mirrored) < 4 and time.monotonic() < deadline:
        time.sleep(0.001)
    leader.ended()
    ending.join(10)
    assert not ending.is_alive() and len(mirrored) == 4
