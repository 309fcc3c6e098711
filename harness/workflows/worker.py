"""The isolated worker process that runs workflow code.

Started by pool.py inside bubblewrap (no network, read-only root, private /tmp) under prlimit
(address space, CPU seconds, processes, file size), with an empty environment. It speaks JSON
lines on stdin/stdout:

  parent -> worker  {"type": "run", "code": <guarded source>, "problem": str, "max_steps": int,
                     "max_answer_chars": int}
  worker -> parent  {"type": "call", "id": int, "op": "Custom", "kwargs": {...}}
  parent -> worker  {"type": "result", "id": int, "ok": bool, "value": {...} | "error": str}
  worker -> parent  {"type": "done", "status": "ok" | "runtime_error", "answer": str, "reason": str}

Operators are proxies: the operator's prompt, the executor call and the parsing happen in the
parent, so nothing in here holds an API key, a model or a file handle. Imports stdlib + guards only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import types
from typing import Any

# Relative: inside the sandbox this module is imported as harness.workflows.worker (only the
# harness folder is visible there, not the spogw package that links to it).
from .guards import BudgetExceeded, StepBudget, guarded_binop, safe_builtins
from .validate import BINOP, BOUNDED, OPERATOR_NAMES, TICK


class OperatorError(RuntimeError):
    """An operator call the parent refused (bad arguments, call budget, executor failure)."""


class _Channel:
    """Request/response over the JSON-lines pipe; one workflow run at a time."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def call(self, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        call_id = self.next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        send({"type": "call", "id": call_id, "op": op, "kwargs": kwargs})
        reply = await future
        if not reply.get("ok"):
            raise OperatorError(str(reply.get("error", "operator failed")))
        value = reply.get("value")
        return value if isinstance(value, dict) else {}

    async def pump(self) -> None:
        """Deliver results to waiting calls until stdin closes."""
        while True:
            line = await self.reader.readline()
            if not line:
                return
            message = json.loads(line)
            future = self.pending.pop(int(message.get("id", -1)), None)
            if future is not None and not future.done():
                future.set_result(message)


class _Operator:
    """What ``operator.Custom(llm)`` returns inside a workflow: an awaitable proxy."""

    __slots__ = ("_channel", "_name")

    def __init__(self, name: str, channel: _Channel) -> None:
        self._name = name
        self._channel = channel

    async def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if args:
            raise TypeError(f"{self._name}: pass arguments by name (e.g. input=..., instruction=...)")
        return await self._channel.call(self._name, _jsonable(kwargs))


class _OperatorModule:
    """The ``operator`` name a workflow sees: constructors of the allowed operators."""

    def __init__(self, channel: _Channel) -> None:
        for name in OPERATOR_NAMES:
            setattr(self, name, _constructor(name, channel))


def _constructor(name: str, channel: _Channel) -> Any:
    def build(llm: Any = None, *args: Any, **kwargs: Any) -> _Operator:
        return _Operator(name, channel)

    return build


class _Asyncio:
    """The ``asyncio`` name a workflow sees: ``gather`` and nothing else (the validator allows no
    other attribute). The parent answers operator calls one after another, so a gathered run is as
    deterministic as a sequential one."""

    __slots__ = ()

    @staticmethod
    async def gather(*awaitables: Any, return_exceptions: bool = False) -> list[Any]:
        return list(await asyncio.gather(*awaitables, return_exceptions=return_exceptions))


class _LLM:
    """The opaque ``llm`` handle passed to ``Workflow.__init__``; operators take it and ignore it."""

    __slots__ = ()


def _jsonable(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        raise TypeError("operator arguments nest too deeply")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    raise TypeError(f"operator arguments must be strings, numbers, lists or dicts, not {type(value).__name__}")


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


@functools.lru_cache(maxsize=256)
def _compiled(code: str) -> types.CodeType:
    """The code object of a guarded source: one workflow runs on many items and repeats, and a code
    object is immutable (each run executes it in a fresh namespace)."""
    return compile(code, "<workflow>", "exec")


async def run_one(request: dict[str, Any], channel: _Channel) -> dict[str, Any]:
    budget = StepBudget(int(request["max_steps"]))
    namespace: dict[str, Any] = {
        "__builtins__": safe_builtins(),
        "__name__": "workflow",
        "operator": _OperatorModule(channel),
        "asyncio": _Asyncio(),
        TICK: budget.tick,
        BOUNDED: budget.bounded,
        BINOP: guarded_binop,
    }
    try:
        exec(_compiled(request["code"]), namespace)
        workflow = namespace["Workflow"](_LLM(), request["problem"])
        entry = workflow.run_workflow
        # __call__(self, problem) arrives renamed run_workflow and still takes the problem
        answer = await (entry(request["problem"]) if entry.__code__.co_argcount == 2 else entry())
    except BudgetExceeded as err:
        return {"status": "runtime_error", "reason": f"budget: {err}"}
    except OperatorError as err:
        return {"status": "runtime_error", "reason": f"operator: {err}"}
    except RecursionError:
        return {"status": "runtime_error", "reason": "RecursionError: recursion too deep"}
    except MemoryError:
        return {"status": "runtime_error", "reason": "MemoryError: the workflow ran out of memory"}
    except Exception as err:  # the workflow's own failure, reported, never fatal to the worker
        return {"status": "runtime_error", "reason": f"{type(err).__name__}: {str(err)[:300]}"}
    if budget.exhausted:  # caught and swallowed by the workflow: still over budget
        return {"status": "runtime_error", "reason": f"budget: {budget.max_steps} steps exhausted"}
    if not isinstance(answer, str):
        return {"status": "runtime_error", "reason": f"run_workflow returned {type(answer).__name__}, not str"}
    limit = int(request["max_answer_chars"])
    if len(answer) > limit:
        return {"status": "runtime_error", "reason": f"answer of {len(answer)} characters (limit {limit})"}
    return {"status": "ok", "answer": answer}


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    send({"type": "ready"})
    while True:
        line = await reader.readline()
        if not line:
            return
        request = json.loads(line)
        channel = _Channel(reader)
        pump = asyncio.create_task(channel.pump())
        result = await run_one(request, channel)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump  # the next readline must not race a still-running pump
        send({"type": "done", **result})


def main() -> None:
    sys.setrecursionlimit(400)
    asyncio.run(serve())


if __name__ == "__main__":
    main()
