"""Executor backends (registered in harness/catalog.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.executors.base import Executor


def parse_executor_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'sim:medium' -> ('sim', {'profile': 'medium'}); 'openai' -> ('openai', {})."""
    name, _, profile = spec.partition(":")
    return name, ({"profile": profile} if profile else {})


def build_executor(name: str, **options: Any) -> Executor:
    """Instantiate a registered executor; an unimplemented one is a clear error, not a stub."""
    from harness.catalog import registries

    executors = registries()["executors"]
    entry = executors.entry(name)
    if not entry.implemented:
        raise NotImplementedError(f"executor {name!r} is registered but not implemented yet ({entry.description})")
    return entry.load()(**options)  # type: ignore[no-any-return]
