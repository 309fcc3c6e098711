"""Switching a SQLite file to write-ahead logging when several processes open it at once.

The harness's shared SQLite files (the run store, the executor response cache, the rate-limit file)
use WAL: readers never block the writer, and commits need no fsync each. The switch needs the
file's exclusive lock, and SQLite answers SQLITE_BUSY at once, without its busy handler, when
another connection holds a lock it would otherwise deadlock with: two processes creating the same
file at the same moment got "database is locked" from ``PRAGMA journal_mode=WAL`` in under a
millisecond, whatever the connection's timeout. So the switch is retried here until the timeout.
WAL is a property of the file (it persists), so this is needed once per connection that opens it.
"""

from __future__ import annotations

import sqlite3
import time

RETRY_EVERY_S = 0.005


def enable_wal(db: sqlite3.Connection, timeout_s: float) -> None:
    """Put the file of ``db`` in WAL mode, retrying while another connection holds it (SQLITE_BUSY).
    Raises sqlite3.OperationalError when it is still busy after ``timeout_s``, or on any other error."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            busy = getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(RETRY_EVERY_S)
