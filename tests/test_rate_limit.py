"""Executor rate limits: the token buckets by hand, one budget for every executor of a process, and one
for every process that names the same file."""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spogw.harness.benchmarks.base import Item
from spogw.harness.config import ExecutorConfig
from spogw.harness.errors import InputError
from spogw.harness.executors.base import CallInfo
from spogw.harness.executors.openai_api import OpenAIExecutor
from spogw.harness.executors.rate_limit import RateLimiter, _Bucket, limiter_for, request_cost
from spogw.harness.executors.stub_server import StubServer
from tests.conftest import run

REPO = Path(__file__).resolve().parents[1]
ITEM = Item("q1", "math", "What is 6 * 7?", "42")


def test_buckets_by_hand() -> None:
    limiter = RateLimiter("k", requests_per_minute=60)  # one a second, at most one at once
    bucket = _Bucket(1.0, 0.0, 100.0)
    assert limiter._take(bucket, 0.0, 100.0) == 0.0 and bucket.requests == 0.0
    assert limiter._take(bucket, 0.0, 100.0) == pytest.approx(1.0)  # nothing left: a second to the next
    assert limiter._take(bucket, 0.0, 100.5) == pytest.approx(0.5)  # half refilled
    assert limiter._take(bucket, 0.0, 101.0) == 0.0

    tokens = RateLimiter("t", tokens_per_minute=600)  # 10 tokens a second, at most 10 at once
    bucket = _Bucket(1.0, 10.0, 0.0)
    assert tokens._take(bucket, 5.0, 0.0) == 0.0 and tokens._take(bucket, 5.0, 0.0) == 0.0
    assert tokens._take(bucket, 5.0, 0.0) == pytest.approx(0.5)
    big = _Bucket(1.0, 10.0, 0.0)  # larger than a second's worth: goes on a full bucket, leaves a debt
    assert tokens._take(big, 50.0, 0.0) == 0.0 and big.tokens == -40.0
    assert tokens._take(big, 5.0, 0.0) == pytest.approx(4.5)  # the debt and the next cost, at 10 a second
    assert request_cost("x" * 400, 256) == 356
    # a clock stepped back 10 s: the bucket is rebased (refilling nothing), not waited out for 10 s
    step = _Bucket(1.0, 0.0, 100.0)
    assert [limiter._take(step, 0.0, now) for now in (100.0, 90.0, 91.0)] == [0.0, pytest.approx(1.0), 0.0]


def test_a_large_request_is_not_starved_by_small_ones() -> None:
    """6,000 tokens a minute (100 a second); 40-token requests use half of it, one every 0.8 s; a
    300-token request still goes within seconds, and over 60 s the tokens taken stay within the limit."""
    limiter = RateLimiter("mixed", tokens_per_minute=6000)
    bucket = _Bucket(1.0, 100.0, 0.0)
    taken, big_at, big_next, small_next, now = 0.0, None, 0.0, 0.0, 0.0
    while now < 60.0:
        if now >= small_next:
            wait = limiter._take(bucket, 40.0, now)
            small_next = now + (0.8 if wait == 0.0 else wait)
            taken += 40.0 if wait == 0.0 else 0.0
        if big_at is None and now >= big_next:
            wait = limiter._take(bucket, 300.0, now)
            if wait == 0.0:
                big_at, taken = now, taken + 300.0
            big_next = now + wait
        now = round(now + 0.01, 2)
    assert big_at is not None and big_at < 5.0, big_at
    assert taken <= 6000.0 + 100.0  # a minute's worth plus the full bucket it started with


def test_a_call_keeps_its_whole_counted_cost_when_the_answer_used_less() -> None:
    """OpenAI counts prompt + max_tokens at the request, whatever the answer used: at 6,000 tokens a
    minute (100 a second, 100 at once), two calls counted at 88 tokens each (the stub answers with a
    few) take 0.76 s or more, where a refund of the unused tokens would let the second go at once."""

    async def go() -> float:
        async with StubServer() as server:
            executor = OpenAIExecutor("stub", server.url, max_tokens=88, tokens_per_minute=6000, cache_path=None)
            assert executor._rate is not None
            start = time.perf_counter()
            for i in range(2):
                await executor.complete(f"q{i}", CallInfo("Custom", ITEM, 0))  # prompt 'qi': 88 + 2 // 4 = 88
            elapsed = time.perf_counter() - start
            await executor.close()
            assert server.requests == 2
            return elapsed

    assert request_cost("q0", 88) == 88
    assert run(go()) >= 0.76 - 1e-3  # the second waits for 76 of its 88 tokens at 100 a second


