"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Every file the harness writes for later reading (reports, parquet tables, figures, the resolved
config, MLflow run ids, checkpoint metadata) goes through `atomic_path`: the writer fills a
temporary name in the same folder, the bytes are fsynced, the temporary is renamed over the target
(rename is atomic within one file system) and the folder is fsynced so the rename itself survives a
power loss. A process killed at any moment leaves at worst a stray ``.<name>.*.tmp`` that no reader
opens. SQLite tables are covered by SQLite's own transactions (harness/store.py); adapter folders by
a staged folder renamed in one step (harness/policy/checkpoints.py).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from spogw.harness import failpoints

TEMPORARY_SUFFIX = ".tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import: mkstemp makes 0600 files, the targets get the usual mode


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) contents to the disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, the
    temporary's bytes are fsynced and it replaces ``path``. On an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_UMASK)
    try:
        yield temporary
        fsync_path(temporary)
        failpoints.hit(f"write.{path.name}")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_text(path: Path | str, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)
