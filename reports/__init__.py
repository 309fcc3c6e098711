"""Statistics, tables and plots over a run folder's per-item scores.

`spogw.load(run_dir)` (= `spogw.reports.load`) returns the tidy per-item frame (reports/data.py) for your own analyses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load(run_dir: str | Path) -> Any:
    """Per-item scores of a run folder as a pandas DataFrame (see reports.data.load)."""
    from spogw.reports.data import load as load_frame

    return load_frame(run_dir)


__all__ = ["load"]
