"""One workflow run on one item: validate -> execute in an isolated worker -> outcome.

The outcome's status is one of ok | invalid | timeout | runtime_error | ungrounded | infra_error,
always with a reason. invalid, timeout, runtime_error and ungrounded are the workflow's fault
(score 0); ungrounded is an answer that did not come from the executor (harness.workflows.
grounding). infra_error means the executor failed (API down, rate-limited after retries, or the
run's time ran out while it waited on an executor call) and says nothing about the workflow, so
it is never scored and never enters training data.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from enum import StrEnum

from spogw.harness.benchmarks.base import Item
from spogw.harness.executors.base import Executor, ExecutorUnavailable
from spogw.harness.workflows.grounding import Grounding, question_specific, ungrounded_reason
from spogw.harness.workflows.inprocess import InProcessRunner, trusted_source
from spogw.harness.workflows.operators import RunContext
from spogw.harness.workflows.pool import PoolLimits, WorkerPool
from spogw.harness.workflows.sandbox import Sandbox
from spogw.harness.workflows.validate import ValidatedWorkflow, WorkflowInvalid, validate_workflow


class RunStatus(StrEnum):
    OK = "ok"
    INVALID = "invalid"
    TIMEOUT = "timeout"
    RUNTIME_ERROR = "runtime_error"
    UNGROUNDED = "ungrounded"
    INFRA_ERROR = "infra_error"


@dataclass(frozen=True)
class RunOutcome:
    status: RunStatus
    reason: str
    answer: str | None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    operators: tuple[str, ...] = field(default=())
    """Operators called during the run, in order."""

    @property
    def scorable(self) -> bool:
        """Whether the run says something about the workflow (everything but infra_error)."""
        return self.status is not RunStatus.INFRA_ERROR


@functools.lru_cache(maxsize=4096)
def _validated(source: str) -> ValidatedWorkflow | WorkflowInvalid:
    try:
        return validate_workflow(source)
    except WorkflowInvalid as err:
        return err


def validate_cached(source: str) -> ValidatedWorkflow:
    """validate_workflow with a cache: the same generated code is run on many items and repeats."""
    result = _validated(source)
    if isinstance(result, WorkflowInvalid):
        raise result
    return result


class WorkflowEngine:
    """Runs workflows against an executor with bounded concurrency and isolation."""

    def __init__(
        self,
        executor: Executor,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        max_calls: int = 32,
        sandbox: Sandbox | None = None,
        pool_limits: PoolLimits | None = None,
        grounding: Grounding = "contained",
        grammar_only_in_process: bool = False,
    ) -> None:
        """``grammar_only_in_process``: run only the grammar's own renderings, in this process
        (harness.workflows.inprocess; the simulator oracle); any other code is refused with
        NotAGrammarRendering. Off (always, for generated code): every run is in an isolated worker."""
        self.executor = executor
        self.timeout_s = timeout_s
        self.max_calls = max_calls
        self.grounding: Grounding = grounding
        self.sandbox = sandbox or Sandbox()
        self.grammar_only_in_process = grammar_only_in_process
        runner = InProcessRunner if grammar_only_in_process else WorkerPool
        self.pool: WorkerPool | InProcessRunner = runner(concurrency, pool_limits)

    async def run(self, source: str, item: Item, repeat: int) -> RunOutcome:
        start = time.perf_counter()
        if self.grammar_only_in_process:
            trusted_source(source, item.domain)
        try:
            workflow = validate_cached(source)
        except WorkflowInvalid as err:
            return RunOutcome(RunStatus.INVALID, str(err), None, wall_s=time.perf_counter() - start)
        context = RunContext(item, repeat, self.executor, self.sandbox, max_calls=self.max_calls)
        result = await self.pool.run(workflow.guarded_source, item.question, context.call, self.timeout_s)
        if context.infra_errors:
            down = getattr(self.executor, "unavailable", None)
            if down is not None:  # the breaker is open: stop rather than record a table of failures
                raise ExecutorUnavailable(f"the executor {self.executor.describe()} is down: {down}")
            status, reason, answer = RunStatus.INFRA_ERROR, context.infra_errors[0], None
        elif result.status == RunStatus.TIMEOUT and context.cancelled_in_call:
            status, answer = RunStatus.INFRA_ERROR, None
            reason = (
                f"executor_timeout: the run's {self.timeout_s:g} s ran out while it waited on an executor call "
                "(a slow executor, not the workflow's fault; raise executor.workflow_timeout_s)"
            )
        else:
            status, reason, answer = RunStatus(result.status), result.reason, result.answer
        if status is RunStatus.OK and answer is not None:
            problem = question_specific(source, item.question) or ungrounded_reason(
                item.domain, answer, context.outputs, context.calls, item.entry_point, self.grounding
            )
            if problem is not None:
                status, reason = RunStatus.UNGROUNDED, problem
        return RunOutcome(
            status=status,
            reason=reason,
            answer=answer,
            calls=context.calls,
            prompt_tokens=context.prompt_tokens,
            completion_tokens=context.completion_tokens,
            cost_usd=context.cost_usd,
            wall_s=time.perf_counter() - start,
            operators=tuple(context.operators_used),
        )

    async def close(self) -> None:
        try:
            await self.pool.close()
        finally:
            await self.executor.close()
