"""Real executors against local servers: the OpenAI-compatible client (retries, faults, bounded
concurrency, cache, secrets) with the stub server, and the in-process hf executor."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.benchmarks.base import Item
from spogw.harness.cli import main
from spogw.harness.evaluate import evaluate_workflow
from spogw.harness.executors.base import CallInfo, InfraError
from spogw.harness.executors.openai_api import OpenAIExecutor
from spogw.harness.executors.stub_server import StubServer
from spogw.harness.workflows.engine import RunStatus, WorkflowEngine
from spogw.methods.static import workflow_source
from tests.conftest import run

DATA = Path(__file__).parent / "data" / "benchmarks"
ITEM = Item("q1", "math", "What is 6 * 7?", "42")
SECRET = "sk-test-THIS-MUST-NEVER-LEAK-0123456789"


def info(repeat: int = 0, occurrence: int = 0) -> CallInfo:
    return CallInfo("Custom", ITEM, repeat, occurrence)


def test_a_call_returns_the_reply_with_its_tokens_and_the_key_stays_secret(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STUB_KEY", SECRET)

    async def go() -> None:
        async with StubServer() as server:
            executor = OpenAIExecutor("stub", server.url, api_key_env="STUB_KEY", cache_path=tmp_path / "c.sqlite")
            completion = await executor.complete("What is 6 * 7?", info())
            assert completion.text.endswith("\\boxed{42}.") and (
                completion.prompt_tokens,
                completion.completion_tokens,
            ) == (5, 9)
            assert SECRET not in executor.describe() and SECRET not in repr(executor.__dict__.get("stats"))
            await executor.close()
            assert SECRET.encode() not in (tmp_path / "c.sqlite").read_bytes()

    run(go())
    monkeypatch.delenv("STUB_KEY")
    with pytest.raises(ValueError, match="STUB_KEY is not set"):
        OpenAIExecutor("stub", "http://127.0.0.1:9/v1", api_key_env="STUB_KEY")
    with pytest.raises(ValueError, match=r"executor\.model"):
        OpenAIExecutor(None, "http://127.0.0.1:9/v1")


@pytest.mark.parametrize("fault", ["429", "500", "garbage", "truncated", "hang", "reset"])
def test_each_fault_is_retried_and_persistent_faults_are_infra_errors(fault: str) -> None:
    async def go() -> None:
        # every request faults: after max_retries the call raises InfraError, never returns text
        async with StubServer(fault_rate=1.0, faults=(fault,), hang_s=5.0) as server:
            executor = OpenAIExecutor(
                "stub", server.url, max_retries=2, backoff_s=0.01, call_timeout_s=0.5, max_backoff_s=0.05
            )
            with pytest.raises(InfraError, match="failed after 2 retries"):
                await executor.complete("q", info())
            assert server.requests == 3 and executor.stats.retries == 2 and executor.stats.failures == 1
            await executor.close()

    run(go())


def test_a_client_error_is_not_retried() -> None:
    async def go() -> None:
        async with StubServer() as server:
            executor = OpenAIExecutor("stub", server.url.replace("/v1", "/nowhere"), max_retries=3, backoff_s=0.01)
            with pytest.raises(InfraError, match="HTTP 404"):
                await executor.complete("q", info())
            assert executor.stats.retries == 0
            await executor.close()

    run(go())


def test_concurrency_is_bounded() -> None:
    async def go() -> None:
        async with StubServer(latency_s=0.05) as server:
            executor = OpenAIExecutor("stub", server.url, max_concurrent_calls=4)
            await asyncio.gather(*(executor.complete(f"q{i}", info()) for i in range(24)))
            assert server.requests == 24 and 1 < server.max_in_flight <= 4
            await executor.close()

    run(go())


def test_cache_key_separates_repeats_and_occurrences(tmp_path: Path) -> None:
    async def go() -> None:
        async with StubServer() as server:
            executor = OpenAIExecutor("stub", server.url, cache_path=tmp_path / "c.sqlite")
            for repeat, occurrence in [(0, 0), (0, 1), (1, 0), (0, 0), (0, 1)]:
                await executor.complete("same prompt", info(repeat, occurrence))
            assert server.requests == 3 and executor.stats.cache_hits == 2
            await executor.close()

    run(go())


def test_fault_injection_200_runs_complete_none_lost_none_scored_zero() -> None:
    """20% of requests answered 429 / 500 / garbage / hang: every run ends ok or infra_error, and the
    retries are counted."""
    benchmark = load_benchmark("gsm_synth", size=100)
    _, source = workflow_source("cot")

    async def go() -> tuple[list, OpenAIExecutor, StubServer]:  # type: ignore[type-arg]
        async with StubServer(fault_rate=0.2, faults=("429", "500", "garbage", "hang"), hang_s=3.0, seed=1) as server:
            executor = OpenAIExecutor(
                "stub", server.url, max_retries=4, backoff_s=0.01, max_backoff_s=0.1, call_timeout_s=1.5
            )
            engine = WorkflowEngine(executor, concurrency=16, timeout_s=30)
            try:
                runs = await evaluate_workflow(source, benchmark, list(benchmark.items), engine, repeats=2)
            finally:
                await engine.close()
            return runs, executor, server

    runs, executor, server = run(go())
    print(f"stub served {dict(server.served)}; client: {executor.stats.summary()}")
    assert len(runs) == 200 and len({(r.item_id, r.repeat) for r in runs}) == 200
    assert {r.status for r in runs} <= {RunStatus.OK, RunStatus.INFRA_ERROR}
    assert all(r.score is None for r in runs if r.status == RunStatus.INFRA_ERROR)
    # every fault the server served is either retried or, the last of a call's attempts, that call's
    # failure (which of the 200 runs draws 5 faults in a row depends on the interleaving). At least:
    # on a loaded machine a healthy reply can also outlast the call timeout (client and server share
    # one event loop here) and is retried too; CI saw 50 retries for 47 faults at a 0.5 s timeout
    faults = sum(n for kind, n in server.served.items() if kind != "ok")
    assert executor.stats.retries + executor.stats.failures >= faults > 0
    assert executor.stats.network_calls == server.requests  # every attempt counted, none invented
    assert sum(r.status == RunStatus.OK for r in runs) >= 190


def test_eval_cli_second_run_makes_no_request(tmp_path: Path, capsys, spogw_cache: Path) -> None:  # type: ignore[no-untyped-def]
    async def go() -> tuple[int, int, int]:
        async with StubServer() as server:
            argv = [
                "eval", "--benchmark", "gsm8k", "--data", str(DATA / "gsm8k.jsonl"), "--workflow", "cot_sc",
                "--executor", "openai", "--model", "stub", "--base-url", server.url, "--repeats", "2", "--quiet",
            ]  # fmt: skip
            first = await asyncio.to_thread(main, [*argv, "--out", str(tmp_path / "a.parquet")])
            after_first = server.requests
            second = await asyncio.to_thread(main, [*argv, "--out", str(tmp_path / "b.parquet")])
            assert first == second == 0
            return after_first, server.requests, server.max_in_flight

    after_first, after_second, _ = run(go())
    out = capsys.readouterr().out
    assert after_first > 0 and after_second == after_first, "the second run is served from the cache"
    assert f"{after_first} calls: {after_first} from the cache, 0 requests" in out


def test_eval_cli_without_a_model_is_exit_2(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["eval", "--benchmark", "gsm_synth", "--workflow", "io", "--executor", "openai"]) == 2
    assert "executor.model" in capsys.readouterr().err


def test_the_key_never_reaches_outputs(monkeypatch, tmp_path: Path, capsys, spogw_cache: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STUB_KEY", SECRET)

    async def go() -> int:
        async with StubServer(fault_rate=0.5, faults=("500",)) as server:
            return await asyncio.to_thread(
                main,
                [
                    "eval",
                    "--benchmark",
                    "gsm8k",
                    "--data",
                    str(DATA / "gsm8k.jsonl"),
                    "--workflow",
                    "io",
                    "--executor",
                    "openai",
                    "--model",
                    "stub",
                    "--base-url",
                    server.url,
                    "--api-key-env",
                    "STUB_KEY",
                    "--repeats",
                    "1",
                    "--quiet",
                    "--no-cache",
                    "--out",
                    str(tmp_path / "s.parquet"),
                ],
            )

    assert run(go()) == 0
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    assert SECRET.encode() not in (tmp_path / "s.parquet").read_bytes()
    assert os.environ["STUB_KEY"] == SECRET


# ----------------------------------------------------------------------------------------------
# Real models: SmolLM2-135M-Instruct behind `transformers serve`, and in process (hf executor)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def smol_server(spogw_cache: Path):  # type: ignore[no-untyped-def]
    """`transformers serve` (transformers[serving]) on 127.0.0.1 with the offline SmolLM2 folder."""
    import subprocess
    import sys
    import time
    import urllib.request

    from spogw.harness.policy import smol

    folder = str(smol.convert())
    port = free_port()
    command = [str(Path(sys.executable).parent / "transformers"), "serve", folder, "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(
                    f"transformers serve did not start: {server.stderr.read().decode()[-2000:]}"
                ) from None
            time.sleep(1)
    yield url, folder
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_eval_against_a_real_server_runs_a_static_workflow_end_to_end(smol_server, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    url, folder = smol_server
    out = tmp_path / "real.parquet"
    argv = [
        "eval", "--benchmark", "gsm8k", "--data", str(DATA / "gsm8k.jsonl"), "--workflow", "cot",
        "--executor", "openai", "--model", folder, "--base-url", url, "--repeats", "1", "--max-tokens", "96",
        "--timeout-s", "300", "--split", "all", "--quiet", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    print(printed)
    frame = pd.read_parquet(out)
    assert len(frame) == 2 and set(frame["status"]) == {"ok"}, frame[["status", "reason"]]
    assert (frame["prompt_tokens"] > 20).all() and (frame["completion_tokens"] > 0).all()
    assert not frame["simulated"].any() and "SIMULATED" not in printed
    # the same evaluation again is served from the cache
    assert main([*argv[:-1], str(tmp_path / "again.parquet")]) == 0
    assert "2 calls: 2 from the cache, 0 requests" in capsys.readouterr().out


def test_hf_executor_batches_concurrent_calls_and_caches(small_generator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The in-process executor on the tiny test model (a real transformers model, not a good one)."""
    from transformers import AutoModelForCausalLM

    from spogw.harness.executors.local_model import HFExecutor
    from spogw.harness.policy import tiny

    folder = tmp_path / "model"  # a plain transformers folder, as a user would point to
    AutoModelForCausalLM.from_pretrained(tiny.tiny_dir(tiny.TEST_RECIPE)).save_pretrained(folder)
    small_generator.tokenizer.save_pretrained(folder)

    async def go() -> HFExecutor:
        executor = HFExecutor(
            str(folder), device="cpu", max_tokens=8, max_batch=4, batch_wait_s=0.05, cache_path=tmp_path / "c.sqlite"
        )
        first = await asyncio.gather(*(executor.complete(f"<|math|>\nQ{i}?\n", info()) for i in range(12)))
        again = await asyncio.gather(*(executor.complete(f"<|math|>\nQ{i}?\n", info()) for i in range(12)))
        assert [c.text for c in first] == [c.text for c in again]
        assert all(0 < c.completion_tokens <= 8 for c in first)
        await executor.close()
        return executor

    executor = run(go())
    assert executor.stats.calls == 24 and executor.stats.cache_hits == 12
    assert 3 <= executor.stats.network_calls < 12, "12 concurrent calls go out in a few batches of at most 4"


