"""The run folder's database: ``<run_dir>/rollouts.sqlite`` with tables ``rollouts``, ``eval_items``,
``iterations`` (one summary per method x seed x iteration: training score and time spent),
``steps`` (the metrics of every optimizer step), ``groups`` (the groups each GRPO-family update
trained on, before and after curation: what the report's curation section reads) and
``search_rounds`` (every proposal of a search method, methods/aflow.py: what a killed search resumes
from and the report's search section reads).

Longer than 400 lines because the run folder's whole schema is kept in one file: every table's
record, key and column types beside the one class that writes them and the read-only readers.

SQLite in WAL mode, one transaction per write batch, ``INSERT OR IGNORE`` on the unique keys: a
process killed at any moment leaves every batch either fully written or absent, and writing the same
rows again (a resumed run) changes nothing. Tuples (token ids, log-probs, per-repeat scores) are
stored as JSON text, which round-trips floats exactly.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from spogw.harness import failpoints
from spogw.harness.errors import InputError
from spogw.harness.rollouts import Rollout, RolloutKey
from spogw.harness.sqlite_wal import enable_wal

BUSY_TIMEOUT_S = 60.0
"""How long a connection waits for another process's lock on the file."""
TABLES = ("rollouts", "eval_items", "iterations", "steps", "groups", "search_rounds")
ROLLOUT_KEY = ("experiment", "method", "seed", "iteration", "query_id", "sample_idx")
_ROLLOUT_JSON = ("prompt_ids", "completion_ids", "old_logp", "score_repeats")
_ROLLOUT_TYPES = {
    "seed": "INTEGER",
    "iteration": "INTEGER",
    "sample_idx": "INTEGER",
    "score": "REAL",
    "executor_calls": "INTEGER",
    "executor_tokens": "INTEGER",
    "wall_s": "REAL",
    "sampler_logp_diff": "REAL",
}


@dataclass(frozen=True)
class EvalRow:
    """One execution of the workflow a method produced for a held-out item (or a static workflow)."""

    experiment: str
    method: str
    seed: int
    iteration: int
    benchmark: str
    item_id: str
    repeat: int
    workflow_code: str | None
    structure: str
    status: str
    reason: str
    score: float | None
    """None for infra_error (not the workflow's fault; left out of item scores)."""
    calls: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    transfer: str = ""
    """'' when run by the method's own executor; else the name of the evaluation.transfer executor."""
    cost_usd: float | None = 0.0
    """What the executor calls cost (priced APIs; 0 otherwise; None in stores that predate the column)."""
    answer: str | None = None
    """The workflow's final answer (None when it gave none)."""


EVAL_KEY = ("method", "seed", "iteration", "benchmark", "item_id", "repeat", "transfer")


@dataclass(frozen=True)
class IterationRow:
    """What one iteration of a trained method cost and scored (the report's cost axes)."""

    method: str
    seed: int
    iteration: int
    train_score: float
    """Mean score of the workflows collected at this iteration (NaN when none were collected)."""
    rollouts: int
    collect_s: float
    """Wall time of collection (sampling + execution; online: collection and updates together)."""
    train_s: float
    """Wall time of the updates (offline schedule)."""
    steps: int
    """Optimizer steps taken on this iteration's data."""


ITERATION_KEY = ("method", "seed", "iteration")
_ITERATION_TYPES = {
    "seed": "INTEGER",
    "iteration": "INTEGER",
    "train_score": "REAL",
    "rollouts": "INTEGER",
    "collect_s": "REAL",
    "train_s": "REAL",
    "steps": "INTEGER",
}
_EVAL_TYPES = {
    "cost_usd": "REAL",
    "seed": "INTEGER",
    "iteration": "INTEGER",
    "repeat": "INTEGER",
    "score": "REAL",
    "calls": "INTEGER",
    "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER",
    "wall_s": "REAL",
}


