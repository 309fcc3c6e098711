"""The executor interface: one text-in/text-out call, with structure beside the text.

Every operator call carries a `CallInfo` next to its prompt. Real backends send only the prompt;
the simulator reads only the CallInfo. Infrastructure failures (API down, rate limit after
retries) raise `InfraError`: the workflow run becomes infra_error, never a score of 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from spogw.harness.errors import ServiceUnavailable

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Item


class InfraError(Exception):
    """The executor could not answer for reasons that say nothing about the workflow."""


class ExecutorUnavailable(ServiceUnavailable):
    """The executor failed so many calls in a row that it is down: the run stops (and resumes
    from where it stopped when re-run) instead of filling its tables with infra_error rows."""


@dataclass(frozen=True)
class CallInfo:
    operator: str
    """Operator (or operator step, e.g. 'Test.fix', 'Programmer.retry') making the call."""
    item: Item
    repeat: int
    """Which execution of the (item, workflow) pair this is; repeats are independent draws."""
    occurrence: int = 0
    """How many identical calls (same operator, instruction, candidates) came before in this run."""
    instruction: str = ""
    candidates: tuple[str, ...] = ()
    """The answers the call is about (solutions to ensemble, review or revise), as extracted text."""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class Executor(Protocol):
    name: str
    simulated: bool

    def describe(self) -> str:
        """Identity for logs, tags and report headers (never contains a secret)."""
        ...

    async def complete(self, prompt: str, info: CallInfo) -> Completion: ...

    async def close(self) -> None: ...
