"""The one record that flows from collection to every method, and where it is kept.

The key (experiment, method, seed, iteration, query_id, sample_idx) is unique: writing is
idempotent, so a collection that stops half-way resumes without loss or duplicates. This module
holds the in-memory store; the runner's durable SQLite store implements the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

RolloutKey = tuple[str, str, int, int, str, int]


@dataclass(frozen=True)
class Rollout:
    experiment: str
    method: str
    seed: int
    iteration: int
    query_id: str
    sample_idx: int
    prompt: str
    workflow_code: str | None
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    old_logp: tuple[float, ...]
    """Per completion token, under the policy that sampled it."""
    status: str
    """ok | invalid | timeout | runtime_error | infra_error (of the workflow, over its repeats)."""
    reason: str
    score: float | None
    """Mean over the scorable repeats; None when every repeat was an infra_error."""
    score_repeats: tuple[float | None, ...]
    executor_calls: int
    executor_tokens: int
    wall_s: float
    structure: str = ""
    """The workflow's operator structure (harness.workflows.structure), '' if invalid."""
    benchmark: str = ""
    """Name of the benchmark the question belongs to."""
    sampler_logp_diff: float | None = None
    """Largest |server log-prob - old_logp| over the completion's tokens when a vLLM server sampled
    it (a diagnostic of the served model: old_logp is always the trainer's own pass); None otherwise."""

    @property
    def key(self) -> RolloutKey:
        return (self.experiment, self.method, self.seed, self.iteration, self.query_id, self.sample_idx)

    @property
    def trainable(self) -> bool:
        """Whether the rollout may enter a training unit: infra failures say nothing about the workflow."""
        return self.status != "infra_error" and self.score is not None and len(self.completion_ids) > 0


class RolloutStore(Protocol):
    def put(self, rollouts: list[Rollout]) -> None: ...

    def keys(self, experiment: str, method: str, seed: int, iteration: int) -> set[RolloutKey]: ...

    def get(self, experiment: str, method: str, seed: int, iteration: int) -> list[Rollout]: ...


class MemoryStore:
    """A RolloutStore in a dict (tests, notebooks); idempotent by key, as SQLiteStore: a stored row
    is kept unless it is an infra_error, which a new row replaces (and `keys` leaves out)."""

    def __init__(self) -> None:
        self._rows: dict[RolloutKey, Rollout] = {}

    def put(self, rollouts: list[Rollout]) -> None:
        for rollout in rollouts:
            stored = self._rows.get(rollout.key)
            if stored is None or stored.status == "infra_error":
                self._rows[rollout.key] = rollout

    def keys(self, experiment: str, method: str, seed: int, iteration: int) -> set[RolloutKey]:
        return {
            k
            for k, r in self._rows.items()
            if k[:4] == (experiment, method, seed, iteration) and r.status != "infra_error"
        }

    def get(self, experiment: str, method: str, seed: int, iteration: int) -> list[Rollout]:
        rows = [r for k, r in self._rows.items() if k[:4] == (experiment, method, seed, iteration)]
        return sorted(rows, key=lambda r: (r.query_id, r.sample_idx))
