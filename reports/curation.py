"""Group curation rebuilt from the stored rollouts: the score std of every group before the variance
filter, and of the groups the filter and sharpening keep (open question 2, and the histograms).

The groups are rebuilt with the training code's own functions (methods.units.curate_groups) from
the scores in the rollout store, so the report shows exactly what the trainer saw. One caveat: when
C(m, n) exceeds max_groups the groups are a seeded draw per question; the seed depends on the
question's position in the batch trained together, which is the whole iteration for the offline
schedule (reproduced exactly) and a slice of it for the online one (then the draw differs, not
its distribution).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from methods.config import GRPOConfig
from methods.units import curate_groups, question_seed

STAGES = ("built", "kept")
"""built: every group drawn from the m samples; kept: after the variance filter and sharpening."""


def trainable(rollouts: pd.DataFrame) -> pd.DataFrame:
    """The rollouts that enter groups: scored, not infra errors, with a completion."""
    scored = pd.to_numeric(rollouts["score"], errors="coerce")
    return rollouts[(rollouts["status"] != "infra_error") & scored.notna() & (rollouts["tokens"] > 0)]


def group_std_frame(rollouts: pd.DataFrame, configs: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (method, seed, iteration, query_id, stage, group): the group's population score
    std. ``configs``: method label -> its method config; only GRPO-family methods have groups."""
    rows: list[dict[str, Any]] = []
    usable = trainable(rollouts)
    for (method, seed, iteration), part in usable.groupby(["method", "seed", "iteration"], sort=True):
        config = configs.get(str(method))
        if not isinstance(config, GRPOConfig):
            continue
        for index, (query_id, question) in enumerate(part.groupby("query_id", sort=True)):
            ordered = question.sort_values("sample_idx")
            if len(ordered) < 2:
                continue
            scores = torch.tensor(pd.to_numeric(ordered["score"]).to_numpy(), dtype=torch.float32)
            built, kept = curate_groups(scores, config, question_seed(int(seed), int(iteration), index))
            for stage, groups in zip(STAGES, (built, kept), strict=True):
                stds = scores[groups].std(dim=-1, unbiased=False).tolist() if groups.numel() else []
                rows += [
                    {
                        "method": method,
                        "seed": int(seed),
                        "iteration": int(iteration),
                        "query_id": query_id,
                        "stage": stage,
                        "std": std,
                    }
                    for std in stds
                ]
    return pd.DataFrame(rows, columns=["method", "seed", "iteration", "query_id", "stage", "std"])


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
