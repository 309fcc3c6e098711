"""Group curation as the trainer did it: the score std of every group it built from a question's
samples, and of the groups the variance filter and sharpening kept (open question 2, and the
histograms). Read from the run's ``groups`` table, which the trainer writes with each iteration
(harness/train.py group_rows): the report shows what was trained, for any schedule, never a
re-computation of it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STAGES = ("built", "kept")
"""built: every group drawn from the m samples; kept: after the variance filter and sharpening."""
STD_COLUMNS = ["method", "seed", "iteration", "query_id", "stage", "std"]


def group_std_frame(groups: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed, iteration, query_id, stage, group_index): the group's population score
    std, from the store's groups table (empty for pairwise and static methods, which build none)."""
    if groups.empty:
        return pd.DataFrame(columns=STD_COLUMNS)
    frame = groups[STD_COLUMNS].copy()
    frame["seed"] = frame["seed"].astype(int)
    frame["iteration"] = frame["iteration"].astype(int)
    return frame.sort_values(["method", "seed", "iteration", "query_id", "stage"], kind="stable").reset_index(drop=True)


def curation_table(stds: pd.DataFrame) -> pd.DataFrame:
    """Per method: groups built and kept per question and iteration, the fraction the curation
    removed, the mean group std before (all built groups) and after, and the fraction of built
    groups with zero variance (they carry no advantage at all)."""
    rows = []
    for method, part in stds.groupby("method", sort=True):
        built = part[part["stage"] == "built"]["std"].to_numpy()
        kept = part[part["stage"] == "kept"]["std"].to_numpy()
        questions = part.groupby(["seed", "iteration", "query_id"]).ngroups
        rows.append(
            {
                "method": method,
                "questions": questions,
                "groups_built": len(built) / max(questions, 1),
                "groups_kept": len(kept) / max(questions, 1),
                "removed_fraction": 1.0 - len(kept) / len(built) if len(built) else float("nan"),
                "zero_std_fraction": float(np.mean(built == 0)) if len(built) else float("nan"),
                "std_built": float(built.mean()) if len(built) else float("nan"),
                "std_kept": float(kept.mean()) if len(kept) else float("nan"),
            }
        )
    return pd.DataFrame(rows)
