"""The `openai` executor: any OpenAI-compatible chat endpoint (OpenAI, vLLM `serve`, SGLang,
llama.cpp's server, `transformers serve`).

- Transport: the `openai` SDK's AsyncOpenAI with its own retries off, so that every retry is ours
  to count: 429, 5xx, timeouts, connection errors and unreadable answers (invalid JSON, no choices)
  are retried with exponential backoff and full jitter, honouring Retry-After; a call that still
  fails raises InfraError (the workflow run becomes infra_error, never a score of 0). Other 4xx
  answers (bad key, unknown model) are not retried.
- Every attempt has a wall-clock deadline (`call_timeout_s`) over the whole request: the SDK's own
  timeout applies per read, and a slow-loris server that sends a byte at a time never trips it.
- A circuit breaker: after `abort_after_failures` calls in a row have failed after all their
  retries, the endpoint is taken to be down; every later call fails at once and the workflow
  engine stops the run with ExecutorUnavailable (a clear message; re-running resumes).
- Bounded concurrency: at most `max_concurrent_calls` requests in flight.
- Rate limits (`requests_per_minute`, `tokens_per_minute`): one budget per endpoint and model for the
  whole process, or for every process naming the same `rate_limit_file` (rate_limit.py); a call
  waits for its turn before it is sent, and every retry is counted again.
- An on-disk response cache (response_cache.py) keyed by endpoint, model, messages, sampling
  parameters, repeat index and occurrence: a second identical run makes no network call.
- The API key is read from the environment variable the config names; it is never stored on the
  executor's description, in errors, logs or the cache.
"""

from __future__ import annotations

import asyncio
import os
import random
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

NO_KEY = "not-needed"
"""Sent when no key variable is configured (local servers ignore it; the SDK requires a value)."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class OpenAIExecutor:
    name = "openai"
    simulated = False

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key_env: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        max_concurrent_calls: int = 16,
        call_timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        cache_path: str | Path | None = None,
        input_price_per_mtok: float = 0.0,
        output_price_per_mtok: float = 0.0,
        abort_after_failures: int = 20,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limit_file: str | Path | None = None,
    ) -> None:
        from openai import AsyncOpenAI

        from spogw.harness.executors.rate_limit import limiter_for

        if not model:
            raise InputError("executor.model: the openai executor needs the model name the endpoint serves")
        api_key = NO_KEY
        if api_key_env:
            api_key = os.environ.get(api_key_env, "")
            if not api_key:
                raise InputError(f"executor.api_key_env: environment variable {api_key_env} is not set or empty")
        self.model = model
        self.base_url = base_url or "https://api.openai.com/v1"
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.prices = (input_price_per_mtok, output_price_per_mtok)
        self.stats = ExecutorStats()
        self.call_timeout_s = call_timeout_s
        self.abort_after_failures = abort_after_failures
        self.consecutive_failures = 0
        self.unavailable: str | None = None
        """Why the breaker opened (None while closed): the endpoint is taken to be down."""
        self._client = AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=call_timeout_s)
        self._limit = asyncio.Semaphore(max_concurrent_calls)
        self._cache = ResponseCache(Path(cache_path)) if cache_path is not None else None
        self._jitter = random.Random()
        self._rate = (
            limiter_for(
                f"{self.base_url}|{model}",
                requests_per_minute,
                tokens_per_minute,
                Path(rate_limit_file) if rate_limit_file is not None else None,
            )
            if requests_per_minute is not None or tokens_per_minute is not None
            else None
        )

    def describe(self) -> str:
        return f"openai:{self.model} @ {self.base_url}"

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """What the tokens cost at the configured prices (USD per million tokens)."""
        return (prompt_tokens * self.prices[0] + completion_tokens * self.prices[1]) / 1e6

    async def complete(self, prompt: str, info: CallInfo) -> Completion:
        key = call_key(self.base_url, self.model, prompt, self.temperature, self.max_tokens, info)
        messages = [{"role": "user", "content": prompt}]
        return await complete_cached(self._cache, self.stats, key, lambda: self._call_with_retries(messages))

    async def _call_with_retries(self, messages: list[dict[str, str]]) -> CachedResponse:
        from spogw.harness.executors.rate_limit import request_cost

        cost = request_cost(messages[0]["content"], self.max_tokens)
        if self.unavailable is not None:
            raise InfraError(f"{self.describe()}: not called, the endpoint is down ({self.unavailable})")
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            try:
                if self._rate is not None:  # before the concurrency slot: a waiting call holds none
                    await self._rate.acquire(cost)
                async with self._limit:
                    self.stats.network_calls += 1
                    response = await self._call_once(messages)
                self.consecutive_failures = 0
                return response
            except _Retryable as err:
                last = str(err)
                if attempt == self.max_retries:
                    break
                ceiling = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                delay = self._jitter.uniform(0.0, ceiling)  # full jitter: retries of many calls spread out
                if err.retry_after is not None:
                    delay = max(delay, min(err.retry_after, self.max_backoff_s))
                await asyncio.sleep(delay)
        self.stats.failures += 1
        self.consecutive_failures += 1
        if self.abort_after_failures and self.consecutive_failures >= self.abort_after_failures:
            self.unavailable = f"{self.consecutive_failures} calls in a row failed after retries; last: {last}"
        raise InfraError(f"{self.describe()}: failed after {self.max_retries} retries: {last}")

    async def _call_once(self, messages: list[dict[str, str]]) -> CachedResponse:
        import openai

        try:
            async with asyncio.timeout(self.call_timeout_s):
                response = await self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]  # plain role/content dicts, as the API takes
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                )
        except TimeoutError:
            raise _Retryable(f"no complete answer within {self.call_timeout_s:g} s") from None
        except openai.APIStatusError as err:
            if err.status_code == 429 or err.status_code >= 500:
                raise _Retryable(f"HTTP {err.status_code}", _retry_after(err.response.headers)) from None
            raise InfraError(f"{self.describe()}: HTTP {err.status_code}: {_short(err.message)}") from None
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise _Retryable(type(err).__name__) from None
        except Exception as err:  # an unreadable answer: invalid JSON, a body of the wrong shape
            raise _Retryable(f"unreadable response ({type(err).__name__})") from None
        choices = getattr(response, "choices", None)
        if not choices or choices[0].message is None or choices[0].message.content is None:
            raise _Retryable("response without a message")
        usage = getattr(response, "usage", None)
        return CachedResponse(
            text=choices[0].message.content,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    async def close(self) -> None:
        await self._client.close()
        if self._cache is not None:
            self._cache.close()


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