@dataclass(frozen=True)
class StepRow:
    """One optimizer step of a trained method (methods/steps.py's metrics)."""

    method: str
    seed: int
    iteration: int
    step: int
    """Optimizer steps before this one in the (method, seed) run: the x axis of training curves."""
    metrics: str
    """JSON object of the step's metrics (loss, policy_term, kl_term, clip_fraction, ...)."""
    tokens_per_s: float
    """Throughput of the step (elapsed time: the one field a resumed run may change)."""


STEP_KEY = ("method", "seed", "step")
_STEP_TYPES = {"seed": "INTEGER", "iteration": "INTEGER", "step": "INTEGER", "tokens_per_s": "REAL"}


@dataclass(frozen=True)
class GroupRow:
    """One group the trainer built for a question: every group drawn from the m samples (stage
    'built'), and each group left after the variance filter and sharpening (stage 'kept')."""

    method: str
    seed: int
    iteration: int
    query_id: str
    stage: str
    """'built' or 'kept'."""
    group_index: int
    """Position of the group in the stage's order."""
    members: str
    """JSON list of the members' sample indices ('kept'); '' for 'built' rows (their std suffices)."""
    std: float
    """Population std of the members' scores."""


GROUP_KEY = ("method", "seed", "iteration", "query_id", "stage", "group_index")
_GROUP_TYPES = {"seed": "INTEGER", "iteration": "INTEGER", "group_index": "INTEGER", "std": "REAL"}


@dataclass(frozen=True)
class SearchRow:
    """One proposal of a search (harness/search.py): the seed workflow (round 0), a child that was
    evaluated, or one rejected before any executor call (a duplicate, invalid code)."""

    method: str
    seed: int
    benchmark: str
    round: int
    attempt: int
    """Which proposal of the round this is (0 first; a rejected one is followed by the next)."""
    parent: int
    """The round whose workflow was modified (-1 for the seed workflow)."""
    modification: str
    """What the optimizer said it changed ('' for the seed workflow)."""
    code: str
    structure: str
    """The operator calls of ``code`` (harness/workflows/structure.py; '' when it does not parse)."""
    status: str
    """'evaluated'; or unscored: 'duplicate' (the same modification of the same parent, or code
    evaluated before: never evaluated twice), 'invalid' (rejected by validation, or every run failed
    by the workflow's fault), 'infra_error' (the executor failed runs after retries), 'exhausted'
    (the optimizer had no modification left for the parent, which is then never drawn again)."""
    reason: str
    """Why a proposal was rejected ('' for evaluated ones)."""
    score: float | None
    """Mean over the search items of the mean over repeats (None unless evaluated)."""
    item_scores: str
    """JSON object item id -> mean score over the repeats ('{}' unless evaluated)."""
    failures: str
    """JSON list of a few failed items ({item, question, answer, expected}): the logs a later
    optimizer call is shown when this workflow is the parent."""
    calls: int
    """Executor calls of the evaluation on the search split."""
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    optimizer_calls: int
    optimizer_prompt_tokens: int
    optimizer_completion_tokens: int
    wall_s: float
    """Wall time of the proposal and its evaluation (the one field a resumed search may change)."""


SEARCH_KEY = ("method", "seed", "benchmark", "round", "attempt")
_SEARCH_TYPES = {
    "seed": "INTEGER", "round": "INTEGER", "attempt": "INTEGER", "parent": "INTEGER", "score": "REAL",
    "calls": "INTEGER", "prompt_tokens": "INTEGER", "completion_tokens": "INTEGER", "cost_usd": "REAL",
    "optimizer_calls": "INTEGER", "optimizer_prompt_tokens": "INTEGER", "optimizer_completion_tokens": "INTEGER",
    "wall_s": "REAL",
}  # fmt: skip


def _create_table(name: str, columns: Sequence[str], types: dict[str, str], key: Sequence[str]) -> str:
    body = ", ".join(f'"{c}" {types.get(c, "TEXT")}' for c in columns)
    keys = ", ".join(f'"{k}"' for k in key)
    return f"CREATE TABLE IF NOT EXISTS {name} ({body}, PRIMARY KEY ({keys}))"


