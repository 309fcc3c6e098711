"""Where a sweep lives: its folder and storage URLs, the Optuna storage, the study-wide lock that
makes the trial cap exact across workers, and the heartbeat of a running trial."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna

from spogw.harness.errors import InputError
from spogw.harness.sweeps.config import Sweep


@dataclass(frozen=True)
class SweepPaths:
    run_dir: Path
    storage: str
    mlflow_uri: str


def resolve_paths(run_dir: Path, storage: str | None, mlflow_uri: str | None) -> SweepPaths:
    from spogw.harness.errors import check_folder_target
    from spogw.harness.tracking import tracking_uri

    check_folder_target(run_dir, "--run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return SweepPaths(
        run_dir,
        storage or f"sqlite:///{(run_dir / 'optuna.db').resolve()}",
        tracking_uri(mlflow_uri, run_dir),
    )


def open_storage(url: str, sweep: Sweep) -> optuna.storages.BaseStorage:
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else {"connect_args": {"timeout": 60}},
        heartbeat_interval=sweep.config.heartbeat_s,
        grace_period=sweep.config.grace_s,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
    )


@contextlib.contextmanager
def study_lock(storage_url: str, study_name: str) -> Iterator[None]:
    """One holder at a time across every worker of the study: a PostgreSQL advisory lock for a
    PostgreSQL storage, else an exclusive file lock beside the storage file."""
    key = int.from_bytes(hashlib.blake2b(study_name.encode(), digest_size=8).digest(), "big", signed=True)
    if storage_url.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(storage_url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        engine.dispose()
        return
    if storage_url.startswith("sqlite:///"):
        path = Path(storage_url.removeprefix("sqlite:///"))
    elif storage_url.startswith("journal:"):
        path = Path(storage_url.removeprefix("journal:"))
    else:
        raise InputError(
            f"--storage {storage_url}: no study-wide lock for this backend (use sqlite, postgresql or journal)"
        )
    with open(path.with_name(f".{path.name}.{study_name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _heartbeat_interval(study: optuna.Study) -> int | None:
    """The study storage's heartbeat interval in seconds; None when it keeps no heartbeats.

    Optuna wraps an RDBStorage in a cache layer that also speaks the heartbeat protocol: ask the
    study's own storage object, not its class."""
    return getattr(study._storage, "get_heartbeat_interval", lambda: None)()


def _beat(study: optuna.Study, trial: optuna.Trial) -> None:
    study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]  # heartbeat storages only


def first_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record the heartbeat of a trial just asked for (RDB storages; elsewhere nothing).

    Optuna fails a dead worker's RUNNING trial only once it has a heartbeat row that went stale: a
    worker killed between ``study.ask()`` and its first beat would leave the trial RUNNING for ever,
    and every other worker waiting on it. The caller beats at once, inside the study lock it asked in.
    """
    if _heartbeat_interval(study):
        _beat(study, trial)


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every heartbeat interval while the block runs (RDB storages)."""
    interval = _heartbeat_interval(study)
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            _beat(study, trial)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
