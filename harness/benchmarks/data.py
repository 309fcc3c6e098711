"""Where benchmark rows come from: a local JSONL file in the upstream format, or a dataset through
`datasets` (a Hugging Face hub id for users who are online, or a local dataset folder).

Every loader reads rows with `read_rows` and turns each into an `Item`; a row that lacks a field is
an error naming the file (or dataset), the row number and the field.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl or .jsonl.gz file; a broken line is an error naming file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object")
            rows.append(row)
    return rows


def read_dataset(name: str, config: str | None = None, split: str = "test") -> list[dict[str, Any]]:
    """Rows of ``split`` of a `datasets` dataset: a hub id (downloaded once into the datasets cache
    by users who are online) or a local folder of data files (how the tests exercise this path)."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, config, split=split)
    except Exception as err:  # datasets raises many types (offline, missing config, bad split)
        raise ValueError(f"dataset {name!r} (config {config!r}, split {split!r}) could not be loaded: {err}") from err
    return [dict(row) for row in dataset]


def read_rows(
    path: str | None, hub: str | None, hub_config: str | None, hub_split: str, default: Path | None = None
) -> tuple[list[dict[str, Any]], str]:
    """(rows, where they came from) from a file, a dataset, or the loader's ``default`` file."""
    if path is not None and hub is not None:
        raise ValueError("give a benchmark either a path or a hub dataset, not both")
    if hub is not None:
        return read_dataset(hub, hub_config, hub_split), f"datasets:{hub}" + (f"/{hub_config}" if hub_config else "")
    source = Path(path).expanduser() if path is not None else default
    if source is None:
        raise ValueError("this benchmark ships no data: set benchmark.path (a JSONL file) or benchmark.hub")
    if not source.is_file():
        raise FileNotFoundError(f"benchmark data file {source} does not exist")
    return read_jsonl(source), str(source)


def field(row: Mapping[str, Any], name: str, where: str, number: int, kind: type = str) -> Any:
    """``row[name]`` checked to be a ``kind``; else an error naming the source, row and field."""
    value = row.get(name)
    if not isinstance(value, kind):
        got = "missing" if value is None else type(value).__name__
        raise ValueError(f"{where}: row {number}: field {name!r} must be {kind.__name__} ({got})")
    return value
