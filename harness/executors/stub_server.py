"""A local OpenAI-compatible *stub* server for fault-injection tests and load benchmarks: not a model.

It answers POST /v1/chat/completions after a fixed latency with a canned reply, and with
probability `fault_rate` (seeded, so a run is reproducible) answers instead with one of the faults
a real endpoint produces: 429 with Retry-After, 500, a body that is not JSON, a truncated JSON
body, a hang longer than any sensible client timeout, a slow-loris answer (headers at once, then
one byte of body every `trickle_s`, so no single read ever times out), or a reset connection. GET /stats returns
what it did. Use it in-process (`async with StubServer(...) as server`) or from a shell:

    python -m spogw.harness.executors.stub_server --port 8765 --latency-s 0.2 --fault-rate 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from spogw.harness.errors import InputError
from spogw.harness.local_server import LocalServer

FAULTS = ("429", "500", "garbage", "truncated", "hang", "slowloris", "reset")


@dataclass
class StubServer(LocalServer):
    latency_s: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    hang_s: float = 30.0
    trickle_s: float = 0.2
    """Seconds between the bytes of a slow-loris body (its whole body takes hang_s)."""
    retry_after_s: float = 0.05
    reply: str = "Let me work through it.\nThe answer is \\boxed{42}."
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    """0: a free port (read `url` after start)."""
    requests: int = 0
    served: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    """The most requests the server was handling at once (checks a client's concurrency bound)."""
    _runner: Any = None

    def _started(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise InputError(f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self._rng = random.Random(self.seed)

    def _routes(self, app: Any) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)

    async def _chat(self, request: Any) -> Any:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        fault = self._rng.choice(self.faults) if self._rng.random() < self.fault_rate else None
        await asyncio.sleep(self.latency_s)
        self.served[fault or "ok"] += 1
        if fault == "429":
            return web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit"}},
                status=429,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if fault == "500":
            return web.json_response({"error": {"message": "internal error"}}, status=500)
        if fault == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html> not json", content_type="application/json")
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
        if fault == "slowloris":
            return await self._trickle(request, json.dumps(self._completion(body)).encode())
        if fault == "reset":
            request.transport.close()
            return web.Response(status=500)
        payload = self._completion(body)
        if fault == "truncated":
            text = json.dumps(payload)
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        return web.json_response(payload)

    async def _trickle(self, request: Any, payload: bytes) -> Any:
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(payload)
        await response.prepare(request)
        deadline = time.monotonic() + self.hang_s
        for index in range(len(payload)):
            if time.monotonic() > deadline:
                break
            try:
                await response.write(payload[index : index + 1])
            except ConnectionResetError:  # the client gave up on us: what a slow-loris test wants
                break
            await asyncio.sleep(self.trickle_s)
        return response

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        return {
            "id": f"stub-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": len(self.reply.split()),
                "total_tokens": len(prompt.split()) + len(self.reply.split()),
            },
        }

    async def _models(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def _stats(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response(
            {"requests": self.requests, "served": dict(self.served), "max_in_flight": self.max_in_flight}
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset of " + ",".join(FAULTS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        server = StubServer(
            latency_s=args.latency_s,
            fault_rate=args.fault_rate,
            faults=tuple(f for f in args.faults.split(",") if f),
            seed=args.seed,
            host=args.host,
            port=args.port,
        )
        await server.start()
        print(f"stub OpenAI-compatible server on {server.url} (not a model)", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
