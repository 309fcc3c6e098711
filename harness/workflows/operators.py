"""The operators a workflow may use: prompt + executor call(s) + parsing, run in the parent.

Names and arguments follow AFlow/ScoreFlow: Custom(input, instruction), AnswerGenerate(input),
CustomCodeGenerate(problem, entry_point, instruction), ScEnsemble(solutions, problem),
Programmer(problem, analysis), Test(problem, solution, entry_point), Review(problem, solution),
Revise(problem, solution, feedback), Format(problem, solution). Each returns a dict.

A workflow's operator call arrives here from its worker process (pool.py). `RunContext.call`
checks the arguments, counts the call against the run's budget, builds the real prompt and the
structured CallInfo, calls the executor and parses the reply. Code the executor writes (Programmer's
solve(), fixes proposed by Test) runs only in the sandbox.
"""

from __future__ import annotations

import ast
import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from spogw.harness.benchmarks.base import Item
from spogw.harness.benchmarks.programs import with_context
from spogw.harness.executors.base import CallInfo, Executor, InfraError
from spogw.harness.workflows.answers import extract
from spogw.harness.workflows.pool import OperatorRefused
from spogw.harness.workflows.sandbox import Sandbox

MAX_ARG_CHARS = 100_000
PROGRAMMER_ATTEMPTS = 3
TEST_LOOPS = 3
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class RunContext:
    """State of one workflow run on one item: the budget, the accounting, the call counters."""

    item: Item
    repeat: int
    executor: Executor
    sandbox: Sandbox
    max_calls: int = 32
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    """What the run's executor calls cost at the executor's prices (0 for unpriced executors)."""
    infra_errors: list[str] = field(default_factory=list)
    operators_used: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    """Every executor reply and every output of a program the executor wrote (harness.workflows.grounding)."""
    cancelled_in_call: bool = False
    """The run was cancelled (its timeout) while waiting on an executor call: the executor's delay."""
    _occurrences: Counter[tuple[Any, ...]] = field(default_factory=Counter)

    async def call(self, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The pool's call handler: run operator ``op`` with ``kwargs`` for the workflow."""
        spec = OPERATORS.get(op)
        if spec is None:
            raise OperatorRefused(f"unknown operator {op!r}")
        arguments = spec.bind(kwargs, self.item)
        self.operators_used.append(op)
        return await spec.run(self, **arguments)

    async def ask(self, prompt: str, operator: str, instruction: str = "", candidates: tuple[str, ...] = ()) -> str:
        """One executor call, counted and accounted; infrastructure failures end the run's use."""
        if self.infra_errors:
            raise OperatorRefused("executor unavailable earlier in this run")
        if self.calls >= self.max_calls:
            raise OperatorRefused(f"call budget of {self.max_calls} executor calls exhausted")
        self.calls += 1
        key = (operator, instruction, candidates)
        occurrence = self._occurrences[key]
        self._occurrences[key] += 1
        info = CallInfo(
            operator=operator,
            item=self.item,
            repeat=self.repeat,
            occurrence=occurrence,
            instruction=instruction,
            candidates=candidates,
        )
        try:
            completion = await self.executor.complete(prompt, info)
        except InfraError as err:
            self.infra_errors.append(str(err))
            raise OperatorRefused(f"executor unavailable: {err}") from None
        except asyncio.CancelledError:
            self.cancelled_in_call = True
            raise
        self.outputs.append(completion.text)
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        price = getattr(self.executor, "cost_usd", None)
        if price is not None:
            self.cost_usd += price(completion.prompt_tokens, completion.completion_tokens)
        return completion.text

    def candidate(self, text: str) -> str:
        return extract(self.item.domain, text, self.item.entry_point)


# ----------------------------------------------------------------------------------------------
# Argument checking


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    run: Callable[..., Awaitable[dict[str, Any]]]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    list_args: tuple[str, ...] = ()

    def bind(self, kwargs: dict[str, Any], item: Item) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - set(self.required) - set(self.optional))
        if unknown:
            raise OperatorRefused(f"{self.name}() got unexpected argument(s) {unknown}; it takes {self.signature()}")
        missing = [name for name in self.required if name not in kwargs]
        if missing:
            raise OperatorRefused(f"{self.name}() missing argument(s) {missing}; it takes {self.signature()}")
        bound: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name in self.list_args:
                if not isinstance(value, list) or not value or len(value) > len(LETTERS):
                    raise OperatorRefused(f"{self.name}({name}=...) needs a list of 1 to {len(LETTERS)} strings")
                bound[name] = [_text(self.name, name, v) for v in value]
            elif name == "entry_point" and value is None:
                bound[name] = item.entry_point or "solve"
            else:
                bound[name] = _text(self.name, name, value)
        if "entry_point" in self.optional and "entry_point" not in bound:
            bound["entry_point"] = item.entry_point or "solve"
        return bound

    def signature(self) -> str:
        return f"({', '.join(self.required + tuple(f'{o}=...' for o in self.optional))})"


