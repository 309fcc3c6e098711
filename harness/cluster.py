"""`spogw run --ray [ADDRESS]`: an experiment's cells as Ray tasks, on one machine or a cluster.

The driver (this process) holds the run folder, checks the experiment and starts the parent MLflow
run as the one-process run does (harness/runner.py `open_experiment`); then every cell that has no
done marker becomes one Ray task running `run_cell`, the same function the one-process run calls.
A task asks for ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs (default: one when the cluster
has GPUs: the cell trains its generator there), so Ray runs as many cells at once as the cluster
holds. The run folder must be on storage every node sees (NFS, a shared volume): each cell writes
its own store shard there (harness/cells.py).

- A cell is submitted once the cells it copies iteration-0 rows from (its untrained twins earlier
  in the run's order, harness/plan.py) have ended, so every cell reads exactly what it reads in the
  one-process run: the tables are the same. The driver decides this, so a waiting cell holds no
  worker, and a failed twin does not fail it (it then computes the rows it would have copied).
- A worker that dies (kill -9, out of memory, a lost node) has its cell retried up to
  ``max_retries`` times (Ray's memory monitor's kills too, on a local instance); the retry resumes
  from the cell's shard and checkpoints. An exception inside a cell (a bug, a dead endpoint) is not
  retried: it would fail again.
- Options that cannot work are refused before any work (exit 2), a cluster that does not answer
  too (exit 3).
- Each finished cell is reported as it ends (progress bar, run.log); failed cells are reported
  together once the others are done (`CellsFailed`, exit 1), their tracebacks written to
  ``cells/<name>/failure.txt``.
- The driver keeps nothing that is not in the run folder: killed, the same command re-reads the
  done markers and schedules what is left.

Ray is the ``[cluster]`` extra, imported only here.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spogw.harness.config import ExperimentConfig, MethodSpec
from spogw.harness.errors import CellsFailed, InputError
from spogw.harness.plan import select_methods, select_seeds
from spogw.harness.run_folder import done_marker, run_folder_lock
from spogw.harness.runner import Finisher, experiment_session, finish_experiment, open_experiment, run_cell
from spogw.harness.torch_threads import ENV as THREADS_ENV


@dataclass(frozen=True)
class RayOptions:
    """Where and how the cells run (``spogw run --ray`` options)."""

    address: str | None = None
    """A running Ray cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None: start a local
    instance for this run."""
    workers: int | None = None
    """CPUs of the local instance (cells at once, with ``cpus_per_cell`` 1); None: every core.
    Only with a local instance: a cluster has its own resources."""
    cpus_per_cell: float = 1.0
    gpus_per_cell: float | None = None
    """None: 1 when the cluster has a GPU, else 0."""
    max_retries: int = 2
    """Times a cell whose worker died is run again (0: never)."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(
            "--ray needs Ray: install the cluster extra (pip install -e '.[cluster]'; requirements-cpu.lock has it)"
        ) from None
    return ray


def cell_task(
    config_json: dict[str, Any],
    run_dir: str,
    label: str,
    seed: int,
    parent_run: str | None,
    cwd: str,
    threads: int,
    quiet: bool,
) -> dict[str, Any]:
    """One cell, in a Ray worker: the experiment rebuilt from its resolved fields, `run_cell` run.
    Its phase lines go to run.log and to the worker's stderr, which Ray shows on the driver's
    console (``quiet``: notices only)."""
    import socket

    from spogw.harness import console
    from spogw.harness.console import RunProgress
    from spogw.harness.plan import load_splits
    from spogw.harness.runner import ExperimentContext
    from spogw.harness.torch_threads import ENV
    from spogw.harness.tracking import Tracker

    console.configure(quiet=quiet)  # third-party warnings silenced as in `spogw run`
    if Path(cwd).is_dir():  # relative data paths in the experiment are the driver's
        os.chdir(cwd)
    os.environ[ENV] = str(threads)
    config = ExperimentConfig.model_validate(config_json)
    spec = next(s for s in config.methods if s.display_label == label)
    folder = Path(run_dir)
    progress = RunProgress(f"{config.name} [ray]", 1, folder, enabled=False)
    tracker = Tracker(folder, config.tracking.experiment_name or config.name, config.tracking.uri)
    context = ExperimentContext(config, folder, load_splits(config), tracker, parent_run, progress, bars=False)
    try:
        run_cell(context, spec, seed, merge=False)
    finally:
        progress.close()
    return {"label": label, "seed": seed, "pid": os.getpid(), "node": socket.gethostname()}


