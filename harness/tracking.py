"""MLflow tracking of an experiment run: one parent run per experiment, one nested run per method x seed.

The tracking URI is the configured one, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<run_dir>/mlflow.db`` with artifacts under ``<run_dir>/mlartifacts``; `mlflow ui
--backend-store-uri <uri>` shows everything. The runs' ids are kept in ``<run_dir>/tracking.json``
so that a resumed experiment logs into the same runs instead of starting new ones. We talk to
MlflowClient with explicit run ids (no fluent active-run stack: no hidden state between runs).

Without mlflow installed (e.g. a bare GPU box) the run goes on untracked, with one warning: the
run folder (SQLite, parquet, report) is the record of truth either way.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from spogw.harness.atomic import atomic_write_text
from spogw.harness.errors import ServiceUnavailable

PACKAGES = ("torch", "transformers", "peft", "trl", "mlflow", "optuna", "pydantic", "spogw-harness")
_PARAM_BATCH = 100  # MLflow's limit of params per log_batch call
_METRIC_BATCH = 1000


def flatten(data: Mapping[str, Any]) -> dict[str, str]:
    """Nested config -> MLflow params {"a.b.c": "value"}; lists of mappings are indexed
    (methods.0.name), other lists are one JSON value (seeds: "[0, 1, 2]")."""
    from spogw.harness.config import dotted_fields

    flat = dotted_fields(dict(data), index_scalar_lists=False)
    return {k: json.dumps(v) if isinstance(v, list | tuple) else str(v) for k, v in flat.items()}


def git_commit(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def environment_tags() -> dict[str, str]:
    """Git commit, package versions and device: what a reader needs to reproduce a number."""
    tags = {"git_commit": git_commit(Path(__file__).resolve().parents[1]), "python": platform.python_version()}
    for package in PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            tags[f"version.{package}"] = "not installed"
    try:
        import torch

        tags["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    except ImportError:
        tags["device"] = "unknown"
    return tags


def tracking_uri(configured: str | None, run_dir: Path) -> str:
    if configured:
        return configured
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"


class TrackingUnavailable(ServiceUnavailable):
    """The tracking server does not answer (checked before any work starts; the CLI exits 3)."""


SERVER_CHECK_TIMEOUT_S = 5.0


def require_server(uri: str, timeout_s: float = SERVER_CHECK_TIMEOUT_S) -> None:
    """For an http(s) tracking URI, GET the MLflow server's ``/health`` once; raise
    TrackingUnavailable naming the URI and the cause if it does not answer within ``timeout_s``.

    Why: MLflow's client retries a refused connection for minutes in silence (measured: 4 min 10 s
    against http://127.0.0.1:9), and it would do so only after the run folder was set up."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            response.read(64)
    except urllib.error.HTTPError as err:
        raise TrackingUnavailable(
            f"tracking server {uri} answered {health} with HTTP {err.code}: is it an MLflow server?"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(
            f"tracking server {uri} does not answer ({reason}). Start it (mlflow server --host 0.0.0.0 --port ... "
            "--serve-artifacts), or leave tracking.uri unset to track into the run folder."
        ) from None


def _chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Tracker:
    """The experiment's MLflow runs (``client`` None: tracking off, every call a no-op)."""

    def __init__(self, run_dir: Path, experiment_name: str, uri: str | None = None, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.uri = tracking_uri(uri, run_dir)
        self.client: Any = None
        self._ids_path = run_dir / "tracking.json"
        self._ids: dict[str, Any] = json.loads(self._ids_path.read_text()) if self._ids_path.is_file() else {}
        if not enabled:
            return
        require_server(self.uri)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            warnings.warn(
                "mlflow is not installed: this run is not tracked (the run folder has all results)", stacklevel=2
            )
            return
        # MLflow announces at INFO that it creates and migrates its tables: noise on every new run folder
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            # a database store (sqlite, PostgreSQL, ...) keeps artifacts where we say, beside the run; a
            # tracking server (http) has its own artifact root. Unset, MLflow would write ./mlruns in
            # whatever folder the process started in.
            local = not self.uri.startswith(("http://", "https://", "databricks"))
            artifacts = (run_dir.resolve() / "mlartifacts").as_uri() if local else None
            try:
                self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=artifacts)
            except Exception:  # MlflowException RESOURCE_ALREADY_EXISTS: another process created it first
                experiment = self.client.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id

    def _run(self, key: str, name: str, tags: dict[str, str], parent: str | None = None) -> str | None:
        """The run recorded under ``key`` in tracking.json (set RUNNING again), or a new one. The
        lookup and the record happen under a file lock on a fresh read of tracking.json: cells of one
        run folder that start at once from several processes (workers) each record their run, and
        none is lost or made twice."""
        if self.client is None:
            return None
        from filelock import FileLock, Timeout

        lock = FileLock(str(self._ids_path) + ".lock", timeout=600)
        try:
            lock.acquire()
        except Timeout:
            raise TrackingUnavailable(
                f"{self._ids_path}: another process held its lock for 10 minutes (a tracking server that hangs?)"
            ) from None
        try:
            self._ids = json.loads(self._ids_path.read_text()) if self._ids_path.is_file() else {}
            run_id = self._ids.get("runs", {}).get(key)
            if run_id is not None:
                try:
                    self.client.get_run(run_id)
                    self.client.update_run(run_id, status="RUNNING")
                    return str(run_id)
                except Exception:  # the tracking store was replaced: start a new run
                    pass
            all_tags = {"mlflow.runName": name, **tags}
            if parent is not None:
                all_tags["mlflow.parentRunId"] = parent
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
            self._ids.setdefault("runs", {})[key] = run.info.run_id
            atomic_write_text(self._ids_path, json.dumps(self._ids, indent=2))
            return str(run.info.run_id)
        finally:
            lock.release()

    @property
    def parent_id(self) -> str | None:
        """The experiment's parent run recorded in tracking.json (None before the first `spogw run`)."""
        run_id = self._ids.get("runs", {}).get("__parent__")
        return str(run_id) if run_id is not None else None

    def start_parent(
        self, name: str, params: Mapping[str, Any], tags: dict[str, str], nested_under: str | None = None
    ) -> str | None:
        """The experiment's parent run (``nested_under``: itself a child of that run, e.g. a sweep's)."""
        run_id = self._run("__parent__", name, {**environment_tags(), **tags}, nested_under)
        if run_id is not None:
            self.log_params(run_id, flatten(params))
        return run_id

    def start_child(
        self, parent: str | None, label: str, seed: int, params: Mapping[str, Any], tags: dict[str, str]
    ) -> str | None:
        run_id = self._run(f"{label}/seed{seed}", f"{label}-seed{seed}", {**tags, "method": label}, parent)
        if run_id is not None:
            self.log_params(run_id, {**flatten(params), "seed": str(seed)})
        return run_id

    def log_params(self, run_id: str | None, params: Mapping[str, str]) -> None:
        if self.client is None or run_id is None:
            return
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        fresh = [Param(k, v[:6000]) for k, v in params.items() if k not in existing]  # params are write-once
        for chunk in _chunks(fresh, _PARAM_BATCH):
            self.client.log_batch(run_id, params=chunk)

    def log_metrics(self, run_id: str | None, metrics: Mapping[str, float], step: int) -> None:
        if self.client is None or run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step) for k, v in metrics.items() if v == v]  # NaN is not loggable
        for chunk in _chunks(entries, _METRIC_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def log_artifact(self, run_id: str | None, path: Path, folder: str | None = None) -> None:
        if self.client is None or run_id is None or not path.exists():
            return
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), folder)
        else:
            self.client.log_artifact(run_id, str(path), folder)

    def finish(self, run_id: str | None, status: str = "FINISHED") -> None:
        if self.client is not None and run_id is not None:
            self.client.set_terminated(run_id, status=status)
