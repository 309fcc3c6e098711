"""Run every bench script side by side on this machine and write bench/RESULTS.md: one row per
figure (the script's last line, `name: ratio=... (...)`), the machine it ran on, and the date.

    SPOGW_CACHE=... python bench/run_all.py      (or bench/run_all)
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
SCRIPTS = (
    "group_dedup.py",
    "update_vs_trl.py",
    "executor_throughput.py",
    "collection_throughput.py",
    "collection_pipeline.py",
    "sampling_throughput.py",
    "machine_limit.py",
    "update_memory.py",
    "calibration.py",
    "quickstart_time.py",
    "cluster.py",
)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def main() -> int:
    rows = []
    for script in SCRIPTS:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(BENCH / script)], capture_output=True, text=True, cwd=BENCH.parent)
        elapsed = time.perf_counter() - start
        figures = [line for line in result.stdout.splitlines() if ": ratio=" in line]
        figure = figures[-1] if result.returncode == 0 and figures else f"FAILED (exit {result.returncode})"
        print(f"{script}: {figure} [{elapsed:.0f} s]", flush=True)
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
        rows.append((script, figure, elapsed))
    lines = [
        "# Bench results",
        "",
        f"Latest `bench/run_all` on {machine()}, {datetime.date.today().isoformat()}.",
        "",
        "| script | figure | seconds |",
        "|---|---|---|",
        *(f"| `{script}` | `{figure}` | {elapsed:.0f} |" for script, figure, elapsed in rows),
        "",
        "Each figure is the last line its script prints; run a script alone for its details.",
        "",
    ]
    (BENCH / "RESULTS.md").write_text("\n".join(lines))
    return 0 if all(not figure.startswith("FAILED") for _, figure, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
