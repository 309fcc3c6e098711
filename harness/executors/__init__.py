"""Executor backends (registered in harness/catalog.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spogw.harness.config import ExecutorConfig
    from spogw.harness.executors.base import Executor


def parse_executor_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'sim:medium' -> ('sim', {'profile': 'medium'}); 'openai' -> ('openai', {})."""
    name, _, profile = spec.partition(":")
    return name, ({"profile": profile} if profile else {})


def build_executor(name: str, **options: Any) -> Executor:
    """Instantiate a registered executor with keyword options (RegistryError names the close ones)."""
    from spogw.harness.catalog import registries

    return registries()["executors"].get(name)(**options)


def response_cache_path() -> Path:
    from spogw.harness.policy.tiny import cache_root

    return cache_root() / "executor-responses.sqlite"


def executor_from_config(config: ExecutorConfig, seed: int = 0) -> Executor:
    """The executor an experiment's `executor` section describes (sim seeded by ``seed``)."""
    cache = response_cache_path() if config.cache else None
    common = {"model": config.model, "temperature": config.temperature, "max_tokens": config.max_tokens}
    options: dict[str, Any]
    if config.name == "sim":
        options = {"profile": config.profile, "seed": seed}
    elif config.name == "openai":
        options = common | {
            "base_url": config.base_url,
            "api_key_env": config.api_key_env,
            "max_concurrent_calls": config.max_concurrent_calls,
            "call_timeout_s": config.call_timeout_s,
            "max_retries": config.max_retries,
            "abort_after_failures": config.abort_after_failures,
            "cache_path": cache,
            "input_price_per_mtok": config.input_price_per_mtok,
            "output_price_per_mtok": config.output_price_per_mtok,
            "requests_per_minute": config.requests_per_minute,
            "tokens_per_minute": config.tokens_per_minute,
            "rate_limit_file": config.rate_limit_file,
        }
    elif config.name == "hf":
        options = common | {
            "device": config.device,
            "dtype": config.dtype,
            "max_batch": config.max_batch,
            "cache_path": cache,
        }
    else:
        options = common | {"max_batch": config.max_batch, "cache_path": cache}
    return build_executor(config.name, **options)
