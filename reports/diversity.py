"""Diversity of the workflows a policy samples (open question 3), from the collection rollouts:
per question, the number of distinct operator structures among its m samples and the entropy (bits)
of their distribution, and the policy's per-token entropy estimated by the sampled tokens' mean
-log p (the sampler's log-probs: at the sampling temperature, with the grammar mask when decoding
is constrained; forced tokens count as zero entropy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spogw.reports.stats import mean_ci

METRICS = {
    "distinct": "distinct structures per question",
    "structure_entropy": "structure entropy per question (bits)",
    "token_entropy": "token entropy (nats per token)",
}


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a distribution given by counts (zeros ignored)."""
    counts = np.asarray(counts, dtype=float)
    counts = counts[counts > 0]
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def diversity_frame(rollouts: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed, iteration, query_id): samples, distinct valid structures, the
    structure entropy over the valid samples, and the token entropy estimate sum(nll) / sum(tokens)."""
    rows: list[dict[str, Any]] = []
    for key, part in rollouts.groupby(["method", "seed", "iteration", "query_id"], sort=True):
        structures = part["structure"].astype(str)
        valid = structures[structures != ""]
        tokens = float(part["tokens"].sum())
        rows.append(
            {
                **dict(zip(["method", "seed", "iteration", "query_id"], key, strict=True)),
                "samples": len(part),
                "distinct": int(valid.nunique()),
                "structure_entropy": entropy_bits(valid.value_counts().to_numpy()),
                "token_entropy": float(part["nll"].sum()) / tokens if tokens else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=["method", "seed", "iteration", "query_id", "samples", *METRICS])


def diversity_table(frame: pd.DataFrame, resamples: int = 2_000) -> pd.DataFrame:
    """Per method x iteration: each metric's mean over questions (averaged over seeds) with a 95%
    BCa CI over questions."""
    rows = []
    for (method, iteration), part in frame.groupby(["method", "iteration"], sort=True):
        per_question = part.groupby("query_id")[list(METRICS)].mean()
        row: dict[str, Any] = {"method": method, "iteration": int(iteration), "questions": len(per_question)}
        for metric in METRICS:
            values = per_question[metric].dropna().to_numpy()
            if values.size == 0:
                continue
            ci = mean_ci(values, "questions", resamples=resamples)
            row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = ci.mean, ci.low, ci.high
        rows.append(row)
    return pd.DataFrame(rows)
