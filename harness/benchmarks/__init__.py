"""Benchmarks: loaders (registered in harness/catalog.py) and scorers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Benchmark
    from spogw.harness.config import BenchmarkConfig


def load_benchmark(
    name: str,
    path: str | None = None,
    size: int | None = None,
    hub: str | None = None,
    hub_config: str | None = None,
    hub_split: str | None = None,
) -> Benchmark:
    """Load a registered benchmark by name: from its data file, a `datasets` dataset (hub id or
    local folder), or its bundled or generated data; ``size`` keeps the first items."""
    from spogw.harness.benchmarks.data import Source
    from spogw.harness.catalog import registries

    loader = registries()["benchmarks"].get(name)
    return loader(Source(path, hub, hub_config, hub_split, size))


def load_from_config(config: BenchmarkConfig) -> Benchmark:
    return load_benchmark(config.name, config.path, config.size, config.hub, config.hub_config, config.hub_split)