@pytest.mark.slow
def test_eval_with_smol_in_process(tmp_path: Path, capsys, spogw_cache: Path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    out = tmp_path / "smol.parquet"
    argv = [
        "eval", "--benchmark", "gsm8k", "--data", str(DATA / "gsm8k.jsonl"), "--workflow", "cot",
        "--executor", "hf", "--model", "smol", "--repeats", "1", "--max-tokens", "64", "--timeout-s", "300",
        "--quiet", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    frame = pd.read_parquet(out)
    print(capsys.readouterr().out)
    assert set(frame["status"]) == {"ok"} and (frame["completion_tokens"] > 0).all()
    assert frame["executor"].iloc[0] == "hf:smol"


def test_executor_from_config_builds_each_backend(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from spogw.harness.config import ExecutorConfig
    from spogw.harness.executors import executor_from_config

    monkeypatch.setenv("SPOGW_CACHE", str(tmp_path))
    sim = executor_from_config(ExecutorConfig(), seed=3)
    assert sim.simulated and "seed 3" in sim.describe()
    config = ExecutorConfig(
        name="openai", profile=None, model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1", max_concurrent_calls=7,
        input_price_per_mtok=0.15, output_price_per_mtok=0.6,
    )  # fmt: skip
    executor = executor_from_config(config)
    assert not executor.simulated and executor.describe() == "openai:gpt-4o-mini @ http://127.0.0.1:9/v1"
    assert executor.cost_usd(1_000_000, 1_000_000) == pytest.approx(0.75)  # type: ignore[attr-defined]
    assert (tmp_path / "executor-responses.sqlite").exists()
    run(executor.close())
    with pytest.raises(ValueError, match="'vllm'"):  # vLLM serves through the openai executor (docs/gpu.md)
        ExecutorConfig(name="vllm", profile=None, model="x")


def test_each_run_is_priced_from_its_tokens() -> None:
    benchmark = load_benchmark("gsm_synth", size=4)
    _, source = workflow_source("cot_sc")

    async def go() -> list:  # type: ignore[type-arg]
        async with StubServer() as server:
            executor = OpenAIExecutor("stub", server.url, input_price_per_mtok=2.0, output_price_per_mtok=8.0)
            engine = WorkflowEngine(executor, concurrency=4, timeout_s=30)
            try:
                return await evaluate_workflow(source, benchmark, list(benchmark.items), engine, repeats=1)
            finally:
                await engine.close()

    runs = run(go())
    for r in runs:
        assert r.status == RunStatus.OK and r.calls > 1 and r.completion_tokens == 9 * r.calls
        assert r.cost_usd == pytest.approx((2.0 * r.prompt_tokens + 8.0 * r.completion_tokens) / 1e6)
