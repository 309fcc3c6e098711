"""Sigmoid DPO on the best-vs-worst pair of each question's samples.

The config below is the whole method: the training loop (harness/train.py) reads it; an
ablation is an override of one of its fields in the experiment file."""

from __future__ import annotations

from methods.config import PairConfig, PairLoss, PairSelection


class DPOConfig(PairConfig):
    pairs: PairSelection = "best_worst"
    loss: PairLoss = "dpo"


FAMILY = "pairs"
CONFIG = DPOConfig
