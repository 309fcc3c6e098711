"""Named registries of the harness's pluggable parts.

One `Registry` class serves methods, benchmarks, executors, generators and static workflows.
Entries are registered with a decorator or directly; a duplicate name is an error (two parts
claiming one name is always a bug); a lookup miss suggests close names. An entry may be a lazy
``"module:attr"`` string so that listing the registry never imports torch or an API client.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """A name that is missing from, or already taken in, a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; users should read plain text.
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered part: its name, the object (or a lazy ``module:attr`` path) and metadata."""

    name: str
    target: T | str
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def load(self) -> T:
        """The registered object, importing it first when it was registered lazily."""
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            module = importlib.import_module(module_name)
            return getattr(module, attr)
        return self.target


class Registry(Generic[T]):
    """A name -> part mapping with helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        target: T | str | None = None,
        *,
        description: str = "",
        **metadata: Any,
    ) -> Any:
        """Register ``target`` under ``name``; without a target, return a decorator.

        >>> reg = Registry("thing")
        >>> @reg.register("a", description="the letter a")
        ... def a(): ...
        """
        if target is None:

            def decorator(obj: T) -> T:
                self._add(Entry(name, obj, description or _first_doc_line(obj), metadata))
                return obj

            return decorator
        self._add(Entry(name, target, description, metadata))
        return target

    def _add(self, entry: Entry[T]) -> None:
        if not entry.name or not entry.name.replace("_", "").replace("-", "").isalnum():
            raise RegistryError(f"invalid {self.kind} name {entry.name!r}: use letters, digits, _ and -")
        if entry.name in self._entries:
            raise RegistryError(f"{self.kind} {entry.name!r} is already registered")
        self._entries[entry.name] = entry

    def entry(self, name: str) -> Entry[T]:
        """The entry registered as ``name``; a miss names the closest registered names."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def get(self, name: str) -> T:
        """The object registered as ``name`` (imported if lazy)."""
        return self.entry(name).load()

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(sorted(self._entries))})"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)


def _first_doc_line(obj: object) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# The project's registries. Their entries are declared in harness/catalog.py (lazy paths), so
# importing this module stays instant.
METHODS: Registry[Any] = Registry("method")
BENCHMARKS: Registry[Callable[..., Any]] = Registry("benchmark")
EXECUTORS: Registry[Callable[..., Any]] = Registry("executor")
GENERATORS: Registry[Any] = Registry("generator")
STATIC_WORKFLOWS: Registry[Any] = Registry("static workflow")
