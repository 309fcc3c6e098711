"""The main job's cost: wall time and peak resident memory of `spogw run experiments/quickstart.yaml`
(every method x 3 seeds x 3 iterations, SIMULATED executor) in a fresh run folder, with the tiny
generator already built (it is built once per cache; its build is not counted).

    SPOGW_CACHE=... python bench/quickstart_time.py

Last line: `quickstart: ratio=<wall time / the README's 10-minute budget> (wall=..., peak_rss=...)`.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 10 * 60


def main() -> None:
    from spogw.harness.config import GeneratorConfig
    from spogw.harness.policy.model import load_generator

    load_generator(GeneratorConfig(), device="cpu", progress=False)  # builds the tiny generator if missing
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "spogw.harness.cli",
                "run",
                "experiments/quickstart.yaml",
                "--run-dir",
                f"{folder}/run",
                "--quiet",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"spogw run failed:\n{result.stderr[-3000:]}")
    # ru_maxrss of the children: the largest resident set of any finished descendant (KiB on Linux)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"quickstart: {wall / 60:.1f} min wall, peak RSS {peak_mib:,.0f} MiB (largest process)")
    print(f"quickstart: ratio={wall / BUDGET_S:.2f} (wall={wall:.0f}s, peak_rss={peak_mib:.0f}MiB, budget {BUDGET_S}s)")


if __name__ == "__main__":
    main()
