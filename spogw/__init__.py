"""The installed import names of the SPOGW evaluation-and-ablation harness.

The code lives in the repository's top-level folders harness/, methods/ and reports/; it is imported
as ``spogw.harness``, ``spogw.methods`` and ``spogw.reports`` (this package's entries are links to
those folders), so a notebook or script whose working directory has its own ``reports/`` or
``methods/`` folder still gets these modules, and its own folders stay importable under their names.

Notebook entry points: ``spogw.run(path, **overrides)`` (= ``spogw.harness.run``) runs or resumes an
experiment and returns its run folder; ``spogw.load(run_dir)`` (= ``spogw.reports.load``) returns the
tidy per-item frame.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load", "run"]


def __getattr__(name: str) -> Any:
    # lazy: `import spogw` stays instant (the CLI's --help imports nothing heavy)
    if name == "run":
        from spogw.harness import run

        return run
    if name == "load":
        from spogw.reports import load

        return load
    raise AttributeError(f"module 'spogw' has no attribute {name!r}")
