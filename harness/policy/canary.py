"""Which model answers for a served adapter (harness/policy/served.py): the canary's verdict, and the
digest that says when the trainable adapter changed.

The canary compares the server's log-probs of a greedy completion with the trainer's own, with the
adapter and without it; the server's kernels differ from the trainer's (bf16: ~0.02 nats), so the
verdict is only given where the adapter moves the canary by more than that noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CANARY_QUESTION = "A shop sells 3 pens for 2 dollars. How much do 12 pens cost?"
CANARY_TOKENS = 16
INDISTINGUISHABLE = 1e-3
"""Log-prob difference (nats) between the adapter and the base model that no kernel noise explains."""
NOISE_FACTOR = 3.0
"""An adapter is told from the base model only where it moves the canary's log-probs by more than
NOISE_FACTOR x the server's noise (its base model against the trainer's base model, measured once)
plus INDISTINGUISHABLE; below that the canary cannot decide and passes, noted in served.jsonl."""


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class CanaryResult:
    """The canary after a load: greedy tokens of a fixed prompt from the server under the new
    name, and the largest log-prob distances (nats) of the server's values from the trainer's with
    the adapter (``to_adapter``) and without it (``to_base``), between the trainer's two
    (``adapter_vs_base``), and the server's noise floor (``noise``: its base model against the
    trainer's, on the base model's own greedy tokens)."""

    adapter: str
    to_adapter: float
    to_base: float
    adapter_vs_base: float
    noise: float

    @property
    def decided(self) -> bool:
        """Whether the adapter moves the canary by more than the noise explains."""
        return self.adapter_vs_base > NOISE_FACTOR * self.noise + INDISTINGUISHABLE

    @property
    def passed(self) -> bool:
        """The server's values are closer to the adapter's than to the base model's (or the canary
        cannot decide)."""
        return not self.decided or self.to_adapter < self.to_base


def canary_verdict(
    served: Sequence[float], with_adapter: Sequence[float], base: Sequence[float], name: str, noise: float = 0.0
) -> CanaryResult:
    """Which model answered: the served log-probs of the canary's tokens against the trainer's
    teacher-forced ones with the adapter and without it (T = 1, the raw log-probs vLLM reports by
    default). ValueError unless the three have the same non-zero length."""
    if not (len(served) == len(with_adapter) == len(base)) or not served:
        raise ValueError("the canary needs the same non-zero number of log-probs from each model")
    return CanaryResult(
        name, distance(served, with_adapter), distance(served, base), distance(with_adapter, base), noise
    )


def adapter_digest(model: Any) -> str | None:
    """sha256 of the trainable adapter's weights (name, dtype, shape, bytes, in name order); None
    when every LoRA B matrix is zero: the adapter is the identity and the base model is served."""
    import torch
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name="default")
    if all(not torch.any(t) for k, t in state.items() if "lora_B" in k):
        return None
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
