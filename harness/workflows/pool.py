"""A pool of isolated worker processes that run validated workflow code.

Each worker (worker.py) runs one workflow at a time inside `isolated_command` (no network,
read-only root, address-space/CPU limits, empty environment). The parent owns everything with
side effects: when the workflow calls an operator, the worker sends the request here and the
`call_handler` (operators.py + an executor) answers it. A worker that exceeds the wall-clock
timeout, dies (memory limit, CPU limit, crash) or breaks the protocol is killed and replaced; its
run ends as `timeout` or `runtime_error` with the reason, and the job goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spogw.harness.workflows.isolation import Limits, interpreter, isolated_command, kill_process_group, spawn_kwargs

CallHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""(operator name, keyword arguments) -> operator result; raises OperatorRefused to fail the call."""

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_BOOT = f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); from harness.workflows.worker import main; main()"


class OperatorRefused(Exception):
    """Raised by a call handler: the operator call fails inside the workflow with this message."""


@dataclass(frozen=True)
class WorkerResult:
    status: str
    """ok | timeout | runtime_error"""
    answer: str | None
    reason: str
    wall_s: float


@dataclass(frozen=True)
class PoolLimits:
    max_steps: int = 20_000
    """Loop iterations + function entries one workflow run may take."""
    max_answer_chars: int = 200_000
    runs_per_worker: int = 500
    """Workers are recycled after this many runs (their CPU-seconds limit is cumulative)."""
    worker: Limits = field(default_factory=lambda: Limits(memory_bytes=1 << 30, cpu_s=300, processes=8, file_bytes=0))


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.runs = 0
        self.stderr_tail = bytearray()
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while chunk := await stream.read(4096):
            self.stderr_tail = (self.stderr_tail + chunk)[-2000:]

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        await self.process.stdin.drain()

    async def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise _WorkerDied(self._death_reason())
        if not line.endswith(b"\n"):
            raise _ProtocolError("message without end of line")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise _ProtocolError("message is not an object")
        return message

    def _death_reason(self) -> str:
        code = self.process.returncode
        tail = self.stderr_tail.decode("utf-8", "replace").strip().splitlines()
        last = tail[-1] if tail else ""
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return f"worker killed by {name} (memory or CPU limit) {last}".strip()
        return f"worker exited ({code}) {last}".strip()

    async def kill(self) -> None:
        kill_process_group(self.process)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.process.wait(), 10)
        self._stderr_task.cancel()
        # closing our end of stdin lets asyncio close the transport now; left to the garbage
        # collector, it would do so after an interrupted run's event loop closed, with a traceback
        if self.process.stdin is not None:
            self.process.stdin.close()


class _WorkerDied(Exception):
    pass


class _ProtocolError(Exception):
    pass


class WorkerPool:
    """Up to ``size`` isolated workers; `run` borrows one for one workflow run."""

    def __init__(self, size: int, limits: PoolLimits | None = None) -> None:
        self.size = size
        self.limits = limits or PoolLimits()
        self._idle: list[_Worker] = []
        self._slots = asyncio.Semaphore(size)
        self.started = 0
        self.killed = 0

    async def _start(self) -> _Worker:
        argv = isolated_command([interpreter(), "-I", "-S", "-c", _BOOT], self.limits.worker)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_MESSAGE_BYTES,
            **spawn_kwargs(self.limits.worker),  # type: ignore[arg-type]
        )
        worker = _Worker(process)
        self.started += 1
        try:
            hello = await asyncio.wait_for(worker.receive(), 60)
        except BaseException:  # cancelled (Ctrl-C) or silent: a worker nobody holds must not outlive us
            await worker.kill()
            raise
        if hello.get("type") != "ready":
            raise RuntimeError(f"workflow worker did not start: {hello}")
        return worker

    async def run(self, guarded_source: str, problem: str, call_handler: CallHandler, timeout_s: float) -> WorkerResult:
        """Run one validated workflow (its guarded source) on ``problem``."""
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._start()
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                async with asyncio.timeout(timeout_s):
                    result = await self._converse(worker, guarded_source, problem, call_handler)
            except TimeoutError:
                await self._discard(worker)
                return WorkerResult("timeout", None, f"no answer within {timeout_s:g} s", loop.time() - start)
            except _WorkerDied as err:
                await self._discard(worker)
                return WorkerResult("runtime_error", None, str(err), loop.time() - start)
            except (_ProtocolError, ValueError, KeyError, TypeError) as err:
                await self._discard(worker)
                reason = f"worker protocol error: {type(err).__name__}: {str(err)[:200]}"
                return WorkerResult("runtime_error", None, reason, loop.time() - start)
            except BaseException:
                await self._discard(worker)  # cancelled by the caller: never reuse a busy worker
                raise
            worker.runs += 1
            if worker.runs >= self.limits.runs_per_worker:
                await self._discard(worker)
            else:
                self._idle.append(worker)
            status = result.get("status")
            if status not in ("ok", "runtime_error"):
                return WorkerResult("runtime_error", None, f"worker sent status {status!r}", loop.time() - start)
            answer = result.get("answer") if status == "ok" else None
            return WorkerResult(status, answer, str(result.get("reason", "")), loop.time() - start)

    async def _converse(
        self, worker: _Worker, guarded_source: str, problem: str, call_handler: CallHandler
    ) -> dict[str, Any]:
        await worker.send(
            {
                "type": "run",
                "code": guarded_source,
                "problem": problem,
                "max_steps": self.limits.max_steps,
                "max_answer_chars": self.limits.max_answer_chars,
            }
        )
        while True:
            message = await worker.receive()
            kind = message.get("type")
            if kind == "done":
                return message
            if kind != "call":
                raise _ProtocolError(f"unexpected message type {kind!r}")
            call_id, op, kwargs = message["id"], message["op"], message["kwargs"]
            if not isinstance(op, str) or not isinstance(kwargs, dict):
                raise _ProtocolError("malformed operator call")
            try:
                value = await call_handler(op, kwargs)
                reply: dict[str, Any] = {"type": "result", "id": call_id, "ok": True, "value": value}
            except OperatorRefused as err:
                reply = {"type": "result", "id": call_id, "ok": False, "error": str(err)}
            await worker.send(reply)

    async def _discard(self, worker: _Worker) -> None:
        self.killed += 1
        await worker.kill()

    async def close(self) -> None:
        """Kill every idle worker and reap it, also when the closing task is being cancelled (Ctrl-C
        cancels the run's task while it is here): a process not reaped before the event loop closes
        leaves an asyncio traceback on the user's screen."""
        workers, self._idle = self._idle, []
        for worker in workers:
            kill_process_group(worker.process)  # at once: nothing outlives us, whatever happens next
        reaping = asyncio.ensure_future(asyncio.gather(*(worker.kill() for worker in workers)))
        try:
            await asyncio.shield(reaping)
        except asyncio.CancelledError:
            await reaping  # the SIGKILLed workers are reaped in milliseconds; then the cancel goes on
            raise

    async def __aenter__(self) -> WorkerPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
