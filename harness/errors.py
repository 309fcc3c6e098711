"""The failures a person can act on, told apart from bugs.

Three kinds end a command without a traceback (harness/cli.py maps them to exit codes):

- ``InputError``: a bad input (a data file, a field, a value); the message names it. Exit 2.
- operational failures of the machine, found anywhere in an exception's chain by
  ``operational_failure``: a full disk (``ENOSPC``, also when MLflow or SQLAlchemy wrap SQLite's
  "database or disk is full"), a folder that cannot be written (``EACCES``, ``EPERM``, ``EROFS``,
  SQLite's "readonly database"). Everything a run finished is already stored, so the message says
  what to fix and that running the same command resumes.
- ``ServiceUnavailable``: a service the run needs does not answer (the executor endpoint, the
  tracking server, the dataset hub): exit 3.

Anything else is a bug and keeps its traceback: a blanket ``except ValueError`` would hide it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NO_PERMISSION = {errno.EACCES, errno.EPERM}
# SQLite reports these as text (sqlite3.OperationalError), which MLflow/SQLAlchemy wrap again; only
# texts SQLite itself writes: a free-form "permission denied" could be an executor's HTTP 403 body
_DISK_FULL_TEXT = ("database or disk is full", "no space left on device")
_READ_ONLY_TEXT = ("attempt to write a readonly database", "read-only file system")
# Where an implicit chain (an exception raised while handling another) is followed: wrappers of
# storage errors that do not always say ``from``. A bug raised while handling a full disk stays a bug.
_WRAPPER_MODULES = ("sqlite3", "sqlalchemy", "mlflow", "optuna")


class ServiceUnavailable(RuntimeError):
    """A service the run needs does not answer (executor, tracking server, dataset hub). The CLI
    prints it without a traceback and exits 3; running the same command again resumes."""


class CellsFailed(RuntimeError):
    """Some cells of an experiment run on Ray failed after their retries; the others are done and
    kept (harness/cluster.py). The CLI prints it without a traceback and exits 1; running the same
    command again resumes the failed cells."""


class InputError(ValueError):
    """Bad input: a file, field or value the user gave (named in the message). The CLI prints it
    without a traceback and exits 2. A ValueError subclass, so pydantic validators may raise it."""


@dataclass(frozen=True)
class Operational:
    """An operational failure: what to print (one or two lines) and the exit code."""

    message: str
    exit_code: int


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from (``__cause__``, SQLAlchemy's ``.orig``), and
    the one it was raised while handling (``__context__``) when ``err`` is an OSError or comes from
    a storage library (cycles cut)."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapper = isinstance(current, OSError) or type(current).__module__.split(".")[0] in _WRAPPER_MODULES
        context = current.__context__ if wrapper and not current.__suppress_context__ else None
        todo += [e for e in (current.__cause__, context) if e is not None]
        orig = getattr(current, "orig", None)  # SQLAlchemy keeps the DB-API error here
        if isinstance(orig, BaseException):
            todo.append(orig)


def _where(err: BaseException) -> str:
    name = getattr(err, "filename", None)
    return f" {name}" if name else ""


def operational_failure(err: BaseException) -> Operational | None:
    """The operational failure behind ``err`` (a full disk, a folder that cannot be written), or
    None when ``err`` is something else (then it is a bug or another kind, handled elsewhere)."""
    for cause in _chain(err):
        code = cause.errno if isinstance(cause, OSError) else None
        text = str(cause).lower()
        if code in _DISK_FULL or (code is None and any(t in text for t in _DISK_FULL_TEXT)):
            return Operational(
                f"disk full: cannot write{_where(cause)}. Free some space (everything finished so far is "
                "kept), then run the same command again to resume.",
                EXIT_FAILURE,
            )
        if code == errno.EROFS or (code is None and any(t in text for t in _READ_ONLY_TEXT)):
            return Operational(
                f"cannot write{_where(cause)}: read-only. Choose a folder you can write (--run-dir, --out), "
                "then run the command again.",
                EXIT_BAD_INPUT,
            )
        if code in _NO_PERMISSION:
            return Operational(
                f"permission denied{_where(cause)}. Choose a file or folder you may use (--run-dir, --out) or "
                "fix its permissions, then run the command again.",
                EXIT_BAD_INPUT,
            )
    return None


def _file_ancestor(path: Path) -> Path | None:
    return next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)


def check_folder_target(path: Path, option: str) -> None:
    """Raise InputError, before any work, when ``path`` cannot become a folder: it is a file, or a
    file stands where one of its parent folders would be. ``option`` names the flag (``--run-dir``)."""
    blocker = path if path.exists() and not path.is_dir() else _file_ancestor(path)
    if blocker is not None:
        raise InputError(f"{option} {path}: {blocker} is a file, not a folder; give a folder path")


def check_file_target(path: Path, option: str) -> None:
    """Raise InputError, before any work, when ``path`` cannot be written as a file: it is a folder,
    or a file stands where one of its parent folders would be."""
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file path")
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise InputError(f"{option} {path}: {blocker} is a file, not a folder")
