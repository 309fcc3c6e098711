"""The generator served by vLLM's OpenAI-compatible server (`generator.backend: vllm_server`).

ioGRPO collects a whole iteration with one frozen adapter, so the sampler never needs live weights:
only the adapter, as a file the server can read. Before a batch, `VLLMServerSampler` compares a
digest of the trainable adapter with the one it serves; when they differ it saves the adapter
(atomically, under ``adapter_dir``), loads it with ``POST /v1/load_lora_adapter`` under a name
never used before (vLLM refuses a loaded name with 400, and a name reused after an unload can be
answered from stale prefix-cache entries), checks with a canary that the adapter and not the base
model answers, then unloads the superseded one. An adapter whose LoRA B matrices are all zero (the
untrained generator) is the base model: it is served as the base model, with no load.

Each sample is one ``POST /v1/completions`` with the token-id prompt, the per-sample seed of its
key (`key_seed`, the seed the in-process sampler uses), the workflow's stop string, the model's
end-of-sequence ids and ``return_token_ids``. The server's log-probs (of raw logits, from another
kernel) are returned in ``Sample.logprobs`` only as a diagnostic: collection recomputes the old
log-probs with the trainer's teacher-forced pass (`exact_logprobs` is False) and records the
largest difference in the rollouts (the report's Run health section).

Failures are retried (`VLLMServerSampler._post`); a restarted server's lost adapter is reloaded.
Protocol: vLLM's ``vllm/entrypoints/openai/serving_models.py`` (load/unload, their status codes)
and its completions API (``return_token_ids``, ``include_stop_str_in_output``, ``stop_token_ids``).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from spogw.harness.errors import ServiceUnavailable
from spogw.harness.policy.canary import (
    CANARY_QUESTION,
    CANARY_TOKENS,
    CanaryResult,
    adapter_digest,
    canary_verdict,
    distance,
)
from spogw.harness.policy.sampling import Sample, SampleKey, SamplingParams, encode_prompts, key_seed

if TYPE_CHECKING:
    from spogw.harness.policy.model import Generator

log = logging.getLogger(__name__)


class GeneratorUnavailable(ServiceUnavailable):
    """The generator's server did not answer after every retry: the run stops, what it collected is
    kept, and running the same command again resumes."""


class ServedAdapterError(ServiceUnavailable):
    """The server refused an adapter operation (a name already loaded, an adapter it cannot find or
    read, a model name it does not serve), answered what cannot be read, or the canary found the
    base model answering for an adapter. The message names the server, the adapter and what the
    server said; the CLI prints it without a traceback (exit 3)."""


def _error_message(response: Any) -> str:
    """The message of a vLLM error body: {"error": {"message": ...}} (newer) or {"message": ...}."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return str(body)[:300]


def _finish(choice: dict[str, Any]) -> Literal["stop", "eos", "length"]:
    """vLLM: finish_reason 'length', or 'stop' with stop_reason the stop string (str), a stop
    token id (int) or None (the model's own end of sequence)."""
    if choice.get("finish_reason") == "length":
        return "length"
    return "stop" if isinstance(choice.get("stop_reason"), str) else "eos"


class _AdapterLost(Exception):
    """The server answered 404 for the adapter's name: it no longer has it (it was restarted)."""


