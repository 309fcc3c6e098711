"""The run folder: what it holds, the resolved experiment it was started with (a changed experiment
is refused), per-cell done markers, the generator as loaded, and the parquet exports."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from spogw.harness.atomic import atomic_path, atomic_write_text
from spogw.harness.config import ConfigError, ExperimentConfig, dotted_fields
from spogw.harness.errors import check_folder_target
from spogw.harness.policy.model import decoding_mode

if TYPE_CHECKING:
    from spogw.harness.store import SQLiteStore

RESOLVED = "config.resolved.yaml"


def default_run_dir(name: str) -> Path:
    """Where an experiment (or sweep) named ``name`` runs when no folder is given."""
    return Path("runs") / name


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'field: old -> new' for every dotted field whose value differs."""
    flat_old, flat_new = dotted_fields(old), dotted_fields(new)
    return [
        f"{key}: {flat_old.get(key, '(absent)')!r} -> {flat_new.get(key, '(absent)')!r}"
        for key in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(key, "(absent)") != flat_new.get(key, "(absent)")
    ]


def prepare_run_dir(config: ExperimentConfig, run_dir: Path, force_new: bool) -> None:
    """Create the run folder, or check that the folder holds a run of this same experiment."""
    resolved = config.model_dump(mode="json")
    path = run_dir / RESOLVED
    if path.is_file():
        previous = yaml.safe_load(path.read_text()) or {}
        # through today's schema: a field added since the run began reads as its default; a field
        # since removed or changed fails validation and is compared as written (the difference shown)
        with contextlib.suppress(ValueError):
            previous = ExperimentConfig.model_validate(previous).model_dump(mode="json")
        differences = config_differences(previous, resolved)
        if differences and not force_new:
            raise ConfigError(
                f"{run_dir} holds a run of a different experiment configuration; fields that differ:\n  "
                + "\n  ".join(differences)
                + "\nUse another --run-dir, or --force-new to move the old run aside and start over."
            )
        if differences:
            print(f"moved the previous run folder to {move_aside(run_dir)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(resolved, sort_keys=False))


def move_aside(folder: Path) -> Path:
    """Rename ``folder`` to ``<folder>.old-<time>`` (what --force-new does with a run or sweep
    folder); returns the new path."""
    moved = folder.with_name(f"{folder.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(folder, moved)
    return moved


class RunFolderBusy(ConfigError):
    """Another process is using the run folder (exit 2: nothing was touched)."""


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process: an exclusive lock on ``.<name>.lock`` beside the folder
    (beside, so that --force-new can move the folder aside under it). The lock ends with the
    process, however it ends. Raises RunFolderBusy naming the PID that holds it."""
    import fcntl

    check_folder_target(run_dir, "--run-dir")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.with_name(f".{run_dir.name}.lock")
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderBusy(
                f"{run_dir} is in use by process {holder} (its lock: {path}); wait for it to end, or give "
                "this run another --run-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def done_marker(run_dir: Path, label: str, seed: int) -> Path:
    return run_dir / "done" / f"{label}.seed{seed}"


GENERATOR_FILE = "generator.json"


def record_generator(run_dir: Path, generator: Any, config: Any) -> None:
    """What the generator is (identity, prompt format, decoding, stop ids), for the report's first
    lines; written once per run folder."""
    path = run_dir / GENERATOR_FILE
    if path.exists():
        return
    facts = {
        "name": config.name,
        "identity": generator.identity,
        "prompt_format": generator.prompt_format,
        "decoding": decoding_mode(config),
        "backend": config.backend,
        "stop_ids": list(generator.stop_ids),
    }
    atomic_write_text(path, json.dumps(facts, indent=2) + "\n")


def write_item_scores(run_dir: Path, store: SQLiteStore) -> Path:
    """item_scores.parquet from the store (so it always reflects every run)."""
    from spogw.harness.scores import item_score_frame

    path = run_dir / "item_scores.parquet"
    _write_parquet_atomic(item_score_frame(store.table("eval_items")), path)
    return path


def _write_parquet_atomic(frame: Any, path: Path) -> None:
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)


def export(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """The tables of ``<run_dir>/rollouts.sqlite`` as parquet files (for pandas, polars, DuckDB),
    every cell's shard merged into it first (a run killed before its last merge included)."""
    from spogw.harness import cells
    from spogw.harness.store import TABLES, SQLiteStore

    database = run_dir / "rollouts.sqlite"
    if cells.shard_cells(run_dir):
        cells.merge(run_dir)
    if not database.is_file():
        raise FileNotFoundError(f"{run_dir}: no rollouts.sqlite (is this a run folder?)")
    out_dir = out_dir or run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with SQLiteStore(database) as store:
        for table in TABLES:
            path = out_dir / f"{table}.parquet"
            _write_parquet_atomic(store.table(table), path)
            written.append(path)
    return written