def test_every_executor_of_a_process_shares_one_budget(tmp_path: Path) -> None:
    """30 calls from two executors of one endpoint and model at 600 requests a minute (10 a second,
    10 at once) take at least 2 s, where either executor's 15 alone would take 0.5 s."""

    async def go() -> float:
        async with StubServer() as server:
            executors = [
                OpenAIExecutor("stub", server.url, requests_per_minute=600, max_concurrent_calls=32) for _ in range(2)
            ]
            assert executors[0]._rate is executors[1]._rate
            start = time.perf_counter()
            await asyncio.gather(
                *(ex.complete(f"q{i}", CallInfo("Custom", ITEM, 0)) for ex in executors for i in range(15))
            )
            elapsed = time.perf_counter() - start
            for ex in executors:
                await ex.close()
            assert server.requests == 30
            return elapsed

    elapsed = run(go())
    assert 1.9 <= elapsed < 10.0, elapsed
    limiter_for("http://elsewhere/v1|m", 600, None)
    with pytest.raises(InputError, match="one endpoint, one budget"):
        limiter_for("http://elsewhere/v1|m", 60, None)


SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from spogw.harness.executors.rate_limit import RateLimiter
limiter = RateLimiter("shared-key", requests_per_minute=600, path=Path(sys.argv[1]))
granted = []
take = limiter._take
def recording(bucket, cost, now):  # the clock reading each acquisition was granted at
    wait = take(bucket, cost, now)
    if wait == 0.0:
        granted.append(now)
    return wait
limiter._take = recording
print("ready", flush=True)
sys.stdin.readline()  # both processes start together
async def go():
    for _ in range(15):
        await limiter.acquire()
asyncio.run(go())
print(json.dumps(granted))
"""


def test_processes_naming_one_file_share_one_budget(tmp_path: Path) -> None:
    """Two processes, 15 acquisitions each, at 600 a minute (10 a second, 10 at once) through one file:
    30 in all, so the last is granted at least 2 s after the first (alone, each would need 0.5 s), and
    any 21 in a row span at least 1.1 s. The times checked are the clock readings the grants were made
    at, not when the awaiting coroutine resumed, which is up to the scheduler of a loaded machine.
    Failed on the limiter that read the clock before it held the bucket (30 grants in 1.98 s)."""
    path = tmp_path / "limits.sqlite"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(path)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in processes:
        assert p.stdout is not None and select.select([p.stdout], [], [], 60)[0], "a process never started"
        assert p.stdout.readline() == "ready\n"
    for p in processes:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in processes]
    assert [len(o) for o in outputs] == [15, 15]
    stamps = sorted(outputs[0] + outputs[1])
    assert stamps[-1] - stamps[0] >= 2.0 - 1e-6, stamps[-1] - stamps[0]
    for first, later in zip(stamps, stamps[20:], strict=False):  # 21 grants: 10 at once, 11 at 10/s
        assert later - first >= 1.1 - 1e-6, later - first


@settings(max_examples=300, deadline=None)
@given(
    rpm=st.sampled_from([None, 30.0, 600.0, 6000.0]),
    tpm=st.sampled_from([None, 600.0, 60_000.0]),
    steps=st.lists(st.tuples(st.floats(-0.05, 0.5), st.integers(0, 3000)), min_size=1, max_size=80),
)
def test_grants_never_exceed_the_limits_even_when_the_clock_reads_earlier(
    rpm: float | None, tpm: float | None, steps: list[tuple[float, int]]
) -> None:
    """Token-bucket invariant: between two grants, at most a full bucket plus the refill of the time
    between them was granted (plus the debt one oversized last request may leave). The readings are
    taken with the bucket held, so they only go back when the clock steps back: the time between two
    grants is then the time the clock ran forward (a step refills nothing, and is not waited out)."""
    if rpm is None and tpm is None:
        rpm = 60.0
    limiter = RateLimiter("prop", requests_per_minute=rpm, tokens_per_minute=tpm)
    cap_requests, cap_tokens = limiter._capacity()
    bucket = _Bucket(cap_requests, cap_tokens, 0.0)
    now, forward, grants = 0.0, 0.0, []  # forward: the time the clock ran forward
    for dt, cost in steps:
        forward += max(0.0, dt)
        now += dt
        if limiter._take(bucket, float(cost), now) == 0.0:
            grants.append((forward, cost))
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            span = grants[j][0] - grants[i][0]
            if rpm is not None:
                assert j - i + 1 <= cap_requests + span * rpm / 60.0 + 1e-6
            if tpm is not None:
                taken = sum(cost for _, cost in grants[i : j + 1])
                assert taken <= cap_tokens + span * tpm / 60.0 + max(0.0, grants[j][1] - cap_tokens) + 1e-6


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "sim", "requests_per_minute": 60}, "limit an endpoint"),
        ({"name": "openai", "model": "m", "rate_limit_file": "x.sqlite"}, "set requests_per_minute"),
        ({"name": "openai", "model": "m", "tokens_per_minute": 0}, "greater than 0"),
    ],
)
def test_rate_limit_fields_are_checked(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExecutorConfig(**fields)  # type: ignore[arg-type]
