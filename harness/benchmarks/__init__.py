"""Benchmarks: loaders (registered in harness/catalog.py) and scorers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.benchmarks.base import Benchmark
    from harness.config import BenchmarkConfig


def load_benchmark(name: str, path: str | None = None, size: int | None = None) -> Benchmark:
    """Load a registered benchmark by name (its data file or generator size optional)."""
    from harness.catalog import registries

    loader = registries()["benchmarks"].get(name)
    return loader(path=path, size=size)  # type: ignore[no-any-return]


def load_from_config(config: BenchmarkConfig) -> Benchmark:
    return load_benchmark(config.name, config.path, config.size)