class VLLMServerSampler:
    """Samples the generator's workflows from a vLLM server (see the module docstring).

    ``base_url``: the server's OpenAI-compatible root (http://host:8000/v1); ``served_model``: the
    base model's name there; ``adapter_dir``: where adapters are written (the server must read it);
    ``timeout_s``: wall-clock limit of one request; ``max_retries``: retries of a request that failed
    on the connection or with 429/5xx (backoff from ``backoff_s``, doubling, at most 30 s);
    ``concurrency``: requests in flight at once (and the sequences collection draws per batch)."""

    exact_logprobs = False

    def __init__(
        self,
        base_url: str,
        served_model: str,
        adapter_dir: Path,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 5,
        concurrency: int = 64,
        backoff_s: float = 1.0,
    ) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.base_url = base_url.rstrip("/")
        self.served_model = served_model
        self.adapter_dir = Path(adapter_dir)
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._http = requests.Session()
        self._http.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=concurrency))
        self._http.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=concurrency))
        if api_key:
            self._http.headers["Authorization"] = f"Bearer {api_key}"
        self._lock = threading.Lock()
        self._checked = False
        self._digest: str | None = None
        self._name: str | None = None
        """The name the current adapter is loaded under (None: the base model is served)."""
        self._noise: float | None = None
        self.canaries: list[CanaryResult] = []
        self.reloads = 0

    def close(self) -> None:
        self._http.close()

    # -- the HTTP calls, each with its retries ---------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], adapter: str | None = None) -> Any:
        """POST ``body`` to ``base_url/path``, retrying connection errors, timeouts, 429 and 5xx;
        returns the first other response. A 404 when ``adapter`` is given raises _AdapterLost (the
        server forgot that adapter); GeneratorUnavailable after the last retry."""
        import requests

        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 30.0))
            try:
                response = self._http.post(f"{self.base_url}/{path}", json=body, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as err:  # refused, reset, timed out
                last = f"{type(err).__name__}: {err}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}: {_error_message(response)}"
                continue
            if response.status_code == 404 and adapter is not None:
                raise _AdapterLost(_error_message(response))
            return response
        raise GeneratorUnavailable(
            f"generator server {self.base_url} did not answer {path} after {self.max_retries + 1} tries ({last}). "
            "Everything collected so far is kept: start the server and run the same command again to resume."
        )

    def check_server(self) -> None:
        """``GET /v1/models`` once: the server answers and serves ``served_model`` (a base_url
        without /v1, or another model name, fails here with the names the server has)."""
        import requests

        try:
            response = self._http.get(f"{self.base_url}/models", timeout=min(self.timeout_s, 30.0))
        except (requests.ConnectionError, requests.Timeout) as err:
            raise GeneratorUnavailable(
                f"generator server {self.base_url} did not answer GET /models ({type(err).__name__}: {err}). "
                "Everything collected so far is kept: start the server and run the same command again to resume."
            ) from None
        try:
            names = [str(card.get("id")) for card in response.json().get("data", [])]
        except (ValueError, AttributeError) as err:
            raise ServedAdapterError(
                f"generator server {self.base_url}: GET /models gave no model list (HTTP {response.status_code}, "
                f"{type(err).__name__}); base_url is the server's OpenAI root, e.g. http://localhost:8000/v1"
            ) from None
        if self.served_model not in names:
            raise ServedAdapterError(
                f"generator server {self.base_url} serves {names}, not {self.served_model!r}: set "
                "generator.server.served_model to the base model's name there (vllm serve --served-model-name)"
            )

    def load_adapter(self, name: str, path: Path, fresh: bool = False) -> None:
        """``POST /v1/load_lora_adapter``; ServedAdapterError when the server refuses (400: the name is
        already loaded, or the folder is not an adapter; 404: no adapter at ``path``). ``fresh``: the
        name was made for this load, so "already loaded" means an earlier try of it succeeded."""
        response = self._post("load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        if fresh and response.status_code == 400 and "already been loaded" in _error_message(response):
            return  # a retry after an answer lost on the way (a timeout, a 5xx from a proxy)
        if response.status_code != 200:
            raise ServedAdapterError(
                f"generator server {self.base_url} refused to load adapter {name!r} from {path} "
                f"(HTTP {response.status_code}: {_error_message(response)}). Was it started with --enable-lora "
                "and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and can it read that folder?"
            )

    def unload_adapter(self, name: str) -> None:
        """``POST /v1/unload_lora_adapter``; ServedAdapterError when the server has no such adapter (404)."""
        response = self._post("unload_lora_adapter", {"lora_name": name})
        if response.status_code != 200:
            raise ServedAdapterError(
                f"generator server {self.base_url} could not unload adapter {name!r} "
                f"(HTTP {response.status_code}: {_error_message(response)})"
            )

    def complete(
        self, model: str, prompt_ids: Sequence[int], params: SamplingParams, seed: int, stop_ids: Sequence[int]
    ) -> dict[str, Any]:
        """One ``POST /v1/completions`` with a token-id prompt; the first choice. A 404 for an
        adapter raises _AdapterLost; any other refusal, or an answer without token ids, raises
        ServedAdapterError."""
        body = {
            "model": model,
            "prompt": list(prompt_ids),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": seed,
            "stop": list(params.stop),
            "include_stop_str_in_output": True,
            "stop_token_ids": list(stop_ids),
            "skip_special_tokens": True,
            "return_token_ids": True,
            "logprobs": 0,
        }
        response = self._post("completions", body, adapter=model if model != self.served_model else None)
        if response.status_code != 200:
            hint = (
                " generator.server.served_model must be the base model's name on the server (GET /v1/models)"
                if response.status_code == 404
                else ""
            )
            raise ServedAdapterError(
                f"generator server {self.base_url} refused a completion of model {model!r} "
                f"(HTTP {response.status_code}: {_error_message(response)}).{hint}"
            )
        try:
            choice = dict(response.json()["choices"][0])
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ServedAdapterError(
                f"generator server {self.base_url} answered a completion that cannot be read ({type(err).__name__})"
            ) from None
        if choice.get("token_ids") is None:
            raise ServedAdapterError(
                f"generator server {self.base_url} returned no token_ids: it is not a vLLM server that "
                "supports return_token_ids (vLLM >= 0.10.2)"
            )
        return choice

    # -- the adapter the server serves -------------------------------------------------------
    def _serve(self, generator: Generator, digest: str) -> None:
        """Save the trainable adapter, load it under a new name, check it with the canary (unloading
        it again when the canary fails), then unload the adapter it replaces."""
        from spogw.harness.policy.checkpoints import save_adapter

        folder = self.adapter_dir / digest[:16]
        if not (folder / "adapter_config.json").is_file():
            save_adapter(generator.model, folder, generator.identity)
        name = f"spogw-{digest[:12]}-{secrets.token_hex(4)}"  # never reused (see module docstring)
        self.load_adapter(name, folder.resolve(), fresh=True)
        try:
            result = self._canary(generator, name)
        except _AdapterLost:
            raise ServedAdapterError(
                f"generator server {self.base_url} lost adapter {name!r} right after loading it"
            ) from None
        self.canaries.append(result)
        entry = {"event": "load", "adapter": name, "path": str(folder), **asdict(result)}
        self._record({**entry, "decided": result.decided, "passed": result.passed})
        if not result.passed:
            self.unload_adapter(name)
            raise ServedAdapterError(
                f"canary: generator server {self.base_url} answered for adapter {name!r} with log-probs "
                f"{result.to_base:.3g} from the base model's and {result.to_adapter:.3g} from the adapter's: "
                "the adapter is not what answers (a stale name or prefix cache, or the server ignores LoRA)"
            )
        previous, self._name, self._digest = self._name, name, digest
        if previous is not None:
            try:
                self.unload_adapter(previous)
            except ServedAdapterError as err:  # a restarted server no longer has it: nothing to free
                log.warning("%s", err)

    def _greedy_logprobs(
        self, generator: Generator, model_name: str, adapter: bool
    ) -> tuple[list[float], list[float], list[float]]:
        """The canary prompt's greedy completion under ``model_name`` on the server: its served
        log-probs, and the trainer's teacher-forced ones with the adapter (when ``adapter``) and
        without it, all at T = 1."""
        import torch

        from spogw.harness.policy.sampling import token_logprobs

        prompt = generator.prompt("math", CANARY_QUESTION)
        prompt_ids = encode_prompts(generator.tokenizer, [prompt], generator.max_prompt_tokens)[0]
        greedy = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=CANARY_TOKENS, stop=())
        choice = self.complete(model_name, prompt_ids, greedy, 0, generator.stop_ids)
        served = [float(x) for x in choice["logprobs"]["token_logprobs"]]
        tokens = list(choice["token_ids"])
        model = generator.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                mine = token_logprobs(model, prompt_ids, tokens, 1.0).tolist() if adapter else []
                with model.disable_adapter():
                    base = token_logprobs(model, prompt_ids, tokens, 1.0).tolist()
        finally:
            model.train(was_training)
        return served, mine, base

    def _canary(self, generator: Generator, name: str) -> CanaryResult:
        """`canary_verdict` for adapter ``name``, against the noise floor (measured on first use)."""
        if self._noise is None:
            served_base, _, local_base = self._greedy_logprobs(generator, self.served_model, adapter=False)
            self._noise = distance(served_base, local_base)
        served, mine, base = self._greedy_logprobs(generator, name, adapter=True)
        return canary_verdict(served, mine, base, name, self._noise)

    def _record(self, entry: dict[str, Any]) -> None:
        """One line per adapter event in ``adapter_dir/served.jsonl`` (what answered when)."""
        self.adapter_dir.mkdir(parents=True, exist_ok=True)
        with (self.adapter_dir / "served.jsonl").open("a") as out:
            out.write(json.dumps({"time": time.time(), **entry}) + "\n")

    def _model_name(self, generator: Generator, lost: str | None = None) -> str:
        """The name to request: the base model for an identity adapter, else the current adapter's,
        loaded first when the weights changed (or reloaded when the server lost ``lost``)."""
        with self._lock:
            if not self._checked:
                self.check_server()
                self._checked = True
            digest = adapter_digest(generator.model)
            if digest is None:
                return self.served_model
            if lost is not None and lost == self._name:
                self.reloads += 1
                self._record({"event": "lost", "adapter": lost})
                self._name = self._digest = None
            if digest != self._digest:
                self._serve(generator, digest)
            assert self._name is not None
            return self._name

    # -- sampling ---------------------------------------------------------------------------------
    def sample(
        self, generator: Generator, prompts: Sequence[str], keys: Sequence[SampleKey], params: SamplingParams
    ) -> list[Sample]:
        """One completion per (prompt, key), requested concurrently (``concurrency`` in flight); the
        first failure cancels the requests not yet sent and is raised."""
        if len(prompts) != len(keys):
            raise ValueError(f"{len(prompts)} prompts but {len(keys)} keys")
        if not prompts:
            return []
        encoded = encode_prompts(generator.tokenizer, prompts, generator.max_prompt_tokens)
        name = self._model_name(generator)

        def one(index: int) -> Sample:
            model = name
            for _ in range(self.max_retries + 1):
                try:
                    choice = self.complete(model, encoded[index], params, key_seed(keys[index]), generator.stop_ids)
                    break
                except _AdapterLost:
                    model = self._model_name(generator, lost=model)
            else:
                raise GeneratorUnavailable(f"generator server {self.base_url} kept losing the adapter {model!r}")
            returned = choice.get("prompt_token_ids")
            if returned is not None and list(returned) != list(encoded[index]):
                raise ServedAdapterError(f"generator server {self.base_url} read another prompt than the ids sent")
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or ()
            return Sample(
                key=tuple(keys[index]),
                prompt_ids=tuple(encoded[index]),
                completion_ids=tuple(int(t) for t in choice["token_ids"]),
                logprobs=tuple(float(x) for x in logprobs),
                # decoded here, as the in-process sampler does: vLLM's text stops at the stop string
                text=generator.tokenizer.decode(list(choice["token_ids"]), skip_special_tokens=True),
                finish=_finish(choice),
            )

        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)))
        try:
            return list(pool.map(one, range(len(prompts))))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the requests not yet sent are not sent
            raise
        finally:
            pool.shutdown(wait=True)
