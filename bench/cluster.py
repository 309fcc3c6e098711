"""Cells on Ray against one process: the quickstart's wall time with one local worker (the
one-process run) and with 2 Ray workers on this machine, whether their tables and reports agree,
and the fixed cost the Ray path adds to each cell.

    SPOGW_CACHE=... python bench/cluster.py [--skip-quickstart]

1. `spogw run experiments/quickstart.yaml` in one process, then with `--ray --ray-workers 2`, each
   in a fresh folder (the tiny generator built beforehand, not counted). On 2 cores the ratio is
   modest: the cells share the cores with the sandbox workers and the simulator.
2. Per-cell overhead: an experiment of 8 static cells of 1 item each (almost no work in a cell),
   in one process and on Ray with 1 worker; (Ray wall - one-process wall) / 8 is what a cell pays
   for being a task (scheduling, the experiment rebuilt in the worker, its MLflow run, the merge),
   after the Ray instance has started (its start is printed apart).

Last line: `cluster_quickstart_2_workers_vs_1: ratio=<one-process wall / Ray wall> (...)`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

OVERHEAD_CELLS = 8


def _spogw(*args: str) -> float:
    """Wall seconds of `spogw run ...` (raises with its output when it fails)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "spogw.harness.cli", "run", *args, "--quiet"], cwd=REPO,
                            capture_output=True, text=True, env=env)  # fmt: skip
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"spogw run {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return wall


def _ray_start_s() -> float:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False)
    ray.shutdown()
    return time.perf_counter() - start


def quickstart(folder: Path) -> tuple[float, float, bool, bool]:
    from chaos import run_tables
    from test_cluster import apart_from_timings

    one = _spogw("experiments/quickstart.yaml", "--run-dir", str(folder / "one"))
    print(f"quickstart, one process: {one:.0f} s", flush=True)
    two = _spogw("experiments/quickstart.yaml", "--run-dir", str(folder / "ray"), "--ray", "--ray-workers", "2")
    print(f"quickstart, 2 Ray workers: {two:.0f} s", flush=True)
    tables = run_tables(folder / "one") == run_tables(folder / "ray")
    reports = [apart_from_timings((folder / name / "report.md").read_text()) for name in ("one", "ray")]
    print(f"tables equal: {tables}; report.md equal apart from timings: {reports[0] == reports[1]}")
    return one, two, tables, reports[0] == reports[1]


def overhead(folder: Path) -> tuple[float, float]:
    methods = ", ".join(f"{{name: static, label: cot{k}, overrides: {{workflow: cot}}}}" for k in range(OVERHEAD_CELLS))
    experiment = folder / "cells.yaml"
    experiment.write_text(
        "version: 1\nname: cells\nbenchmarks: [{name: gsm_synth, size: 20, train_limit: 1, test_limit: 1}]\n"
        "generator: {name: tiny, tiny_recipe: test}\nexecutor: {name: sim, profile: medium}\n"
        f"methods: [{methods}]\nseeds: [0]\niterations: 1\nevaluation: {{repeats: 1}}\n"
        "stats: {baseline: cot0, bootstrap_samples: 200}\n"
    )
    one = _spogw(str(experiment), "--run-dir", str(folder / "cells-one"))
    ray = _spogw(str(experiment), "--run-dir", str(folder / "cells-ray"), "--ray", "--ray-workers", "1")
    return one, ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-quickstart", action="store_true", help="only the per-cell overhead")
    args = parser.parse_args()
    from spogw.harness.config import GeneratorConfig
    from spogw.harness.policy.model import load_generator

    load_generator(GeneratorConfig(), device="cpu", progress=False)  # built beforehand, not counted
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        start_s = _ray_start_s()
        one, ray = overhead(folder)
        per_cell = (ray - one - start_s) / OVERHEAD_CELLS
        print(f"per-cell overhead: {OVERHEAD_CELLS} near-empty cells {one:.1f} s in one process, {ray:.1f} s on Ray "
              f"(its start {start_s:.1f} s): {per_cell:.2f} s a cell")  # fmt: skip
        if args.skip_quickstart:
            return
        a, b, tables, reports = quickstart(folder)
    summary = f"a={a:.0f}s one process, b={b:.0f}s 2 Ray workers; tables equal {tables}, reports equal {reports}"
    print(f"cluster_quickstart_2_workers_vs_1: ratio={a / b:.2f} ({summary}; Ray start {start_s:.1f}s, "
          f"{per_cell:.2f}s per cell)")  # fmt: skip


if __name__ == "__main__":
    main()
