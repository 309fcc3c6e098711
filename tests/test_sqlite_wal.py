"""Switching a shared SQLite file to WAL while another connection holds it: SQLite answers
SQLITE_BUSY at once there (no busy handler), which made two processes creating one rate-limit file
at the same moment fail with "database is locked"."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from spogw.harness.executors.rate_limit import RateLimiter
from spogw.harness.executors.response_cache import ResponseCache
from spogw.harness.sqlite_wal import enable_wal
from spogw.harness.store import SQLiteStore


def _held(path: Path) -> sqlite3.Connection:
    """A connection holding a write transaction on a fresh file, as a process creating it does."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE IF NOT EXISTS other (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    return holder


def _release_after(holder: sqlite3.Connection, seconds: float) -> threading.Thread:
    def release() -> None:
        time.sleep(seconds)
        holder.execute("COMMIT")
        holder.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_the_switch_waits_for_the_holder_and_gives_up_at_the_timeout(tmp_path: Path) -> None:
    """The plain pragma fails at once whatever the connection's timeout (what the helper is for);
    the helper waits for the holder, and raises when its own timeout passes first."""
    path = tmp_path / "x.sqlite"
    holder = _held(path)
    db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    for switch, least_s, most_s in ((lambda: db.execute("PRAGMA journal_mode=WAL"), 0.0, 1.0),
                                    (lambda: enable_wal(db, 0.2), 0.2, 2.0)):  # fmt: skip
        start = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            switch()
        assert least_s <= time.monotonic() - start < most_s
    thread = _release_after(holder, 0.3)
    enable_wal(db, 10.0)
    thread.join()
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize("opener", ["rate_limit", "response_cache", "store"])
def test_every_shared_file_opens_while_another_process_creates_it(tmp_path: Path, opener: str) -> None:
    """The three files several processes open at once: each waits for the holder, then is in WAL."""
    path = tmp_path / f"{opener}.sqlite"
    thread = _release_after(_held(path), 0.3)
    if opener == "rate_limit":
        RateLimiter("k", requests_per_minute=60, path=path)
    elif opener == "response_cache":
        ResponseCache(path)
    else:
        SQLiteStore(path).close()
    thread.join()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