def _text(op: str, name: str, value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, dict) and "response" in value:  # a common slip: passing an operator result
        value = value["response"]
    if not isinstance(value, str):
        raise OperatorRefused(f"{op}({name}=...) must be a string, got {type(value).__name__}")
    if len(value) > MAX_ARG_CHARS:
        raise OperatorRefused(f"{op}({name}=...) of {len(value)} characters (limit {MAX_ARG_CHARS})")
    return value


# ----------------------------------------------------------------------------------------------
# The operators


async def custom(ctx: RunContext, input: str, instruction: str) -> dict[str, Any]:
    text = await ctx.ask(f"{instruction}\n\n{input}", "Custom", instruction=instruction)
    return {"response": text}


ANSWER_FORMAT = (
    "Think step by step, then give the final answer.\n"
    "Reply in this format:\n<thought>your reasoning</thought>\n<answer>the final answer only</answer>\n\n"
)


async def answer_generate(ctx: RunContext, input: str) -> dict[str, Any]:
    text = await ctx.ask(ANSWER_FORMAT + input, "AnswerGenerate")
    thought = _tag(text, "thought") or ""
    answer = _tag(text, "answer")
    return {"thought": thought, "answer": answer if answer is not None else text.strip()}


async def custom_code_generate(ctx: RunContext, problem: str, instruction: str, entry_point: str) -> dict[str, Any]:
    prompt = (
        f"{instruction}\n\n{problem}\n\nWrite the complete Python function `{entry_point}` "
        "(with any imports it needs) in one ```python code block."
    )
    text = await ctx.ask(prompt, "CustomCodeGenerate", instruction=instruction)
    return {"response": ctx.candidate(text)}


async def sc_ensemble(ctx: RunContext, solutions: list[str], problem: str) -> dict[str, Any]:
    listing = "\n\n".join(f"Solution {LETTERS[i]}:\n{s}" for i, s in enumerate(solutions))
    prompt = (
        f"Problem:\n{problem}\n\nSeveral solutions follow. Identify the answer most of them agree on "
        f"and pick the solution that best represents it.\n\n{listing}\n\n"
        "Reply with the letter of that solution as <solution_letter>X</solution_letter>."
    )
    candidates = tuple(ctx.candidate(s) for s in solutions)
    text = await ctx.ask(prompt, "ScEnsemble", candidates=candidates)
    letter = _tag(text, "solution_letter") or _last_letter(text, len(solutions))
    index = LETTERS.find(letter.strip().upper()[:1]) if letter else -1
    if not 0 <= index < len(solutions):
        index = 0  # an unparseable choice falls back to the first solution, as AFlow does
    return {"response": solutions[index]}


async def programmer(ctx: RunContext, problem: str, analysis: str = "") -> dict[str, Any]:
    feedback = ""
    code, output = "", ""
    for attempt in range(PROGRAMMER_ATTEMPTS):
        prompt = (
            f"Problem:\n{problem}\n\nAnalysis:\n{analysis}\n\nWrite a Python function `solve()` with no "
            "arguments that computes and returns the final answer, in one ```python code block. "
            "Use only the standard library." + (f"\n\nThe previous attempt failed:\n{feedback}" if feedback else "")
        )
        operator = "Programmer" if attempt == 0 else "Programmer.retry"
        text = await ctx.ask(prompt, operator, instruction=analysis, candidates=(str(attempt),))
        code = extract("code", text, "solve")
        result = await ctx.sandbox.run_python(f"{code}\n\nprint(solve())\n", timeout_s=10)
        if result.passed:
            output = result.stdout.strip()[-2000:]
            ctx.outputs.append(output)
            return {"code": code, "output": output}
        feedback = (result.stderr or result.status).strip()[-1000:]
    # the failure is the operator's output (AFlow's Programmer returns it too): a workflow that returns
    # it is graded (wrong), not called ungrounded as if it had made its answer up
    output = f"error: {feedback.splitlines()[-1] if feedback else 'failed'}"
    ctx.outputs.append(output)
    return {"code": code, "output": output}


