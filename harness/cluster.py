"""`spogw run --ray [ADDRESS]`: an experiment's cells as Ray tasks, on one machine or a cluster.

The driver (this process) holds the run folder, checks the experiment and starts the parent MLflow
run as the one-process run does (harness/runner.py `open_experiment`); then every cell that has no
done marker becomes one Ray task running `run_cell`, the same function the one-process run calls.
A task asks for ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs (default: one when the cluster
has GPUs: the cell trains its generator there), so Ray runs as many cells at once as the cluster
holds. The run folder must be on storage every node sees (NFS, a shared volume): each cell writes
its own store shard there (harness/cells.py).

- A cell waits for the cells it copies iteration-0 rows from (its untrained twins earlier in the
  run's order, harness/plan.py), so every cell reads exactly what it reads in the one-process run:
  the tables are the same.
- A worker that dies (kill -9, out of memory, a lost node) has its cell retried up to
  ``max_retries`` times; the retry resumes from the cell's shard and checkpoints. An exception
  inside a cell (a bug, a dead endpoint) is not retried: it would fail again.
- Each finished cell is reported as it ends (progress bar, run.log); failed cells are reported
  together once the others are done (`CellsFailed`, exit 1), their tracebacks written to
  ``cells/<name>/failure.txt``.
- The driver keeps nothing that is not in the run folder: killed, the same command re-reads the
  done markers and schedules what is left.

Ray is the ``[cluster]`` extra, imported only here.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spogw.harness.config import ExperimentConfig, MethodSpec
from spogw.harness.errors import CellsFailed, InputError
from spogw.harness.plan import select_methods, select_seeds
from spogw.harness.run_folder import done_marker, run_folder_lock
from spogw.harness.runner import Finisher, finish_experiment, open_experiment, run_cell


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
    *after: object,
) -> dict[str, Any]:
    """One cell, in a Ray worker: the experiment rebuilt from its resolved fields, `run_cell` run.
    ``after``: the results of the cells it waits for (Ray passes them once they are done)."""
    import socket

    from spogw.harness.console import RunProgress
    from spogw.harness.plan import load_splits
    from spogw.harness.runner import ExperimentContext
    from spogw.harness.torch_threads import ENV
    from spogw.harness.tracking import Tracker

    del after  # an ordering constraint only
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
    (the others are done and kept), InputError when Ray is not installed or an option is wrong."""
    from spogw.harness.torch_threads import ENV

    ray = _import_ray()
    if options.address is not None and options.workers is not None:
        raise InputError(
            f"--ray-workers {options.workers}: it sets the CPUs of a local Ray instance; the cluster at "
            f"{options.address} has its own (start its nodes with `ray start --num-cpus`)"
        )
    if options.max_retries < 0:
        raise InputError(f"--cell-retries {options.max_retries}: give 0 or more")
    run_dir = Path(run_dir).resolve()
    todo = [(spec, seed) for spec in select_methods(config, methods) for seed in select_seeds(config, seeds)]
    with run_folder_lock(run_dir):
        context = open_experiment(config, run_dir, len(todo), force_new, progress)
        try:
            if options.address is None:
                ray.init(num_cpus=options.workers, include_dashboard=False, log_to_driver=True)
            else:
                ray.init(address=options.address, log_to_driver=True)
            gpus = options.gpus_per_cell
            if gpus is None:
                gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
            # torch threads: the driver's --threads, else the cell's own CPUs (not the node's cores)
            threads = int(os.environ.get(ENV) or max(1, int(options.cpus_per_cell)))
            task = ray.remote(cell_task).options(
                num_cpus=options.cpus_per_cell, num_gpus=gpus, max_retries=options.max_retries, retry_exceptions=False
            )
            config_json = config.model_dump(mode="json")
            refs: dict[tuple[str, int], Any] = {}
            waits = _waits_for(todo, context)
            for spec, seed in todo:
                cell = (spec.display_label, seed)
                if done_marker(run_dir, *cell).exists():
                    context.progress.skipped()
                    continue
                after = [refs[other] for other in waits[cell] if other in refs]
                refs[cell] = task.remote(
                    config_json, str(run_dir), *cell, context.parent_run, os.getcwd(), threads, *after
                )
            failures = _wait_for_cells(ray, refs, context, run_dir)
            if failures:
                raise CellsFailed(
                    f"{len(failures)} of {len(refs)} cells failed (the others are done and kept):\n  "
                    + "\n  ".join(failures)
                    + "\nTracebacks: cells/<cell>/failure.txt. Run the same command again to resume them."
                )
            finish_experiment(context, finish)
        except BaseException:
            context.tracker.finish(context.parent_run, "KILLED")
            raise
        finally:
            context.progress.close()
            if ray.is_initialized():
                ray.shutdown()
    return run_dir


def _wait_for_cells(ray: Any, refs: dict[tuple[str, int], Any], context: Any, run_dir: Path) -> list[str]:
    """Report each cell as it ends; returns 'cell: why' for each failed one."""
    from spogw.harness.cells import Cell, merge

    cells = {ref: cell for cell, ref in refs.items()}
    pending = list(cells)
    failures = []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        label, seed = cells[ready[0]]
        merge(run_dir, [Cell(label, seed)])  # done or failed: its rows join the union (only here: one writer)
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
