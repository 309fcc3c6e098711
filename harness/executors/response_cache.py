"""An on-disk cache of executor responses (SQLite, WAL): a re-run of an experiment makes no new calls.

`complete_cached` is the one call path of every real executor (openai, hf): cache lookup,
the backend's own request on a miss, storage and token accounting in `ExecutorStats`.

The key is a hash of everything the response depends on (endpoint, model, messages, sampling
parameters, the repeat index and the call's occurrence within its workflow run): the three
identical calls of a self-consistency ensemble are three entries, and the second execution of a
workflow on an item draws fresh answers, exactly as the uncached run would.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spogw.harness.executors.base import CallInfo, Completion
from spogw.harness.sqlite_wal import enable_wal

BUSY_TIMEOUT_S = 30.0


def cache_key(**parts: Any) -> str:
    """A stable hash of the parts (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def call_key(endpoint: str, model: str, prompt: str, temperature: float, max_tokens: int, info: CallInfo) -> str:
    """The cache key of one executor call: everything its response depends on."""
    return cache_key(
        endpoint=endpoint,
        model=model,
        messages=[{"role": "user", "content": prompt}],
        temperature=temperature,
        max_tokens=max_tokens,
        repeat=info.repeat,
        occurrence=info.occurrence,
    )


@dataclass
class ExecutorStats:
    calls: int = 0
    """Calls the workflows made."""
    network_calls: int = 0
    """Requests sent (HTTP requests with their retries; generation passes of an in-process model)."""
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    """Calls that failed after all retries (each made a run infra_error)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def summary(self) -> str:
        return (
            f"{self.calls} calls: {self.cache_hits} from the cache, {self.network_calls} requests, "
            f"{self.retries} retries, {self.failures} failed after retries; "
            f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens"
        )


@dataclass(frozen=True)
class CachedResponse:
    text: str
    prompt_tokens: int
    completion_tokens: int


class ResponseCache:
    """key -> response, durable across processes; writes are atomic per row."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        enable_wal(self._db, BUSY_TIMEOUT_S)  # processes sharing $SPOGW_CACHE may create it at once
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
            "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)"
        )

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else CachedResponse(*row)

    def put(self, key: str, response: CachedResponse) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                (key, response.text, response.prompt_tokens, response.completion_tokens),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


async def complete_cached(
    cache: ResponseCache | None, stats: ExecutorStats, key: str, produce: Callable[[], Awaitable[CachedResponse]]
) -> Completion:
    """A call of a real executor: from the cache if it holds ``key``, else ``produce()`` it, store it
    and count its tokens (cache hits cost nothing and count no tokens)."""
    stats.calls += 1
    response = cache.get(key) if cache is not None else None
    if response is not None:
        stats.cache_hits += 1
    else:
        response = await produce()
        if cache is not None:
            cache.put(key, response)
        stats.prompt_tokens += response.prompt_tokens
        stats.completion_tokens += response.completion_tokens
    return Completion(response.text, response.prompt_tokens, response.completion_tokens)