async def test(ctx: RunContext, problem: str, solution: str, entry_point: str) -> dict[str, Any]:
    examples = doctest_examples(problem)
    if not examples:  # nothing to run: the operator cannot check anything (and costs nothing)
        return {"result": True, "solution": solution}
    current = solution
    for loop in range(TEST_LOOPS):
        failure = await run_examples(ctx.sandbox, with_context(ctx.item.context, ctx.candidate(current)), examples)
        if failure is None:
            return {"result": True, "solution": current}
        prompt = (
            f"Problem:\n{problem}\n\nThe solution below fails a public test.\n\nSolution:\n{current}\n\n"
            f"Failure:\n{failure}\n\nReflect on the error and write a corrected complete function "
            f"`{entry_point}` in one ```python code block."
        )
        text = await ctx.ask(prompt, "Test.fix", candidates=(ctx.candidate(current), str(loop)))
        current = ctx.candidate(text)
    failure = await run_examples(ctx.sandbox, with_context(ctx.item.context, ctx.candidate(current)), examples)
    return {"result": failure is None, "solution": current}


async def review(ctx: RunContext, problem: str, solution: str) -> dict[str, Any]:
    prompt = (
        f"Problem:\n{problem}\n\nSolution:\n{solution}\n\nCheck the solution carefully. Reply with "
        "'Result: correct' or 'Result: incorrect' on the first line, then 'Feedback:' and your reasons."
    )
    text = await ctx.ask(prompt, "Review", candidates=(ctx.candidate(solution),))
    verdict = re.search(r"result\s*:\s*(in)?correct", text, re.IGNORECASE)
    is_correct = bool(verdict) and verdict.group(1) is None  # type: ignore[union-attr]
    feedback = text.split("Feedback:", 1)[1].strip() if "Feedback:" in text else text.strip()
    return {"review_result": is_correct, "feedback": feedback}


async def revise(ctx: RunContext, problem: str, solution: str, feedback: str) -> dict[str, Any]:
    prompt = (
        f"Problem:\n{problem}\n\nSolution:\n{solution}\n\nFeedback:\n{feedback}\n\n"
        "Revise the solution using the feedback. Give the complete revised solution."
    )
    text = await ctx.ask(prompt, "Revise", candidates=(ctx.candidate(solution),))
    return {"solution": text}


async def format_answer(ctx: RunContext, problem: str, solution: str) -> dict[str, Any]:
    prompt = f"Problem:\n{problem}\n\nSolution:\n{solution}\n\nExtract the final answer only, with no explanation." + (
        " For a number, write \\boxed{number}." if ctx.item.domain == "math" else ""
    )
    text = await ctx.ask(prompt, "Format", candidates=(ctx.candidate(solution),))
    return {"response": text.strip()}


OPERATORS: dict[str, OperatorSpec] = {
    spec.name: spec
    for spec in (
        OperatorSpec("Custom", custom, ("input", "instruction")),
        OperatorSpec("AnswerGenerate", answer_generate, ("input",)),
        OperatorSpec("CustomCodeGenerate", custom_code_generate, ("problem", "instruction"), ("entry_point",)),
        OperatorSpec("ScEnsemble", sc_ensemble, ("solutions",), ("problem",), list_args=("solutions",)),
        OperatorSpec("Programmer", programmer, ("problem",), ("analysis",)),
        OperatorSpec("Test", test, ("problem", "solution"), ("entry_point",)),
        OperatorSpec("Review", review, ("problem", "solution")),
        OperatorSpec("Revise", revise, ("problem", "solution", "feedback")),
        OperatorSpec("Format", format_answer, ("problem", "solution")),
    )
}


# ----------------------------------------------------------------------------------------------
# Helpers


def _tag(text: str, tag: str) -> str | None:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return found[-1].strip() if found else None


def _last_letter(text: str, count: int) -> str:
    letters = re.findall(rf"\b([{LETTERS[:count]}])\b", text)
    return letters[-1] if letters else ""


_EXAMPLE = re.compile(r">>>\s*(.+?)\n\s*([^\n>][^\n]*)")


def doctest_examples(problem: str) -> list[tuple[str, str]]:
    """Public examples written in the problem as ``>>> call`` followed by the expected value."""
    examples = []
    for call, expected in _EXAMPLE.findall(problem):
        try:
            ast.parse(call.strip(), mode="eval")
            ast.parse(expected.strip(), mode="eval")
        except SyntaxError:
            continue
        examples.append((call.strip(), expected.strip()))
    return examples


async def run_examples(sandbox: Sandbox, code: str, examples: list[tuple[str, str]]) -> str | None:
    """None if ``code`` passes every example; else a short description of the first failure."""
    checks = "\n".join(
        f"_got = {call}\nif _got != ({expected}):\n"
        f"    raise AssertionError('{_escape(call)} returned ' + repr(_got) + ', expected {_escape(expected)}')"
        for call, expected in examples
    )
    result = await sandbox.run_python(f"{code}\n\n{checks}\n", timeout_s=10)
    if result.passed:
        return None
    lines = (result.stderr or result.status).strip().splitlines()
    return lines[-1][:500] if lines else result.status


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
