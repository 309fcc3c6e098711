"""Where benchmark rows come from: a local JSONL file in the upstream format, or a dataset through
`datasets` (a Hugging Face hub id for users who are online, or a local dataset folder).

Every loader is a row -> Item function handed to `rows_benchmark` with the experiment's `Source`; a
row that lacks a field is an error naming the file (or dataset), the row number and the field.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spogw.harness.errors import InputError, ServiceUnavailable

if TYPE_CHECKING:
    from spogw.harness.benchmarks.base import Benchmark, Item, Scorer


@dataclass(frozen=True)
class Source:
    """Where a benchmark's rows come from and how many to keep (an experiment's `benchmarks` entry:
    path, hub, hub_config, hub_split, size)."""

    path: str | None = None
    hub: str | None = None
    hub_config: str | None = None
    hub_split: str | None = None
    """None: the benchmark's usual evaluation split."""
    size: int | None = None
    """Keep the first `size` items (generated benchmarks: generate this many)."""


DEFAULT_SOURCE = Source()
"""No file, no dataset, no size: the loader's bundled or generated data (frozen, safe to share)."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl or .jsonl.gz file; a broken line is an error naming file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict[str, Any]] = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{number}: not valid JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise InputError(f"{path}:{number}: expected a JSON object")
                rows.append(row)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason}) after {len(rows)} good rows") from None
    except gzip.BadGzipFile as err:
        raise InputError(f"{path}: not a gzip file ({err}); name it .jsonl if it is plain text") from None
    if not rows:
        raise InputError(f"{path}: no rows (the file is empty; one JSON object per line expected)")
    return rows


def read_dataset(name: str, config: str | None = None, split: str = "test") -> list[dict[str, Any]]:
    """Rows of ``split`` of a `datasets` dataset: a hub id (downloaded once into the datasets cache
    by users who are online) or a local folder of data files (how the tests exercise this path)."""
    from datasets import load_dataset

    where = f"dataset {name!r} (config {config!r}, split {split!r})"
    try:
        dataset = load_dataset(name, config, split=split)
    except ConnectionError as err:  # offline, or the hub does not answer: not the user's field
        raise ServiceUnavailable(
            f"{where}: the Hugging Face hub cannot be reached and the dataset is not in the cache ({err}). "
            "Run once while online, or give the benchmark a local path."
        ) from err
    except (FileNotFoundError, ValueError) as err:  # no such dataset or folder; unknown config or split
        raise InputError(f"{where} could not be loaded: {err}") from err
    return [dict(row) for row in dataset]


def read_rows(source: Source, default_split: str, default_file: Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """(rows, where they came from) from a file, a dataset, or the loader's ``default_file``."""
    if source.path is not None and source.hub is not None:
        raise InputError("give a benchmark either a path or a hub dataset, not both")
    if source.hub is not None:
        rows = read_dataset(source.hub, source.hub_config, source.hub_split or default_split)
        return rows, f"datasets:{source.hub}" + (f"/{source.hub_config}" if source.hub_config else "")
    path = Path(source.path).expanduser() if source.path is not None else default_file
    if path is None:
        raise InputError("this benchmark ships no data: set benchmark.path (a JSONL file) or benchmark.hub")
    if not path.is_file():
        raise FileNotFoundError(f"benchmark data file {path} does not exist")
    return read_jsonl(path), str(path)


def rows_benchmark(
    name: str,
    domain: str,
    scorer: Scorer,
    to_item: Callable[[Mapping[str, Any], str, int], Item],
    source: Source,
    default_split: str = "test",
    default_file: Path | None = None,
) -> Benchmark:
    """A benchmark from rows: each row (with where it came from and its 1-based number, for
    errors) becomes an Item; the first `source.size` are kept."""
    from spogw.harness.benchmarks.base import Benchmark

    rows, where = read_rows(source, default_split, default_file)
    items = [to_item(row, where, number) for number, row in enumerate(rows, start=1)]
    items = items[: source.size] if source.size is not None else items
    return Benchmark(name, domain, tuple(items), scorer, f"{where} ({len(items)} items)")


def generated_benchmark(
    name: str,
    domain: str,
    scorer: Scorer,
    generate: Callable[[int, int], list[Item]],
    templates: int,
    source: Source,
    seed: int,
    default_size: int,
) -> Benchmark:
    """A benchmark the harness generates: ``generate(size, seed)`` items (``source.size``, else
    ``default_size``). Raises InputError when the source names a file or a dataset: there is none."""
    from spogw.harness.benchmarks.base import Benchmark

    if source.path is not None or source.hub is not None:
        raise InputError(f"{name} is generated; it reads no file or dataset (set benchmark.size instead)")
    size = source.size or default_size
    return Benchmark(
        name=name,
        domain=domain,
        items=tuple(generate(size, seed)),
        scorer=scorer,
        source=f"harness generator {name} ({templates} templates), size={size}, seed={seed}",
    )


def field(row: Mapping[str, Any], name: str, where: str, number: int, kind: type = str) -> Any:
    """``row[name]`` checked to be a ``kind``; else an error naming the source, row and field."""
    value = row.get(name)
    if not isinstance(value, kind):
        got = "missing" if value is None else type(value).__name__
        raise InputError(f"{where}: row {number}: field {name!r} must be {kind.__name__} ({got})")
    return value
