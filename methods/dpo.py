"""Sigmoid DPO on the best-vs-worst pair of each question's samples.

The config below is the whole method: the training loop (harness/train.py) reads it; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from typing import Literal

from methods.config import PairConfig


class DPOConfig(PairConfig):
    pairs: Literal["best_worst", "scoreflow"] = "best_worst"
    loss: Literal["dpo", "score_dpo"] = "dpo"


FAMILY = "pairs"
CONFIG = DPOConfig
