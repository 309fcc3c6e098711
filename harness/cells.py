"""Cells, the unit of distribution: a (method, seed) of an experiment writes only its own store shard.

A run folder holds one shard per cell, ``cells/<label>.seed<k>/rollouts.sqlite`` (the tables of
harness/store.py, only that cell's rows), so that any number of cells write at once, from any
number of processes and machines sharing the folder, with no lock on a common file. A cell reads
another cell's shard read-only where their rows are equal by construction (iteration 0 of untrained
twins, harness/plan.py). ``<run_dir>/rollouts.sqlite`` is the union: each cell's shard is merged
into it when the cell stops (done or not) and once more when every cell is done; reports, exports
and `spogw report` read it.

A cell runs under ``cells/<name>/.lock`` (an exclusive flock that ends with its process): a retried
cell whose earlier process is still alive (an orphan of a dead driver) waits for it instead of
writing beside it.

A run folder from before the shards (every row in rollouts.sqlite) resumes: a cell's new shard is
seeded with that cell's rows from the union, once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from spogw.harness import failpoints
from spogw.harness.atomic import atomic_write_text
from spogw.harness.console import progress_log
from spogw.harness.store import TABLES, SQLiteStore, sqlite_uri

CELLS = "cells"
SHARD = "rollouts.sqlite"
UNION = "rollouts.sqlite"
_IDENTITY = "cell.json"
LOCK_NOTICE_S = 30.0
"""A cell that waits this long for its lock says so (in the log) and goes on waiting."""


@dataclass(frozen=True)
class Cell:
    """One (method label, seed) of an experiment."""

    label: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.label}.seed{self.seed}"

    def folder(self, run_dir: Path) -> Path:
        return run_dir / CELLS / self.name

    def shard(self, run_dir: Path) -> Path:
        return self.folder(run_dir) / SHARD


def open_shard(run_dir: Path, cell: Cell) -> SQLiteStore:
    """The cell's own store, created on first use (seeded with the cell's rows of a union written
    before the shards existed)."""
    folder = cell.folder(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    identity = folder / _IDENTITY
    if not identity.is_file():
        atomic_write_text(identity, json.dumps({"label": cell.label, "seed": cell.seed}) + "\n")
    path = cell.shard(run_dir)
    union = run_dir / UNION
    if not path.exists() and union.is_file():
        # seeded under another name, then renamed: a kill before the rename leaves no shard (the
        # next open seeds again), never an empty shard whose merge would erase the cell's old rows
        seeding = folder / f".{SHARD}.seeding-{os.getpid()}"
        SQLiteStore(seeding).close()
        _copy_cell(seeding, union, cell)
        os.replace(seeding, path)
    return SQLiteStore(path)


def twin_shards(run_dir: Path, labels: Sequence[str], seed: int) -> dict[str, SQLiteStore]:
    """Label -> a read-only store of that label's cell (same seed), for the twins whose shard
    exists; a twin whose rows are still in the union of an older run folder reads from there."""
    found: dict[str, SQLiteStore] = {}
    for label in labels:
        path = Cell(label, seed).shard(run_dir)
        if path.is_file():
            found[label] = SQLiteStore(path, read_only=True)
        elif (run_dir / UNION).is_file():
            found[label] = SQLiteStore(run_dir / UNION, read_only=True)
    return found


def close_all(stores: Mapping[str, SQLiteStore]) -> None:
    for store in stores.values():
        store.close()


@contextlib.contextmanager
def cell_lock(run_dir: Path, cell: Cell) -> Iterator[None]:
    """Hold ``cell`` for this process (flock on ``cells/<name>/.lock``): another process running
    it (a retried cell's orphan) is waited for, with a log line every LOCK_NOTICE_S."""
    folder = cell.folder(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        next_notice = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= next_notice:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    progress_log.info(f"cell {cell.name} is held by {holder}; waiting for it to end")
                    next_notice += LOCK_NOTICE_S
                time.sleep(1.0)
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shard_cells(run_dir: Path) -> list[Cell]:
    """The cells that have a shard in ``run_dir``, in name order."""
    cells = []
    for identity in sorted((run_dir / CELLS).glob(f"*/{_IDENTITY}")):
        if (identity.parent / SHARD).is_file():
            data = json.loads(identity.read_text())
            cells.append(Cell(str(data["label"]), int(data["seed"])))
    return cells


def merge(run_dir: Path, cells: Sequence[Cell] | None = None) -> Path:
    """Make ``<run_dir>/rollouts.sqlite`` hold each cell's rows exactly as its shard does (every
    cell with a shard when ``cells`` is None): per cell, one transaction replaces its rows. Any
    process may merge at any time; two merges of the same shards write the same rows."""
    union = run_dir / UNION
    SQLiteStore(union).close()  # created with today's schema, or migrated to it
    for cell in shard_cells(run_dir) if cells is None else cells:
        if cell.shard(run_dir).is_file():
            _copy_cell(union, cell.shard(run_dir), cell)
    failpoints.hit("cells.merged")
    return union


def _copy_cell(target: Path, source: Path, cell: Cell) -> None:
    """Replace ``cell``'s rows in the store at ``target`` by its rows in ``source`` (the columns
    both have), in one transaction: a shard into the union, or an old union into a new shard."""
    connection = sqlite3.connect(sqlite_uri(target, "rw"), uri=True, isolation_level=None, timeout=60.0)
    with contextlib.closing(connection) as db:
        db.execute("ATTACH DATABASE ? AS source", (sqlite_uri(source),))
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in TABLES:
                mine = [row[1] for row in db.execute(f"PRAGMA main.table_info({table})")]
                theirs = {row[1] for row in db.execute(f"PRAGMA source.table_info({table})")}
                if not theirs:
                    continue
                columns = ", ".join(f'"{c}"' for c in mine if c in theirs)
                where = "method = ? AND seed = ?"
                db.execute(f"DELETE FROM main.{table} WHERE {where}", (cell.label, cell.seed))
                db.execute(
                    f"INSERT INTO main.{table} ({columns}) SELECT {columns} FROM source.{table} WHERE {where}",
                    (cell.label, cell.seed),
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        db.execute("DETACH DATABASE source")
