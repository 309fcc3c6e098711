"""ScoreFlow's Score-DPO: pairs with different scores resampled with probability proportional to (s_w -
s_l)^3, loss -log sigmoid(beta [s_w (logp_w - ref_w) - (1 - s_l)(logp_l - ref_l)]).

The config below is the whole method: the training loop (harness/train.py) reads it; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from typing import Literal

from methods.config import PairConfig


class ScoreDPOConfig(PairConfig):
    pairs: Literal["best_worst", "scoreflow"] = "scoreflow"
    pairs_per_question: int = 8
    loss: Literal["dpo", "score_dpo"] = "score_dpo"


FAMILY = "pairs"
CONFIG = ScoreDPOConfig
