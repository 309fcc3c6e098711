"""FSDP2 for one cell trained on several GPUs (`generator.training.sharding: fsdp`).

Under `replicate` (the default) every rank of a launch holds the whole base model: a 7B model in
bf16 fits one 80 GB GPU, a 70B one does not. Under `fsdp` each rank holds 1/N of the frozen base
weights: torch's FSDP2 `fully_shard` on every decoder layer (the model's ``_no_split_modules``, the
unit transformers and accelerate shard by) and on the root module; a layer's weights are
all-gathered for its forward and backward and freed after. The LoRA weights are left out of FSDP
(``ignored_params``): every rank holds the whole adapter, their gradients are summed by
harness/distributed.py exactly as under `replicate`, and rank 0 saves, digests and serves the
adapter alone, without a collective. The math of a step is unchanged (the gathered weights are the
weights): tests/test_distributed.py checks the 2-rank FSDP step against the 1-rank step within 1e-6.

What sharding costs: a forward of a sharded model is a collective, so every rank must run it.
- The update steps are run by every rank; a rank whose share has fewer micro-batches than another
  rank's runs passes that change nothing (methods/steps.py, `Policy.collective_forwards`).
- The forwards rank 0 runs alone (the teacher-forced old log-probs of a served collection, the
  served adapter's canary) are mirrored: `LoneForwards` counts them in the cell's sync folder
  before each one starts, and the other ranks, while they wait for rank 0 (harness/launch.py),
  run one forward of their own for each: a forward's all-gathers are those of the layers' weights,
  whatever the input, so a one-token forward matches any of rank 0's.
- Sampling in this process (backend `hf`) would be a `generate` of rank 0 alone, hundreds of
  forwards: `fsdp` needs a served generator (backend `vllm_server`), which the config checks.

Source: torch.distributed.fsdp.fully_shard (FSDP2, per-parameter DTensor sharding); the layer
choice follows transformers' ``_no_split_modules`` as accelerate's FSDP auto-wrap policy does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from spogw.harness.distributed import Ranks

if TYPE_CHECKING:
    from spogw.harness.config import GeneratorConfig
    from spogw.harness.launch import CollectionSync
    from spogw.harness.policy.model import Generator


def lora_parameters(model: torch.nn.Module) -> set[torch.nn.Parameter]:
    """The trainable parameters (the LoRA adapter's): kept whole on every rank."""
    return {p for p in model.parameters() if p.requires_grad}


def shard_base_model(model: Any, ranks: Ranks, device: str) -> torch.nn.Module:
    """Shard the frozen base weights of ``model`` (a peft model, loaded on the CPU) over the
    ``ranks.world`` ranks of the initialised process group with FSDP2, in place, onto ``device``:
    one decoder layer at a time is moved there whole and sharded, so no rank ever holds the whole
    model on its GPU. The adapter is moved whole. Returns the sharded root (the causal LM inside the
    peft wrappers), whose forward every rank must run. Raises ValueError for a model without
    ``_no_split_modules`` (no decoder layer to shard by)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    root = model.get_base_model()
    layer_names = set(getattr(root, "_no_split_modules", None) or ())
    layers = [m for m in root.modules() if type(m).__name__ in layer_names]
    if not layers:
        raise ValueError(f"{type(root).__name__} names no decoder layer (_no_split_modules): nothing to shard by")
    mesh = init_device_mesh(torch.device(device).type, (ranks.world,))  # the default group: no collective
    adapter = lora_parameters(model)
    for layer in layers:  # each decoder layer, then the root, which manages what is left (embeddings, head)
        fully_shard(layer, mesh=mesh, ignored_params=adapter & set(layer.parameters()))
    # resharded after every forward, the root too (FSDP2 keeps the root's weights gathered by default
    # until a backward): rank 0 alone reads state_dict() to save adapters, which reshards a gathered
    # root on that rank only, and its next forward would then gather what the other ranks still hold
    fully_shard(root, mesh=mesh, ignored_params=adapter, reshard_after_forward=True)
    with torch.no_grad():  # FSDP moves what it manages; the adapter it ignores
        for parameter in adapter:
            parameter.data = parameter.data.to(mesh.device_type)
    return root


def held_elements(model: torch.nn.Module) -> tuple[int, int]:
    """(elements this rank holds, elements of the whole model): a sharded parameter counts its
    local shard, a whole one (the adapter, an unsharded model) all of itself."""
    from torch.distributed.tensor import DTensor

    held = whole = 0
    for parameter in model.parameters():
        whole += parameter.numel()
        held += parameter.to_local().numel() if isinstance(parameter, DTensor) else parameter.numel()
    return held, whole


class LoneForwards:
    """Rank 0's forwards outside the update steps, each announced so that the other ranks join it.

    Installed as hooks on the sharded root, ahead of FSDP's own (``prepend``): before a forward of
    rank 0 that is not inside `together`, ``announce(n)`` says that n such forwards have started
    (harness/launch.py writes it to the cell's sync folder), then FSDP's all-gathers wait for the
    other ranks' mirror forward. One at a time (a lock held from the hook before to the hook after):
    rank 0's sampler threads must not interleave two forwards' all-gathers. Without gradients only:
    a mirror forward has no backward to match."""

    def __init__(self, root: torch.nn.Module, ranks: Ranks, announce: Callable[[int], None]) -> None:
        self.ranks = ranks
        self.count = 0
        self._announce = announce
        self._together = 0
        self._lock = threading.Lock()
        self._held = threading.local()
        self._handles = [
            root.register_forward_pre_hook(self._before, prepend=True),
            root.register_forward_hook(self._after, always_call=True),
        ]

    def _alone(self) -> bool:
        return self.ranks.main and self.ranks.world > 1 and self._together == 0

    def _before(self, module: torch.nn.Module, args: Any) -> None:
        if not self._alone():
            return
        if torch.is_grad_enabled():
            raise RuntimeError(
                "a forward of the sharded generator on rank 0 alone needs torch.no_grad(): the other ranks "
                "mirror it without a backward (harness/sharding.py)"
            )
        self._lock.acquire()
        self._held.value = True
        self.count += 1
        self._announce(self.count)

    def _after(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if getattr(self._held, "value", False):
            self._held.value = False
            self._lock.release()

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Inside, every rank runs the same forwards (the update steps): none is announced."""
        self._together += 1
        try:
            yield
        finally:
            self._together -= 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def mirror_forward(root: torch.nn.Module) -> Callable[[], None]:
    """What a rank other than 0 runs for each of rank 0's lone forwards: one forward of one token,
    no gradients (its all-gathers are those of any forward of the sharded model). In eval mode: LoRA
    dropout would draw from this rank's random stream, and how many mirrors run before an update
    depends on what rank 0 had left to collect (a resumed launch fewer), so the update's dropout
    masks would depend on the resume. On this rank's GPU: the mirrors run in a worker thread, whose
    current CUDA device is not the one the launcher set for the main thread."""
    device = next(root.parameters()).device
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()

    def forward() -> None:
        training = root.training
        root.eval()
        try:
            with on_device, torch.no_grad():
                root(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device))
        finally:
            root.train(training)

    return forward


def launch_ranks(config: GeneratorConfig, sync: CollectionSync | None, notice: Callable[[str], None]) -> Ranks | None:
    """The ranks to shard the base model over: the launch's, with `generator.training.sharding:
    fsdp` (``sync``: the cell's, None in one process); None: held whole. One process with `fsdp`
    says so through ``notice`` (the run's log): there is nothing to shard over."""
    if config.training.sharding != "fsdp":
        return None
    if sync is None:
        notice(
            "generator.training.sharding is fsdp, but this is one process: it holds the base model whole "
            "(fsdp shards it over the ranks of `accelerate launch` / torchrun, docs/gpu.md)"
        )
        return None
    return sync.ranks


def mirror_lone_forwards(generator: Generator, sync: CollectionSync) -> None:
    """Wire a sharded generator's lone forwards to the cell's sync folder (harness/launch.py): rank 0
    announces each, the other ranks run `mirror_forward` for each while they wait."""
    root = generator.model.get_base_model()
    if sync.ranks.main:
        generator.lone_forwards = LoneForwards(root, sync.ranks, sync.announce_forward)
    else:
        sync.mirror = mirror_forward(root)


def describe(model: torch.nn.Module, ranks: Ranks) -> str:
    """One line for the run's log: how much of the model this rank holds."""
    held, whole = held_elements(model)
    return (
        f"the generator's base weights are sharded with FSDP2 over {ranks.world} ranks: rank {ranks.rank} holds "
        f"{held:,} of its {whole:,} weights"
    )
