"""Benchmark items, deterministic splits and the scorer interface."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from spogw.harness.errors import InputError
from spogw.harness.workflows.sandbox import Sandbox


@dataclass(frozen=True)
class SimTraits:
    """What the simulated executor knows about an item (docs/simulator.md)."""

    difficulty: float
    """Latent difficulty d: a call is correct with probability sigmoid(skill + bonus - d)."""
    computational: bool
    """Whether writing and running a program (Programmer) helps on this item."""
    correct: str
    """The correct answer in the form a model writes it (number, function source, short text)."""
    distractors: tuple[str, ...]
    """Wrong answers a model tends to give, most likely first; shared across calls so errors correlate."""
    has_public_tests: bool = False
    kind: str = ""
    """The class of the question that its text shows (gsm_synth: large_numbers | small_numbers;
    humaneval: short_spec | long_spec; qa_synth: single_hop | bridge). The profile's style bonuses
    key on it, which is what makes the best workflow depend on the question (docs/simulator.md)."""


@dataclass(frozen=True)
class Item:
    id: str
    domain: str
    """math | code | qa: picks the operator set, the answer extraction and the scorer."""
    question: str
    """What the generator and the operators see."""
    answer: str
    """The reference answer (for code: the canonical solution)."""
    entry_point: str | None = None
    test: str | None = None
    context: str = ""
    """Code an answer runs with (HumanEval: the prompt's imports, helpers and stub); empty when the
    question is prose (harness/benchmarks/programs.py)."""
    sim: SimTraits | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


Scorer = Callable[[Item, str, Sandbox], Awaitable[float]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    domain: str
    items: tuple[Item, ...]
    scorer: Scorer
    source: str
    """Where the items came from (file, package, generator and seed), for reports."""

    def split(self, which: str, test_fraction: float, seed: int, validation_fraction: float = 0.0) -> list[Item]:
        """The train, validation or test part of a deterministic shuffle (same seed, same items, any
        machine): the first ``test_fraction`` of the shuffle is test, the next ``validation_fraction``
        validation, the rest train. With no validation, train and test are as before it existed."""
        order = sorted(self.items, key=lambda item: _stable_key(seed, item.id))
        n_test = round(len(order) * test_fraction)
        n_test = min(max(n_test, 1), len(order) - 1) if len(order) > 1 else len(order)
        n_validation = min(round(len(order) * validation_fraction), len(order) - n_test - 1)
        if validation_fraction > 0 and n_validation < 1:
            raise InputError(f"validation_fraction {validation_fraction} leaves no validation item of {len(order)}")
        if which == "test":
            return order[:n_test]
        if which == "validation":
            return order[n_test : n_test + n_validation]
        if which == "train":
            return order[n_test + max(n_validation, 0) :]
        raise InputError(f"split must be 'train', 'validation' or 'test', got {which!r}")

    async def score(self, item: Item, answer: str | None, sandbox: Sandbox) -> float:
        if answer is None:
            return 0.0
        return await self.scorer(item, answer, sandbox)


def _stable_key(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def seeded_rng(*parts: object) -> random.Random:
    """A Random seeded by a stable hash of ``parts`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))