def _waits_for(todo: Sequence[tuple[MethodSpec, int]], context: Any) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """Cell -> the cells of the same seed earlier in the run's order whose iteration-0 rows it
    copies (its untrained and collection twins): in the one-process run they are done before it."""
    order = [(spec.display_label, seed) for spec, seed in todo]
    waits: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for index, (label, seed) in enumerate(order):
        twins = {*context.untrained_twins.get(label, ()), *context.collection_twins.get(label, ())}
        waits[(label, seed)] = [cell for cell in order[:index] if cell[1] == seed and cell[0] in twins]
    return waits


def run_on_ray(
    config: ExperimentConfig,
    run_dir: Path,
    options: RayOptions,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    force_new: bool = False,
    progress: bool = True,
    finish: Finisher | None = None,
) -> Path:
    """Run (or resume) every method x seed of ``config`` in ``run_dir`` as Ray tasks; the same
    tables and report as `harness.runner.run_experiment`. Raises CellsFailed when cells failed
    (the others are done and kept), InputError when Ray is not installed or an option cannot work
    (checked against the cluster's resources before any work), ServiceUnavailable when the
    cluster at ``options.address`` does not answer."""
    ray = _import_ray()
    _check_options(options)
    run_dir = Path(run_dir).resolve()
    todo = [(spec, seed) for spec in select_methods(config, methods) for seed in select_seeds(config, seeds)]
    with run_folder_lock(run_dir), _ray_session(ray, options):
        gpus = _check_resources(ray, options)
        context = open_experiment(config, run_dir, len(todo), force_new, progress)
        with experiment_session(context):
            # torch threads: the driver's --threads, else the cell's own CPUs (not the node's cores)
            threads = int(os.environ.get(THREADS_ENV) or max(1, int(options.cpus_per_cell)))
            task = ray.remote(cell_task).options(
                num_cpus=options.cpus_per_cell, num_gpus=gpus, max_retries=options.max_retries, retry_exceptions=False
            )
            arguments = (config.model_dump(mode="json"), str(run_dir))
            extra = (context.parent_run, os.getcwd(), threads, not progress)
            cells = [(spec.display_label, seed) for spec, seed in todo]
            waits = _waits_for(todo, context)
            failures = _schedule(ray, cells, waits, lambda cell: task.remote(*arguments, *cell, *extra), context)
            if failures:
                raise CellsFailed(
                    f"{len(failures)} cells failed (the others are done and kept):\n  "
                    + "\n  ".join(failures)
                    + "\nTracebacks: cells/<cell>/failure.txt. Run the same command again to resume them."
                )
            finish_experiment(context, finish)
    return run_dir


def _check_options(options: RayOptions) -> None:
    """Values that cannot work, named by their flag (before Ray starts)."""
    if options.address is not None and options.workers is not None:
        raise InputError(
            f"--ray-workers {options.workers}: it sets the CPUs of a local Ray instance; the cluster at "
            f"{options.address} has its own (start its nodes with `ray start --num-cpus`)"
        )
    if options.workers is not None and options.workers < 1:
        raise InputError(f"--ray-workers {options.workers}: give 1 or more")
    if options.cpus_per_cell <= 0:
        raise InputError(f"--cpus-per-cell {options.cpus_per_cell:g}: give a positive number")
    if options.gpus_per_cell is not None and options.gpus_per_cell < 0:
        raise InputError(f"--gpus-per-cell {options.gpus_per_cell:g}: give 0 or more")
    if options.max_retries < 0:
        raise InputError(f"--cell-retries {options.max_retries}: give 0 or more")


