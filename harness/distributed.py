"""Data-parallel update steps: one cell's training on several processes (GPUs), launched with
`accelerate launch` (or `torchrun`), which sets RANK / WORLD_SIZE / MASTER_ADDR for each process.

The deduplicated GRPO loss is a sum over the step's unique sequences (methods/losses.py,
`SequenceCoefficients`), and a pair step's loss a sum over its pairs: so each rank forwards and
back-propagates its own share of them (`shard`), the gradients are summed across ranks
(`all_reduce_sum`), and every rank then takes the same optimizer step on the same gradient. The
step equals the one-process step up to float rounding (tests/test_distributed.py: 2 gloo ranks
against 1, loss, gradient and adapter within 1e-6). Plain all-reduce rather than DDP's wrapper:
only the LoRA weights have gradients, and the step decides what each rank forwards. An
iteration's reference log-probs are split the same way, each rank's share gathered by every rank
(`gather_objects`; methods/steps.py `reference_cache`).

In one process (the default) every function here is the identity: rank 0 of 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes what is written once (the checkpoints of harness/train.py)."""
        return self.rank == 0


def current_ranks() -> Ranks:
    """This process's rank and the world size of the initialised process group (0 of 1 without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def launched() -> bool:
    """Whether a launcher started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(cpu: bool | None = None) -> Ranks:
    """Join the process group a launcher described (WORLD_SIZE > 1), through accelerate's
    PartialState: NCCL on GPUs, gloo on CPUs (``cpu``: force gloo, for a model kept on the CPU;
    default: the CPU when there is no GPU). Without a launcher: rank 0 of 1, nothing started."""
    if launched():
        import torch.distributed as dist
        from accelerate import PartialState

        if not dist.is_initialized():
            PartialState(cpu=not torch.cuda.is_available() if cpu is None else cpu)
    return current_ranks()


def shard(count: int, ranks: Ranks) -> list[int]:
    """The indices of ``count`` items (a step's unique sequences, or its pairs) that ``ranks.rank``
    computes: round robin, so ranks differ by at most one item."""
    return list(range(ranks.rank, count, ranks.world))


def all_reduce_sum(tensors: Iterable[torch.Tensor], ranks: Ranks) -> None:
    """Sum each tensor across ranks, in place (nothing with one rank)."""
    if ranks.world == 1:
        return
    import torch.distributed as dist

    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def sum_gradients(parameters: Sequence[torch.nn.Parameter], ranks: Ranks) -> None:
    """Sum the trainable parameters' gradients across ranks, in one flat all-reduce. A rank with no
    share of a parameter's gradient contributes zeros; a parameter no rank has a gradient for keeps
    none (AdamW then skips it, as in one process)."""
    if ranks.world == 1 or not parameters:
        return
    device = parameters[0].device
    present = torch.tensor([float(p.grad is not None) for p in parameters], device=device)
    all_reduce_sum([present], ranks)
    counts = present.tolist()
    kept = [p for p, count in zip(parameters, counts, strict=True) if count > 0]
    for parameter, count in zip(parameters, counts, strict=True):
        if count == 0:
            parameter.grad = None
    if not kept:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in kept])
    all_reduce_sum([flat], ranks)
    offset = 0
    for parameter in kept:
        size = parameter.numel()
        parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
        offset += size


def max_float(value: float, ranks: Ranks, device: torch.device | str = "cpu") -> float:
    """The largest of the ranks' values (a step's wall time: the step ends when its slowest rank does)."""
    if ranks.world == 1:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def sum_floats(values: Sequence[float], ranks: Ranks, device: torch.device | str = "cpu") -> list[float]:
    """Per-rank partial sums (a step's loss, token counts) summed across ranks; ``device``: where
    the process group's backend reduces (the GPU for NCCL)."""
    if ranks.world == 1:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    all_reduce_sum([tensor], ranks)
    return tensor.tolist()


def gather_objects(value: T, ranks: Ranks) -> list[T]:
    """Every rank's ``value`` (picklable: a dict of CPU tensors), in rank order, on every rank."""
    if ranks.world == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[T | None] = [None] * ranks.world
    dist.all_gather_object(gathered, value)
    return [v for v in gathered if v is not None]


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (nothing with one)."""
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()


def on_main(action: Callable[[], T], ranks: Ranks) -> T | None:
    """Run ``action`` (writing an adapter, a store row) on rank 0 only, then wait for every rank:
    what is written once is complete before any rank goes on. None on the other ranks."""
    result = action() if ranks.main else None
    barrier(ranks)
    return result