class StoreCorrupted(InputError):
    """A run folder's database that SQLite cannot read (bad input: the CLI exits 2, touching nothing)."""


def check_database(db: sqlite3.Connection, path: Path) -> None:
    """Raise StoreCorrupted unless SQLite can read ``db`` and its pages check out (quick_check: a
    scan of every page, seconds for a large store; run once when a store is opened)."""
    try:
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as err:
        verdict = str(err)
    if verdict != "ok":
        raise StoreCorrupted(
            f"{path}: the run's database is damaged ({verdict}); nothing was written to it. Move it aside "
            "to start the run over, or restore it from a copy (`spogw export` writes its tables as parquet)."
        )


class SQLiteStore:
    """A durable RolloutStore plus the evaluation rows of one run folder."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        """Open (and create, migrate) the store at ``path``; ``read_only``: open an existing store
        that another process may be writing (a twin cell's shard, harness/cells.py), change nothing.
        Raises StoreCorrupted when SQLite cannot read it, FileNotFoundError (read_only) when absent."""
        self.path = Path(path)
        self._rollout_columns = [f.name for f in fields(Rollout)]
        self._eval_columns = [f.name for f in fields(EvalRow)]
        self._iteration_columns = [f.name for f in fields(IterationRow)]
        self._step_columns = [f.name for f in fields(StepRow)]
        self._group_columns = [f.name for f in fields(GroupRow)]
        self._search_columns = [f.name for f in fields(SearchRow)]
        if read_only:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such store")
            self._db = sqlite3.connect(sqlite_uri(self.path), uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            try:
                check_database(self._db, self.path)
            except StoreCorrupted:
                self._db.close()
                raise
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves, one per batch.
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            check_database(self._db, self.path)
        except StoreCorrupted:
            self._db.close()
            raise
        enable_wal(self._db, BUSY_TIMEOUT_S)  # cells and ranks may open one file at once
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against a killed process
        self._db.execute(_create_table("rollouts", self._rollout_columns, _ROLLOUT_TYPES, ROLLOUT_KEY))
        self._add_missing_columns("rollouts", self._rollout_columns, _ROLLOUT_TYPES)
        self._migrate_eval_items()
        self._db.execute(_create_table("eval_items", self._eval_columns, _EVAL_TYPES, EVAL_KEY))
        self._add_missing_columns("eval_items", self._eval_columns, _EVAL_TYPES)
        self._db.execute(_create_table("iterations", self._iteration_columns, _ITERATION_TYPES, ITERATION_KEY))
        self._db.execute(_create_table("steps", self._step_columns, _STEP_TYPES, STEP_KEY))
        self._db.execute(_create_table("groups", self._group_columns, _GROUP_TYPES, GROUP_KEY))
        self._db.execute(_create_table("search_rounds", self._search_columns, _SEARCH_TYPES, SEARCH_KEY))

    def _migrate_eval_items(self) -> None:
        """Run folders written before eval_items had its ``transfer`` column (part of the key) get it,
        '' for every existing row, in one transaction: the folder resumes and reports as before."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(eval_items)")]
        if not columns or "transfer" in columns:
            return
        listed = ", ".join(f'"{c}"' for c in columns)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("ALTER TABLE eval_items RENAME TO eval_items_before_transfer")
            self._db.execute(_create_table("eval_items", self._eval_columns, _EVAL_TYPES, EVAL_KEY))
            self._db.execute(
                f"INSERT INTO eval_items ({listed}, transfer) SELECT {listed}, '' FROM eval_items_before_transfer"
            )
            self._db.execute("DROP TABLE eval_items_before_transfer")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _add_missing_columns(self, table: str, columns: Sequence[str], types: dict[str, str]) -> None:
        """Columns added to a record after a store was written (non-key, nullable) are added to the
        table; its rows read NULL there."""
        present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column not in present:
                self._db.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {types.get(column, "TEXT")}')

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _insert(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], key: Sequence[str] = ()
    ) -> None:
        """Insert rows; a row whose key is stored is ignored, unless ``key`` is given and the stored
        row is an infra_error: then the new row replaces it (a resumed run retries what the
        executor failed, and never changes a row that says something about a workflow)."""
        marks = ", ".join("?" for _ in columns)
        names = ", ".join(f'"{c}"' for c in columns)
        if key:
            updates = ", ".join(f'"{c}"=excluded."{c}"' for c in columns if c not in key)
            keys = ", ".join(f'"{c}"' for c in key)
            statement = (
                f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({keys}) DO UPDATE SET {updates} "
                f"WHERE {table}.status = 'infra_error'"
            )
        else:
            statement = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})"
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(statement, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        failpoints.hit(f"store.{table}")

    # -- rollouts ------------------------------------------------------------------------------

    def put(self, rollouts: list[Rollout]) -> None:
        rows = [_values(r, self._rollout_columns, _ROLLOUT_JSON) for r in rollouts]
        self._insert("rollouts", self._rollout_columns, rows, ROLLOUT_KEY)

    def keys(self, experiment: str, method: str, seed: int, iteration: int) -> set[RolloutKey]:
        """The stored rollouts' keys, infra_error ones left out (collection runs those again)."""
        cursor = self._db.execute(
            "SELECT query_id, sample_idx FROM rollouts WHERE experiment=? AND method=? AND seed=? AND iteration=? "
            "AND status != 'infra_error'",
            (experiment, method, seed, iteration),
        )
        return {(experiment, method, seed, iteration, q, int(k)) for q, k in cursor}

    def get(self, experiment: str, method: str, seed: int, iteration: int) -> list[Rollout]:
        names = ", ".join(f'"{c}"' for c in self._rollout_columns)
        cursor = self._db.execute(
            f"SELECT {names} FROM rollouts WHERE experiment=? AND method=? AND seed=? AND iteration=? "
            "ORDER BY query_id, sample_idx",
            (experiment, method, seed, iteration),
        )
        return [self._rollout(values) for values in cursor]

    def _rollout(self, values: Sequence[Any]) -> Rollout:
        data = dict(zip(self._rollout_columns, values, strict=True))
        for column in _ROLLOUT_JSON:
            data[column] = tuple(json.loads(data[column]))
        return Rollout(**data)

    # -- evaluation rows -----------------------------------------------------------------------

    def put_eval(self, rows: Sequence[EvalRow]) -> None:
        self._insert("eval_items", self._eval_columns, [_values(r, self._eval_columns) for r in rows], EVAL_KEY)

    def eval_done(self, method: str, seed: int, iteration: int, benchmark: str, transfer: str = "") -> set[str]:
        """Item ids whose evaluation rows (all repeats, written in one batch) are stored, none of
        them an infra_error (a resumed run evaluates those items again)."""
        cursor = self._db.execute(
            "SELECT item_id FROM eval_items "
            "WHERE method=? AND seed=? AND iteration=? AND benchmark=? AND transfer=? "
            "GROUP BY item_id HAVING SUM(status = 'infra_error') = 0",
            (method, seed, iteration, benchmark, transfer),
        )
        return {item for (item,) in cursor}

    def eval_rows(
        self,
        method: str | None = None,
        seed: int | None = None,
        iteration: int | None = None,
        transfer: str | None = "",
        benchmark: str | None = None,
    ) -> list[EvalRow]:
        """Evaluation rows, optionally of one method (and seed, iteration, benchmark), in key order;
        by default those of the method's own executor (``transfer=None``: every executor's)."""
        names = ", ".join(f'"{c}"' for c in self._eval_columns)
        wanted: list[tuple[str, object]] = [("method", method), ("seed", seed), ("iteration", iteration)]
        wanted += [("transfer", transfer), ("benchmark", benchmark)]
        filters = [(c, v) for c, v in wanted if v is not None]
        where = ("WHERE " + " AND ".join(f"{c}=?" for c, _ in filters)) if filters else ""
        cursor = self._db.execute(
            f"SELECT {names} FROM eval_items {where} "
            "ORDER BY method, seed, iteration, benchmark, item_id, repeat, transfer",
            tuple(v for _, v in filters),
        )
        return [EvalRow(**dict(zip(self._eval_columns, values, strict=True))) for values in cursor]

    # -- iteration summaries -------------------------------------------------------------------

    def put_iteration(self, row: IterationRow, steps: Sequence[StepRow] = (), groups: Sequence[GroupRow] = ()) -> None:
        """An iteration's summary with its optimizer steps and trained groups, in one transaction
        each (written before the iteration's checkpoint: a resume rewrites the same rows)."""
        self._insert("steps", self._step_columns, [_values(r, self._step_columns) for r in steps])
        self._insert("groups", self._group_columns, [_values(r, self._group_columns) for r in groups])
        self._insert("iterations", self._iteration_columns, [_values(row, self._iteration_columns)])

    def steps_before(self, method: str, seed: int, iteration: int) -> int:
        """How many optimizer steps the (method, seed) run logged before ``iteration``."""
        query = "SELECT COUNT(*) FROM steps WHERE method = ? AND seed = ? AND iteration < ?"
        return int(self._db.execute(query, (method, seed, iteration)).fetchone()[0])

    # -- search rounds -------------------------------------------------------------------------

    def put_search(self, row: SearchRow) -> None:
        """One proposal of a search, in one transaction (a kill before it repeats the proposal)."""
        self._insert("search_rounds", self._search_columns, [_values(row, self._search_columns)])

    def search_rows(self, method: str, seed: int, benchmark: str) -> list[SearchRow]:
        """A search's proposals in (round, attempt) order."""
        names = ", ".join(f'"{c}"' for c in self._search_columns)
        cursor = self._db.execute(
            f"SELECT {names} FROM search_rounds WHERE method=? AND seed=? AND benchmark=? ORDER BY round, attempt",
            (method, seed, benchmark),
        )
        return [SearchRow(**dict(zip(self._search_columns, values, strict=True))) for values in cursor]

    # -- export --------------------------------------------------------------------------------

    def table(self, name: str) -> Any:
        """The whole table as a pandas DataFrame (JSON columns left as text)."""
        import pandas as pd

        if name not in TABLES:
            raise ValueError(f"no table {name!r}; tables: {', '.join(TABLES)}")
        return pd.read_sql_query(f"SELECT * FROM {name}", self._db)


def sqlite_uri(path: Path, mode: str = "ro") -> str:
    """SQLite's URI of ``path`` (quoted: a folder name may hold '?' or '#'), in ``mode``."""
    from urllib.parse import quote

    return f"file:{quote(str(path.resolve()))}?mode={mode}"


@contextmanager
def connect_read_only(run_dir: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a run folder's store (the run may still be writing to it), closed
    on exit. Raises FileNotFoundError when ``run_dir`` has no store, StoreCorrupted when SQLite
    cannot read it."""
    path = Path(run_dir) / "rollouts.sqlite"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {path} does not exist")
    with closing(sqlite3.connect(sqlite_uri(path), uri=True)) as db:
        check_database(db, path)
        yield db


def read_table(run_dir: str | Path, name: str) -> Any:
    """One table of a run folder's store as a DataFrame, read-only; a table the folder predates
    reads as empty, and eval_items from before its ``transfer`` column reads it as ''."""
    import pandas as pd

    if name not in TABLES:
        raise ValueError(f"no table {name!r}; tables: {', '.join(TABLES)}")
    with connect_read_only(run_dir) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone():
            return pd.DataFrame()
        frame = pd.read_sql_query(f"SELECT * FROM {name}", db)
    if name == "eval_items" and "transfer" not in frame.columns:
        frame["transfer"] = ""
    return frame


def _values(row: Any, columns: Sequence[str], json_columns: Sequence[str] = ()) -> list[Any]:
    """A dataclass row's values in column order, tuples of ``json_columns`` as JSON text."""
    values = asdict(row)
    return [json.dumps(values[c]) if c in json_columns else values[c] for c in columns]