def _check_resources(ray: Any, options: RayOptions) -> float:
    """The GPUs a cell asks for; InputError when no node of the cluster could ever hold a cell
    (Ray would leave the task pending forever)."""
    total = ray.cluster_resources()
    gpus = options.gpus_per_cell
    if gpus is None:
        gpus = 1.0 if total.get("GPU", 0) > 0 else 0.0
    for flag, wanted, kind in (("--cpus-per-cell", options.cpus_per_cell, "CPU"), ("--gpus-per-cell", gpus, "GPU")):
        most = max((node["Resources"].get(kind, 0) for node in ray.nodes() if node.get("Alive")), default=0)
        if wanted > most:
            raise InputError(
                f"{flag} {wanted:g}: no node of the Ray cluster has that many {kind}s (the largest has {most:g}; "
                f"the cluster {total.get(kind, 0):g} in all)"
            )
    return gpus


@contextlib.contextmanager
def _ray_session(ray: Any, options: RayOptions) -> Iterator[None]:
    """Ray started (a local instance) or joined (a cluster) for the run, and left at its end. A dead
    worker's task is retried ``options.max_retries`` times, also when Ray's memory monitor killed it
    (a local instance; on a cluster, set RAY_task_oom_retries when starting its nodes)."""
    from spogw.harness.errors import ServiceUnavailable

    if options.address is None:
        system = {"task_oom_retries": options.max_retries}
        ray.init(num_cpus=options.workers, include_dashboard=False, log_to_driver=True, _system_config=system)
    else:
        _probe(options.address)
        try:
            ray.init(address=options.address, log_to_driver=True)
        except (ConnectionError, TimeoutError) as err:
            raise ServiceUnavailable(f"--ray {options.address}: no Ray cluster answers there ({err})") from None
    try:
        yield
    finally:
        ray.shutdown()


PROBE_TIMEOUT_S = 5.0


def _probe(address: str) -> None:
    """A HOST:PORT address that accepts no connection within PROBE_TIMEOUT_S: ServiceUnavailable.
    Why: ray.init retries an unreachable GCS for minutes in silence (measured: still waiting after
    200 s for 127.0.0.1:9). ``auto`` and ``ray://`` addresses are left to Ray."""
    import socket

    from spogw.harness.errors import ServiceUnavailable

    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        raise ServiceUnavailable(
            f"--ray {address}: no Ray cluster answers there ({err}); start it (ray start --head --port {port}) "
            "or leave out the address to start a local instance"
        ) from None


def _schedule(
    ray: Any,
    cells: Sequence[tuple[str, int]],
    waits: dict[tuple[str, int], list[tuple[str, int]]],
    submit: Callable[[tuple[str, int]], Any],
    context: Any,
) -> list[str]:
    """Submit each cell that is not done once the cells it waits for have ended (done or failed:
    its rows are the same either way, it copies fewer of them), report each as it ends, merge its
    shard into the union (here only: one writer); returns 'cell: why' for each failed one."""
    from spogw.harness.cells import Cell, merge

    run_dir = context.run_dir
    queue = []
    for cell in cells:
        if done_marker(run_dir, *cell).exists():
            context.progress.skipped()
        else:
            queue.append(cell)
    ended: set[tuple[str, int]] = {cell for cell in cells if cell not in queue}
    running: dict[Any, tuple[str, int]] = {}
    failures: list[str] = []
    while queue or running:
        for cell in [c for c in queue if all(w in ended for w in waits[c])]:
            queue.remove(cell)
            running[submit(cell)] = cell
        ready, _ = ray.wait(list(running), num_returns=1)
        label, seed = cell = running.pop(ready[0])
        ended.add(cell)
        merge(run_dir, [Cell(label, seed)])  # done or failed: its rows join the union
        try:
            ray.get(ready[0])
        except ray.exceptions.RayError as err:
            cause = getattr(err, "cause", None) or err
            why = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
            if isinstance(err, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
                why = f"its worker died ({why})"
            failures.append(f"{label} seed {seed}: {why}")
            folder = Cell(label, seed).folder(run_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "failure.txt").write_text("".join(traceback.format_exception(err)))
            context.progress.note(f"cell {label} seed {seed} FAILED: {why}")
            continue
        context.progress.finished(label, seed)
    return failures
