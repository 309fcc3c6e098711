"""A local stand-in for vLLM's OpenAI-compatible server, for tests and CPU rehearsals: not vLLM.

It speaks exactly the subset of vLLM's protocol that `harness.policy.served.VLLMServerSampler`
uses, with vLLM's status codes and messages, and samples with the harness's own decode loop
(`harness.policy.sampling.sample_ids`), row r seeded with the request's ``seed``. So a run whose
generator is this server can be compared with an in-process run bitwise.

- ``POST /v1/completions``: ``prompt`` as token ids, ``seed``, ``temperature``, ``top_p``,
  ``max_tokens``, ``stop``, ``stop_token_ids``, ``return_token_ids``, ``logprobs`` (the sampled
  token's log_softmax(logits / T): vLLM's default, the raw log-probs, equal it at T = 1 only, which
  is why collection records the served gap at T = 1 only); an unknown ``model``: 404. Requests that
  arrive together (within ``batch_wait_s``) are drawn in one batch, as vLLM batches them.
- ``POST /v1/load_lora_adapter`` ``{lora_name, lora_path}``: 400 "has already been loaded" for a
  loaded name, 404 "No adapter found" for a folder without an adapter.
- ``POST /v1/unload_lora_adapter`` ``{lora_name}``: 404 "cannot be found" for an unknown name.
- ``GET /v1/models``: the base model and the loaded adapters.

Run it from a shell (the tests start it on 127.0.0.1 with port 0):

    python -m spogw.harness.policy.standin --generator tiny --port 8001 --served-model tiny
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spogw.harness.local_server import LocalServer
from spogw.harness.policy.sampling import SamplingParams, sample_ids

if TYPE_CHECKING:
    from spogw.harness.policy.model import Generator


@dataclass
class _Request:
    model: str
    prompt_ids: list[int]
    seed: int
    params: SamplingParams
    stop_ids: tuple[int, ...]
    done: asyncio.Future[dict[str, Any]]


@dataclass
class VLLMStandIn(LocalServer):
    """The stand-in server (see the module docstring): `start` it in a running event loop, read
    `url`, `stop` it; the counters say what it did."""

    generator: Generator
    """The model it serves; its trainable adapter is ignored (the base model answers its name)."""
    served_model: str = "base"
    host: str = "127.0.0.1"
    port: int = 0
    max_batch: int = 64
    batch_wait_s: float = 0.01
    exit_after_completions: int | None = None
    """Fault injection: the process exits (os._exit) after answering this many completions."""
    fail_next: int = 0
    """Fault injection: this many completion requests are answered 503 before any is served."""
    adapters: dict[str, str] = field(default_factory=dict)
    """Loaded adapter name -> folder."""
    completions: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    """The most completion requests the server was handling at once (checks a client's bound)."""
    batches: list[int] = field(default_factory=list)
    """The size of every batch drawn."""
    _runner: Any = None
    _queue: asyncio.Queue[_Request] | None = None
    _batcher: asyncio.Task[None] | None = None

    def _started(self) -> None:
        self._queue = asyncio.Queue()
        self._model_lock = asyncio.Lock()
        self._batcher = asyncio.create_task(self._batch_loop())

    def _routes(self, app: Any) -> None:
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
        app.router.add_get("/v1/models", self._models)

    def _stopping(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            self._batcher = None

    def forget_adapters(self) -> None:
        """What a restarted server knows of the adapters loaded before: nothing. Call it while no
        request is in flight (tests do, between requests)."""
        for name in list(self.adapters):
            self.generator.model.delete_adapter(name)
        self.adapters.clear()

    # -- handlers -----------------------------------------------------------------------------
    @staticmethod
    def _error(message: str, kind: str, status: int) -> Any:
        from aiohttp import web

        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return web.json_response(body, status=status)

    async def _models(self, request: Any) -> Any:
        from aiohttp import web

        names = [self.served_model, *self.adapters]
        return web.json_response({"object": "list", "data": [{"id": n, "object": "model"} for n in names]})

    async def _load(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return self._error("Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400)
        if name in self.adapters:
            return self._error(f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput", 400)
        if not (Path(path) / "adapter_config.json").is_file():
            return self._error(f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError", 404)
        async with self._model_lock:
            if name in self.adapters:  # loaded by a request that arrived meanwhile
                return self._error(f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput", 400)
            await asyncio.to_thread(self.generator.model.load_adapter, path, adapter_name=name, is_trainable=False)
            self.adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: Any) -> Any:
        from aiohttp import web

        name = (await request.json()).get("lora_name")
        async with self._model_lock:
            if name not in self.adapters:
                return self._error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
            self.generator.model.delete_adapter(name)
            del self.adapters[name]
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _completions(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._error("the stand-in was told to fail this request", "ServiceUnavailable", 503)
        model = body.get("model")
        if model != self.served_model and model not in self.adapters:
            return self._error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        prompt = body.get("prompt")
        if not isinstance(prompt, list) or not prompt or not all(isinstance(t, int) for t in prompt):
            return self._error("the stand-in takes one prompt of token ids", "BadRequestError", 400)
        params = SamplingParams(
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            max_new_tokens=int(body.get("max_tokens", 16)),
            stop=tuple(body.get("stop") or ()),
        )
        assert self._queue is not None
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        seed = int(body["seed"]) if body.get("seed") is not None else int.from_bytes(os.urandom(7), "little")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._queue.put(_Request(model, prompt, seed, params, tuple(body.get("stop_token_ids") or ()), done))
            choice = await done
        finally:
            self.in_flight -= 1
        if not body.get("return_token_ids"):
            choice = {k: v for k, v in choice.items() if k not in ("token_ids", "prompt_token_ids")}
        if body.get("logprobs") is None:
            choice["logprobs"] = None
        self.completions += 1
        if self.exit_after_completions is not None and self.completions >= self.exit_after_completions:
            os._exit(17)  # a server that dies mid-collection (tests/test_served.py)
        return web.json_response({"object": "text_completion", "model": model, "choices": [choice]})

    # -- batching -------------------------------------------------------------------------------
    async def _batch_loop(self) -> None:
        assert self._queue is not None
        while True:
            pending = [await self._queue.get()]
            await asyncio.sleep(self.batch_wait_s)
            while not self._queue.empty() and len(pending) < self.max_batch:
                pending.append(self._queue.get_nowait())
            groups: dict[tuple[Any, ...], list[_Request]] = {}
            for req in pending:
                groups.setdefault((req.model, req.params, req.stop_ids), []).append(req)
            for (model, params, stop_ids), group in groups.items():
                async with self._model_lock:
                    try:
                        choices = await asyncio.to_thread(self._draw, model, group, params, stop_ids)
                    except Exception as err:  # answered as a server error, as vLLM would
                        for req in group:
                            req.done.set_exception(err)
                        continue
                self.batches.append(len(group))
                for req, choice in zip(group, choices, strict=True):
                    req.done.set_result(choice)

    @contextlib.contextmanager
    def _answering(self, model_name: str) -> Iterator[None]:
        """The base model (adapters off) or the adapter loaded under ``model_name``."""
        model = self.generator.model
        if model_name == self.served_model:
            with model.disable_adapter():
                yield
            return
        model.set_adapter(model_name)
        try:
            yield
        finally:
            model.set_adapter("default")

    def _draw(
        self, model_name: str, group: Sequence[_Request], params: SamplingParams, stop_ids: tuple[int, ...]
    ) -> list[dict[str, Any]]:
        model, tokenizer = self.generator.model, self.generator.tokenizer
        with self._answering(model_name):
            prompts, seeds = [r.prompt_ids for r in group], [r.seed for r in group]
            drawn = sample_ids(model, tokenizer, prompts, seeds, params, stop_ids=stop_ids)
        choices = []
        for index, (req, d) in enumerate(zip(group, drawn, strict=True)):
            stop_reason: int | str | None = None
            if d.finish == "eos" and d.completion_ids and d.completion_ids[-1] in req.stop_ids:
                stop_reason = d.completion_ids[-1]
            elif d.finish == "stop":
                text = tokenizer.decode(list(d.completion_ids), skip_special_tokens=False)
                stop_reason = next((s for s in params.stop if s in text), None)
            choices.append(
                {
                    "index": index,
                    "text": tokenizer.decode(list(d.completion_ids), skip_special_tokens=True),
                    "finish_reason": "length" if d.finish == "length" else "stop",
                    "stop_reason": stop_reason,
                    "prompt_token_ids": list(req.prompt_ids),
                    "token_ids": list(d.completion_ids),
                    "logprobs": {"token_logprobs": list(d.logprobs)},
                }
            )
        return choices


def main(argv: Sequence[str] | None = None) -> None:
    from spogw.harness.config import GeneratorConfig
    from spogw.harness.policy.model import load_generator

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="tiny", help="generator preset (tiny, smol) or hf")
    parser.add_argument("--model", default=None, help="model id or folder for --generator hf")
    parser.add_argument("--tiny-recipe", default="standard", choices=("standard", "test"))
    parser.add_argument("--served-model", default="base", help="the base model's name in requests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--exit-after-completions", type=int, default=None, help="fault injection")
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {"tiny_recipe": args.tiny_recipe} if args.generator == "tiny" else {"model": args.model}
    config = GeneratorConfig(name=args.generator, decoding="free", **extra)
    generator = load_generator(config, device="cpu", progress=False)

    async def serve() -> None:
        server = VLLMStandIn(
            generator, args.served_model, args.host, args.port, exit_after_completions=args.exit_after_completions
        )
        await server.start()
        print(f"serving {args.served_model} at {server.url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
