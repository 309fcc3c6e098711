"""Running workflows that the harness rendered itself, in this process: the grammar's structures
that the simulator oracle scores (harness.executors.sim_oracle).

A generated workflow is untrusted and always runs in an isolated worker (harness.workflows.pool).
A grammar rendering (harness.workflows.grammar.render) is the harness's own code, and the oracle
runs each of the 84 math structures on every test item and repeat: through worker processes that
is one pipe round trip per operator call. `InProcessRunner` runs the same guarded source with the
worker's own interpreter (`worker.run_one`: the same builtins, step budget, operator proxies and
answer checks) and answers operator calls directly, with the values passed through JSON as the
pipe would. Results equal the workers' (tests/test_sim.py); measured on 2 cores, 21 structures x
200 items x 2 repeats took 21.9 s in-process against 29.3 s through workers (programs the executor
writes still run in the sandbox, which is most of what is left).

`trusted_source` refuses anything that is not a rendering of the grammar, so the runner cannot be
handed generated code by mistake.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

from spogw.harness.workflows import worker
from spogw.harness.workflows.pool import CallHandler, OperatorRefused, PoolLimits, WorkerResult


class NotAGrammarRendering(ValueError):
    """Code given to the in-process runner that the grammar did not render."""


def trusted_source(source: str, domain: str) -> str:
    """``source`` when it is exactly the rendering of one of ``domain``'s grammar structures;
    raises NotAGrammarRendering otherwise."""
    if source not in _renderings(domain):
        raise NotAGrammarRendering(f"not a rendering of the {domain} grammar: only those run in-process")
    return source


@functools.cache
def _renderings(domain: str) -> frozenset[str]:
    """Every structure of ``domain``'s grammar, rendered (the set both checks are built from)."""
    from spogw.harness.workflows.grammar import all_structures, render

    return frozenset(render(s) for s in all_structures(domain))


@functools.lru_cache(maxsize=1)
def _guarded_renderings() -> frozenset[str]:
    """The guarded sources of every domain's renderings: what `InProcessRunner.run` accepts."""
    from spogw.harness.policy.prompts import DOMAINS
    from spogw.harness.workflows.validate import validate_workflow

    return frozenset(validate_workflow(source).guarded_source for d in DOMAINS for source in _renderings(d))


class _DirectChannel:
    """What `worker.run_one` calls operators through: the call handler itself, with the arguments
    and the result passed through JSON exactly as the worker's pipe passes them."""

    def __init__(self, handler: CallHandler) -> None:
        self.handler = handler

    async def call(self, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            value = await self.handler(op, json.loads(json.dumps(kwargs)))
        except OperatorRefused as err:
            raise worker.OperatorError(str(err)) from None
        value = json.loads(json.dumps(value))
        return value if isinstance(value, dict) else {}


class InProcessRunner:
    """The `WorkerPool` interface (run, close) for grammar renderings, in this process."""

    def __init__(self, concurrency: int = 8, limits: PoolLimits | None = None) -> None:
        self.limits = limits or PoolLimits()
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, guarded_source: str, problem: str, call_handler: CallHandler, timeout_s: float) -> WorkerResult:
        """Run a grammar rendering's guarded source; raises NotAGrammarRendering for anything else
        (the engine checks the source first: this is the second lock)."""
        if guarded_source not in _guarded_renderings():
            raise NotAGrammarRendering("not the guarded rendering of a grammar structure: only those run in-process")
        request = {
            "code": guarded_source,
            "problem": problem,
            "max_steps": self.limits.max_steps,
            "max_answer_chars": self.limits.max_answer_chars,
        }
        async with self._slots:
            start = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    result = await worker.run_one(request, _DirectChannel(call_handler))  # type: ignore[arg-type]
            except TimeoutError:
                return WorkerResult("timeout", None, f"no answer within {timeout_s:g} s", time.perf_counter() - start)
            answer = result.get("answer") if result["status"] == "ok" else None
            return WorkerResult(result["status"], answer, str(result.get("reason", "")), time.perf_counter() - start)

    async def close(self) -> None:
        """Nothing to release (the pool's interface)."""
