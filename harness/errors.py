"""The failures a person can act on, told apart from bugs.

Three kinds end a command without a traceback (harness/cli.py maps them to exit codes):

- ``InputError``: a bad input (a data file, a field, a value); the message names it. Exit 2.
- operational failures of the machine, found anywhere in an exception's chain by
  ``operational_failure``: a full disk (``ENOSPC``, also when MLflow or SQLAlchemy wrap SQLite's
  "database or disk is full"), a folder that cannot be written (``EACCES``, ``EPERM``, ``EROFS``,
  SQLite's "readonly database"). Everything a run finished is already stored, so the message says
  what to fix and that running the same command resumes.
- a service the run needs does not answer (the executor endpoint, the tracking server): exit 3.

Anything else is a bug and keeps its traceback: a blanket ``except ValueError`` would hide it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
# SQLite reports these as text (sqlite3.OperationalError), which MLflow/SQLAlchemy wrap again
_DISK_FULL_TEXT = ("database or disk is full", "no space left on device")
_NOT_WRITABLE_TEXT = ("attempt to write a readonly database", "read-only file system", "permission denied")


class InputError(ValueError):
    """Bad input: a file, field or value the user gave (named in the message). The CLI prints it
    without a traceback and exits 2. A ValueError subclass, so pydantic validators may raise it."""


@dataclass(frozen=True)
class Operational:
    """An operational failure: what to print (one or two lines) and the exit code."""

    message: str
    exit_code: int


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and every exception it was raised from or while handling (cycles cut)."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
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
        if code in _NOT_WRITABLE or (code is None and any(t in text for t in _NOT_WRITABLE_TEXT)):
            return Operational(
                f"cannot write{_where(cause)}: {getattr(cause, 'strerror', None) or 'not writable'}. Choose a "
                "folder you can write (--run-dir, --out) or fix its permissions, then run the command again.",
                EXIT_BAD_INPUT,
            )
    return None
