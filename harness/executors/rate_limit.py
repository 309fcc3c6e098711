"""Executor rate limits in requests and tokens per minute, for every executor of a process, and, through
a SQLite file, for every process that names the same file.

An API's limits belong to the account, not to one executor object: a run holds several executors
(one per method x seed, the transfer executors), and several `spogw` processes may share a key.
Limits kept per object or per process add up to 429 storms. `limiter_for` returns one limiter per
(endpoint, model, file) in a process; with ``path`` its state lives in that SQLite file, changed in
one ``BEGIN IMMEDIATE`` transaction per acquisition, so processes on one machine (or any that can
lock the file; not over NFS) draw from the same budget.

Each limit is a token bucket refilled continuously at limit / 60 per second, holding at most one
second's worth (at least one request): requests go out evenly instead of in a burst at the start of
each minute, which is how providers enforce per-minute limits over shorter windows. A request is let
through when the token bucket holds its cost or is full, and its whole cost is taken: a request
larger than a second's worth leaves the bucket in debt, which later requests wait out, so large
requests are never starved by small ones and the rate over time stays within the limit. A request's
token cost is counted before it is sent, as OpenAI counts it: its prompt at 4 characters a token plus
``max_tokens``. Nothing is given back when the answer used fewer: OpenAI's rate-limit guide counts
``max_tokens`` at the request ("set max_tokens close to your expected response size"), and a refund
would let through more than the provider counts.

The clock is read once the bucket is held (the lock, or the file's transaction): read before, it can
be older than the update of whoever held the bucket meanwhile, and the interval between the two was
refilled twice (30 requests granted in 1.98 s at 10 a second, on two processes). A reading earlier
than the bucket's is then a clock step, and the bucket is rebased to it, refilling nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from spogw.harness.errors import InputError
from spogw.harness.sqlite_wal import enable_wal

CHARS_PER_TOKEN = 4
CONNECT_TIMEOUT_S = 60.0


@dataclass
class _Bucket:
    requests: float
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Requests and tokens per minute (None: that limit is off) for the key ``key``."""

    key: str
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    path: Path | None = None
    """SQLite file shared by processes; None: this process only."""
    waited_s: float = 0.0
    """Total time callers waited for the limit (for logs and the benchmark)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bucket: _Bucket | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"executor.{name}: must be positive, got {value}")
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(self._connect()) as db:
                enable_wal(db, CONNECT_TIMEOUT_S)  # readers never block the writer; no fsync per commit
                db.execute(
                    "CREATE TABLE IF NOT EXISTS buckets "
                    "(key TEXT PRIMARY KEY, requests REAL, tokens REAL, updated REAL)"
                )

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        db = sqlite3.connect(self.path, timeout=CONNECT_TIMEOUT_S, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")  # per connection; the file is in WAL since __post_init__
        return db

    def _capacity(self) -> tuple[float, float]:
        """(requests, tokens) a full bucket holds: one second's worth, at least one request."""
        return max(1.0, (self.requests_per_minute or 0.0) / 60.0), (self.tokens_per_minute or 0.0) / 60.0

    def _take(self, bucket: _Bucket, cost: float, now: float) -> float:
        """Refill ``bucket`` to ``now``; take one request and ``cost`` tokens when there are (or the
        token bucket is full: a larger cost leaves it in debt) and return 0; else return the seconds
        until there will be, and take nothing."""
        cap_requests, cap_tokens = self._capacity()
        elapsed = max(0.0, now - bucket.updated)
        rpm, tpm = self.requests_per_minute, self.tokens_per_minute
        bucket.requests = cap_requests if rpm is None else min(cap_requests, bucket.requests + elapsed * rpm / 60.0)
        bucket.tokens = cap_tokens if tpm is None else min(cap_tokens, bucket.tokens + elapsed * tpm / 60.0)
        # a reading before the bucket's is a clock step (readings are taken with the bucket held): rebase to
        # it, refilling nothing, rather than wait for the clock to catch up
        bucket.updated = now
        wait = 0.0
        if rpm is not None and bucket.requests < 1.0:
            wait = max(wait, (1.0 - bucket.requests) * 60.0 / rpm)
        needed = min(cost, cap_tokens)  # a request above a second's worth goes when the bucket is full
        if tpm is not None and bucket.tokens < needed:
            wait = max(wait, (needed - bucket.tokens) * 60.0 / tpm)
        if wait == 0.0:
            bucket.requests -= 1.0
            bucket.tokens -= cost
        return wait

    def _try(self, cost: float) -> float:
        # the clock is read once the bucket is held: read before, it could be older than the update of
        # whoever held the bucket meanwhile, and the interval between the two would be refilled twice
        if self.path is None:
            with self._lock:
                now = time.time()
                if self._bucket is None:
                    self._bucket = _Bucket(*self._capacity(), now)
                return self._take(self._bucket, cost, now)
        with contextlib.closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            try:
                now = time.time()
                row = db.execute("SELECT requests, tokens, updated FROM buckets WHERE key = ?", (self.key,)).fetchone()
                bucket = _Bucket(*row) if row else _Bucket(*self._capacity(), now)
                wait = self._take(bucket, cost, now)
                db.execute(
                    "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?)",
                    (self.key, bucket.requests, bucket.tokens, bucket.updated),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return wait

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request of ``tokens`` tokens fits both limits, and count it."""
        while True:
            # the shared file's transaction may wait on other processes: off the event loop
            wait = self._try(float(tokens)) if self.path is None else await asyncio.to_thread(self._try, float(tokens))
            if wait == 0.0:
                return
            self.waited_s += wait
            await asyncio.sleep(wait)


def request_cost(prompt: str, max_tokens: int) -> int:
    """Tokens a request is counted for before it is sent: its prompt (estimated) plus max_tokens."""
    return len(prompt) // CHARS_PER_TOKEN + max_tokens


_LIMITERS: dict[tuple[str, str | None], RateLimiter] = {}
_REGISTRY_LOCK = threading.Lock()


def limiter_for(
    key: str, requests_per_minute: float | None, tokens_per_minute: float | None, path: Path | None = None
) -> RateLimiter:
    """The process's limiter for ``key`` (an endpoint and model) and ``path``: every executor of the
    process that talks to that key shares it. Raises InputError when two executors give the same key
    different limits."""
    with _REGISTRY_LOCK:
        slot = (key, str(path) if path is not None else None)
        limiter = _LIMITERS.get(slot)
        if limiter is None:
            limiter = RateLimiter(key, requests_per_minute, tokens_per_minute, path)
            _LIMITERS[slot] = limiter
        elif (limiter.requests_per_minute, limiter.tokens_per_minute) != (requests_per_minute, tokens_per_minute):
            raise InputError(
                f"executor rate limits for {key}: {requests_per_minute} requests and {tokens_per_minute} tokens per "
                f"minute, but this process already limits it to {limiter.requests_per_minute} and "
                f"{limiter.tokens_per_minute}: one endpoint, one budget"
            )
        return limiter
