"""The generator served by vLLM's server (backend vllm_server), against the local stand-in that speaks
vLLM's protocol with the harness's own sampler: the same rollouts as in-process sampling, adapters
loaded under new names with a canary, vLLM's errors, retries, and a server that dies mid-collection."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.collect import CollectSpec, collect_questions
from spogw.harness.config import ConfigError, GeneratorConfig, load_experiment
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.policy.canary import adapter_digest, canary_verdict
from spogw.harness.policy.model import Generator, attach_lora, decoding_mode
from spogw.harness.policy.sampling import SamplingParams
from spogw.harness.policy.served import (
    GeneratorUnavailable,
    ServedAdapterError,
    VLLMServerSampler,
)
from spogw.harness.policy.standin import VLLMStandIn
from spogw.harness.rollouts import MemoryStore, Rollout
from spogw.harness.workflows.engine import WorkflowEngine
from tests.conftest import run, standin_process

GSM = load_benchmark("gsm_synth", size=60)
PARAMS = SamplingParams(1.0, 1.0, 64)
REPO = Path(__file__).resolve().parents[1]


def _fresh_generator() -> Generator:
    """The small test build with LoRA (seeded as load_generator does), a model of its own."""
    from transformers import AutoModelForCausalLM

    from spogw.harness.policy import tiny

    directory = tiny.build(tiny.TEST_RECIPE, progress=False)
    base = AutoModelForCausalLM.from_pretrained(directory)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = attach_lora(base, GeneratorConfig())
    identity = f"tiny-{tiny.recipe_hash(tiny.TEST_RECIPE)}"
    return Generator(model, tiny.load_tokenizer(directory), identity, "compact", tiny.TEST_RECIPE.max_prompt_tokens)


@contextmanager
def serving(standin: VLLMStandIn) -> Iterator[VLLMStandIn]:
    """The stand-in on its own event loop in a thread (the harness's collection has its own loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(standin.start(), loop).result(30)
    try:
        yield standin
    finally:
        asyncio.run_coroutine_threadsafe(standin.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def trainer(spogw_cache: Path) -> Generator:
    return _fresh_generator()


@pytest.fixture(scope="module")
def standin(spogw_cache: Path) -> Iterator[VLLMStandIn]:
    with serving(VLLMStandIn(_fresh_generator(), served_model="tiny-test")) as server:
        yield server


def _remote(trainer: Generator, url: str, adapter_dir: Path, **kwargs: Any) -> Generator:
    sampler = VLLMServerSampler(url, "tiny-test", adapter_dir, backoff_s=0.05, **kwargs)
    return dataclasses.replace(trainer, served=sampler)


def _collect(generator: Generator, items: list[Any], store: MemoryStore, iteration: int = 0) -> list[Rollout]:
    async def go() -> list[Rollout]:
        engine = WorkflowEngine(SimExecutor("medium"), concurrency=2, timeout_s=30)
        try:
            spec = CollectSpec("t", "spogw", 0, iteration, num_samples=4, repeats=1)
            return await collect_questions(generator, engine, GSM, items, spec, PARAMS, store)
        finally:
            await engine.close()

    return run(go())


def _perturb(model: Any, seed: int) -> None:
    """Give the trainable adapter non-zero B matrices (a trained adapter's stand-in)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name and ".default." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=gen) * 0.5)


def _zero(model: Any) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name and ".default." in name:
                parameter.zero_()


def _assert_same_rollouts(remote: list[Rollout], local: list[Rollout], trainer: Generator) -> float:
    """Same keys, completions, code, statuses and scores. Old log-probs: the served run's are the
    trainer's teacher-forced pass, bit for bit; the in-process run keeps the sampler's own (float32
    hf sampling is exact), which differ from a full forward pass by float rounding: the incremental
    KV-cache decode sums in another order (measured here: at most 1.9e-6; 1.4e-6 in
    tests/test_generator.py). Returns the largest absolute old log-prob difference."""
    from spogw.harness.policy.sampling import token_logprobs

    assert [r.key for r in remote] == [r.key for r in local]
    worst = 0.0
    for a, b in zip(remote, local, strict=True):
        assert a.completion_ids == b.completion_ids and a.prompt_ids == b.prompt_ids
        assert (a.workflow_code, a.status, a.score, a.score_repeats) == (
            b.workflow_code,
            b.status,
            b.score,
            b.score_repeats,
        )
        for x, y in zip(a.old_logp, b.old_logp, strict=True):
            assert abs(x - y) <= 4e-6, (x, y)
            worst = max(worst, abs(x - y))
        assert a.sampler_logp_diff is not None and b.sampler_logp_diff is None
    with torch.no_grad():
        trainer.model.eval()
        forced = token_logprobs(trainer.model, remote[0].prompt_ids, remote[0].completion_ids, PARAMS.temperature)
        trainer.model.train()
    assert tuple(forced.tolist()) == remote[0].old_logp
    return worst


def test_served_collection_equals_in_process_with_the_base_and_with_an_adapter(
    trainer: Generator, standin: VLLMStandIn, tmp_path: Path
) -> None:
    items = list(GSM.items[:5])
    remote = _remote(trainer, standin.url, tmp_path / "adapters")
    try:
        _zero(trainer.model)  # the untrained generator: the base model is served, no adapter is loaded
        _assert_same_rollouts(_collect(remote, items, MemoryStore()), _collect(trainer, items, MemoryStore()), trainer)
        assert standin.adapters == {} and remote.served is not None and remote.served.canaries == []

        _perturb(trainer.model, 1)  # a trained adapter: saved, loaded under a new name, canary checked
        _assert_same_rollouts(
            _collect(remote, items, MemoryStore(), 1), _collect(trainer, items, MemoryStore(), 1), trainer
        )
        first = next(iter(standin.adapters))
        assert remote.served.canaries[-1].passed and remote.served.canaries[-1].adapter == first
        assert remote.served.canaries[-1].adapter_vs_base > 1e-3, "the canary can tell this adapter from the base"
        assert max(standin.batches) > 1, "concurrent requests were drawn in shared batches, as vLLM does"

        _perturb(trainer.model, 2)  # the next version: a new name, the superseded one unloaded
        _collect(remote, items[:1], MemoryStore(), 2)
        assert len(standin.adapters) == 1 and first not in standin.adapters
        log = (tmp_path / "adapters" / "served.jsonl").read_text().splitlines()
        assert len(log) == 2 and all('"passed": true' in line for line in log)
    finally:
        _zero(trainer.model)


def test_an_adapter_the_server_lost_is_reloaded_under_a_new_name(
    trainer: Generator, standin: VLLMStandIn, tmp_path: Path
) -> None:
    remote = _remote(trainer, standin.url, tmp_path)
    assert remote.served is not None
    try:
        _perturb(trainer.model, 3)
        keys = [(0, 1, "q", k) for k in range(3)]
        prompts = [trainer.prompt("math", GSM.items[0].question)] * 3
        before = remote.sample(prompts, keys, PARAMS)
        name = next(iter(standin.adapters))
        standin.forget_adapters()  # what a restarted server remembers
        after = remote.sample(prompts, keys, PARAMS)
        assert [s.completion_ids for s in after] == [s.completion_ids for s in before]
        assert remote.served.reloads == 1 and len(standin.adapters) == 1 and name not in standin.adapters
    finally:
        _zero(trainer.model)


def test_server_errors_are_retried_then_reported(trainer: Generator, standin: VLLMStandIn, tmp_path: Path) -> None:
    keys, prompts = [(0, 0, "q", 0)], [trainer.prompt("math", GSM.items[0].question)]
    patient = _remote(trainer, standin.url, tmp_path, max_retries=3)
    standin.fail_next = 3
    expected = trainer.sample(prompts, keys, PARAMS)
    assert [s.completion_ids for s in patient.sample(prompts, keys, PARAMS)] == [expected[0].completion_ids]
    assert standin.fail_next == 0
    impatient = _remote(trainer, standin.url, tmp_path, max_retries=1)
    standin.fail_next = 2
    with pytest.raises(GeneratorUnavailable, match=r"did not answer completions after 2 tries \(HTTP 503"):
        impatient.sample(prompts, keys, PARAMS)
    nobody = _remote(trainer, "http://127.0.0.1:9/v1", tmp_path, max_retries=0)
    with pytest.raises(GeneratorUnavailable, match="run the same command again to resume"):
        nobody.sample(prompts, keys, PARAMS)


def test_a_reused_name_an_unknown_adapter_and_a_folder_without_one_are_clear_errors(
    trainer: Generator, standin: VLLMStandIn, tmp_path: Path
) -> None:
    from spogw.harness.policy.checkpoints import save_adapter

    sampler = VLLMServerSampler(standin.url, "tiny-test", tmp_path, backoff_s=0.05)
    folder = save_adapter(trainer.model, tmp_path / "a", trainer.identity)
    sampler.load_adapter("spogw-x", folder)
    try:
        with pytest.raises(
            ServedAdapterError, match=r"adapter 'spogw-x'.*HTTP 400: The lora adapter 'spogw-x' has already"
        ):
            sampler.load_adapter("spogw-x", folder)
    finally:
        sampler.unload_adapter("spogw-x")
    with pytest.raises(ServedAdapterError, match=r"'spogw-x' \(HTTP 404: The lora adapter 'spogw-x' cannot be found"):
        sampler.unload_adapter("spogw-x")
    with pytest.raises(ServedAdapterError, match=r"HTTP 404: .*No adapter found for"):
        sampler.load_adapter("spogw-y", tmp_path / "nothing-here")
    misnamed = _remote(trainer, standin.url, tmp_path)
    assert misnamed.served is not None
    misnamed.served.served_model = "Qwen/Qwen2.5-7B-Instruct"  # not the name the server serves
    with pytest.raises(
        ServedAdapterError, match=r"serves \['tiny-test'.*not 'Qwen/Qwen2.5-7B-Instruct': set generator"
    ):
        misnamed.sample([trainer.prompt("math", "1 + 1?")], [(0, 0, "q", 0)], PARAMS)
    with pytest.raises(ServedAdapterError, match=r"HTTP 404: The model `Qwen/Qwen2.5-7B-Instruct` does not exist"):
        misnamed.served.complete("Qwen/Qwen2.5-7B-Instruct", [1, 2], PARAMS, 0, ())
    without_v1 = _remote(trainer, standin.url.removesuffix("/v1"), tmp_path)
    with pytest.raises(ServedAdapterError, match=r"gave no model list .* base_url is the server's OpenAI root"):
        without_v1.sample([trainer.prompt("math", "1 + 1?")], [(0, 0, "q", 0)], PARAMS)
    # a load retried after its answer was lost: the server already has the fresh name, which is success
    folder = save_adapter(trainer.model, tmp_path / "b", trainer.identity)
    sampler.load_adapter("spogw-fresh", folder)
    sampler.load_adapter("spogw-fresh", folder, fresh=True)
    sampler.unload_adapter("spogw-fresh")


def test_the_canary_fails_when_the_base_model_answers_for_the_adapter(trainer: Generator, tmp_path: Path) -> None:
    class IgnoresAdapters(VLLMStandIn):  # a server with LoRA silently off
        @contextmanager
        def _answering(self, model_name: str) -> Iterator[None]:
            with self.generator.model.disable_adapter():
                yield

    with serving(IgnoresAdapters(_fresh_generator(), served_model="tiny-test")) as server:
        remote = _remote(trainer, server.url, tmp_path)
        try:
            _perturb(trainer.model, 4)
            with pytest.raises(ServedAdapterError, match=r"canary: .* the adapter is not what answers"):
                remote.sample([trainer.prompt("math", "1 + 1?")], [(0, 1, "q", 0)], PARAMS)
        finally:
            _zero(trainer.model)


def test_canary_verdict_by_hand() -> None:
    near_adapter = canary_verdict([-1.0, -2.0], [-1.01, -2.0], [-1.5, -2.5], "a", noise=0.02)
    assert (near_adapter.to_adapter, near_adapter.to_base, near_adapter.adapter_vs_base) == pytest.approx(
        (0.01, 0.5, 0.5)
    )
    assert near_adapter.decided and near_adapter.passed
    assert not canary_verdict([-1.5, -2.5], [-1.01, -2.0], [-1.5, -2.5], "a", noise=0.02).passed
    # the adapter moves the canary by 0.05, the server's kernels by 0.024 (bf16): 0.05 < 3 x 0.024 + 1e-3,
    # so the canary cannot decide, and a server answering with the base model is not blamed on noise
    undecided = canary_verdict([-1.5, -2.5], [-1.05, -2.0], [-1.0, -2.0], "a", noise=0.024)
    assert not undecided.decided and undecided.passed
    assert canary_verdict([-3.0], [-1.0], [-1.0 + 1e-4], "a").passed, "an adapter the canary cannot tell apart passes"
    with pytest.raises(ValueError, match="same non-zero number"):
        canary_verdict([], [], [], "a")


def test_adapter_digest_is_none_for_the_identity_and_follows_the_weights(trainer: Generator) -> None:
    try:
        _zero(trainer.model)
        assert adapter_digest(trainer.model) is None
        _perturb(trainer.model, 5)
        first = adapter_digest(trainer.model)
        assert first is not None and adapter_digest(trainer.model) == first
        _perturb(trainer.model, 6)
        assert adapter_digest(trainer.model) not in (None, first)
    finally:
        _zero(trainer.model)


def test_a_server_killed_mid_collection_resumes_with_nothing_lost(trainer: Generator, tmp_path: Path) -> None:
    """The stand-in as its own process exits after 20 completions, while the third slice (2
    questions x 4 samples: 8 requests in flight) is being drawn; the collection stops with
    GeneratorUnavailable, keeping the whole slices it drew. A new server and the same collection
    again: the rollouts equal an uninterrupted in-process run drawn in the same slices."""
    from spogw.harness import collect as collect_module

    items = list(GSM.items[10:16])
    store = MemoryStore()
    original = collect_module.SEQUENCES_PER_BATCH
    collect_module.SEQUENCES_PER_BATCH = 8  # the in-process run's slices: as the served run's below
    try:
        expected = _collect(trainer, items, MemoryStore())
        with standin_process(exit_after=20) as url, pytest.raises(GeneratorUnavailable):
            _collect(_remote(trainer, url, tmp_path, max_retries=2, concurrency=8), items, store)
        kept = store.get("t", "spogw", 0, 0)
        assert 0 < len(kept) < 24 and len(kept) % 8 == 0, "whole slices were kept, and only those"
        with standin_process() as url:
            resumed = _collect(_remote(trainer, url, tmp_path, concurrency=8), items, store)
    finally:
        collect_module.SEQUENCES_PER_BATCH = original
    _assert_same_rollouts(resumed, expected, trainer)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "vllm"}, "was removed: serve the model with `vllm serve"),
        ({"backend": "vllm_server"}, "needs base_url"),
        ({"base_url": "http://x/v1"}, "apply to backend 'vllm_server' only"),
        ({"server": {"max_retries": 2}}, "apply to backend 'vllm_server' only"),
    ],
)
def test_server_fields_are_checked(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GeneratorConfig(name="hf", model="m", **fields)


def test_grammar_decoding_is_refused_on_the_server() -> None:
    config = GeneratorConfig(name="tiny", backend="vllm_server", base_url="http://x/v1")
    with pytest.raises(ValueError, match="set decoding: free"):
        decoding_mode(config)
    assert decoding_mode(config.model_copy(update={"decoding": "free"})) == "free"


def test_an_experiment_file_with_the_old_backend_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    text = (REPO / "tests" / "data" / "runner_small.yaml").read_text()
    path.write_text(text.replace("tiny_recipe: test", "tiny_recipe: test\n  backend: vllm"))
    with pytest.raises(ConfigError, match=r"generator.backend"):
        load_experiment(path)


def test_a_run_with_the_served_generator_equals_the_in_process_run_at_iteration_zero(
    standard_tiny: Path, tmp_path: Path
) -> None:
    """The whole runner with generator.backend vllm_server (the stand-in serving the standard tiny
    generator, whose workflows run: it learns): iteration 0 (the untrained generator, served as the
    base model) gives the in-process run's rollouts and evaluation; the trained adapter of iteration
    1 is written to the run folder, loaded and canary-checked; the report's Run health gives the
    served log-prob gap."""
    from chaos import run_tables

    from spogw.harness.policy.model import load_generator
    from spogw.harness.runner import run_experiment
    from spogw.reports.health import SERVED_GAP
    from spogw.reports.report import finish_report

    small = REPO / "tests" / "data" / "runner_small.yaml"
    free = ["generator.tiny_recipe=standard", "generator.decoding=free", "stats.baseline=null",
            "methods=[{name: spogw, overrides: {num_samples: 4, group_size: 3, max_groups: 4, sharpen_t: 1, "
            "min_group_std: 0.0, learning_rate: 0.05, questions_per_step: 2}}]"]  # fmt: skip
    local_dir = run_experiment(load_experiment(small, free), tmp_path / "local", progress=False)
    config = GeneratorConfig(decoding="free")
    generator = load_generator(config, device="cpu", progress=False)
    with serving(VLLMStandIn(generator, served_model=generator.identity)) as standin:  # the default served name
        served = [f"generator.base_url={standin.url}", "generator.backend=vllm_server"]
        served_dir = run_experiment(
            load_experiment(small, [*free, *served]), tmp_path / "served", progress=False, finish=finish_report
        )
    local, remote = run_tables(local_dir), run_tables(served_dir)
    with sqlite3.connect(local_dir / "rollouts.sqlite") as db:  # run_tables' columns: wall_s left out
        columns = [c[1] for c in db.execute("PRAGMA table_info(rollouts)") if c[1] != "wall_s"]
    iteration, logp, gap = columns.index("iteration"), columns.index("old_logp"), columns.index("sampler_logp_diff")

    def comparable(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        return [tuple(v for i, v in enumerate(row) if i not in (logp, gap)) for row in rows if row[iteration] == 0]

    assert comparable(remote["rollouts"]) == comparable(local["rollouts"]) != []
    evaluated = [c for c in remote["eval_items"] if c[3] == 0]
    assert evaluated == [c for c in local["eval_items"] if c[3] == 0] != []
    log = (served_dir / "served_adapters" / "served.jsonl").read_text()
    assert '"event": "load"' in log and '"passed": true' in log
    health = (served_dir / "report.md").read_text().split("## Run health")[1].split("\n## ")[0]
    assert SERVED_GAP in health
    gap = float(health.split("| spogw |")[1].split("|")[-2])
    assert 0.0 < gap < 1e-4, "the stand-in reports its sampler's log-probs: the gap is float rounding"


def test_the_server_fields_reach_the_sampler(
    trainer: Generator, standin: VLLMStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """server.max_concurrent_requests bounds the requests in flight; api_key_env is sent as a bearer
    token (and a missing variable is named); adapter_dir is where adapters go; request_timeout_s ends
    a request the server never answers."""
    import socket

    from spogw.harness.errors import InputError
    from spogw.harness.policy.model import served_sampler

    prompts = [trainer.prompt("math", GSM.items[0].question)] * 8
    keys = [(0, 0, "q", k) for k in range(8)]
    for bound in (2, 8):
        standin.max_in_flight = 0
        remote = _remote(trainer, standin.url, tmp_path, concurrency=bound)
        remote.sample(prompts, keys, PARAMS)
        assert standin.max_in_flight <= bound
    assert standin.max_in_flight > 2, "8 requests at once when allowed"

    server = {"request_timeout_s": 0.5, "max_retries": 0, "api_key_env": "GEN_KEY", "adapter_dir": str(tmp_path / "a")}
    config = GeneratorConfig(name="hf", model="m", backend="vllm_server", base_url="http://x/v1", server=server)
    with pytest.raises(InputError, match="GEN_KEY is not set"):
        served_sampler(config, "m", None)
    monkeypatch.setenv("GEN_KEY", "secret")
    sampler = served_sampler(config, "m", tmp_path / "ignored")
    assert sampler._http.headers["Authorization"] == "Bearer secret" and sampler.adapter_dir == tmp_path / "a"
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        sampler.base_url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        with pytest.raises(GeneratorUnavailable, match="ReadTimeout"):
            sampler.complete("m", [1, 2], PARAMS, 0, ())


def test_a_resolved_config_with_the_server_defaults_loads_again(tmp_path: Path) -> None:
    """config.resolved.yaml writes every field, generator.server's defaults included: it must load."""
    import yaml

    config = load_experiment(REPO / "tests" / "data" / "runner_small.yaml")
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert load_experiment(path).generator == config.generator
